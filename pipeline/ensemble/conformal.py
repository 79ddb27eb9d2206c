"""Split-conformal prediction sets, with per-slice thresholds, for abstention.

With calibration items exchangeable with the test items, score s = 1 - p(true label) and
q = the ceil((n + 1)(1 - alpha))-th smallest calibration score, the set {y : 1 - p(y) <= q} holds the true label
with probability at least 1 - alpha (Vovk et al. 2005; Angelopoulos & Bates 2021, "A Gentle Introduction to
Conformal Prediction and Distribution-Free Uncertainty Quantification", section 1, Theorem 1). When
ceil((n + 1)(1 - alpha)) > n no finite threshold has the guarantee, so q is infinite: every label is in the set
and the item is abstained on.

Per slice: each slice gets its own q from its own calibration items, and an item uses the largest q among the
global one and those of its slices. A larger threshold only grows the set, so coverage >= 1 - alpha then holds
on every slice separately as well as overall, even though slices overlap. A slice with fewer than
``min_slice_items`` calibration items gets no threshold of its own (the global one applies: marginal coverage
only for that slice; say so in reports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ConformalThresholds", "calibrate_conformal", "conformal_quantile", "prediction_sets"]


def conformal_quantile(scores: Sequence[float] | np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score; +inf when that rank exceeds n (including n = 0)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}; e.g. 0.05 for 95% coverage")
    values = np.sort(np.asarray(scores, dtype=float))
    rank = math.ceil((values.size + 1) * (1 - alpha))
    return float(values[rank - 1]) if rank <= values.size else math.inf


@dataclass(frozen=True)
class ConformalThresholds:
    """Calibrated thresholds on the nonconformity score 1 - p(label)."""

    alpha: float
    global_threshold: float
    slice_thresholds: dict[str, float]
    """Only slices with at least ``min_slice_items`` calibration items."""
    n_calibration: int
    slice_counts: dict[str, int]
    """Calibration items per slice (all configured slices, including those without their own threshold)."""

    def threshold_for(self, slices: Sequence[str]) -> float:
        """The threshold an item in ``slices`` uses: the largest of the global and its slices' thresholds."""
        own = [self.slice_thresholds[name] for name in slices if name in self.slice_thresholds]
        return max([self.global_threshold, *own])


def calibrate_conformal(
    proba: np.ndarray,
    y_true_index: Sequence[int] | np.ndarray,
    alpha: float,
    item_slices: Sequence[Sequence[str]] | None = None,
    slice_names: Sequence[str] = (),
    min_slice_items: int = 30,
) -> ConformalThresholds:
    """Thresholds from calibration probabilities ``proba`` (n, k) and true label indices."""
    truth = np.asarray(y_true_index, dtype=np.int64)
    if proba.shape[0] != truth.size:
        raise ValueError(f"proba has {proba.shape[0]} rows but there are {truth.size} labels; pass one per item")
    scores = 1.0 - proba[np.arange(truth.size), truth] if truth.size else np.zeros(0)
    per_slice: dict[str, float] = {}
    counts: dict[str, int] = {}
    memberships = item_slices or [() for _ in range(truth.size)]
    for name in slice_names:
        mask = np.array([name in m for m in memberships], dtype=bool)
        counts[name] = int(mask.sum())
        if counts[name] >= min_slice_items:
            per_slice[name] = conformal_quantile(scores[mask], alpha)
    return ConformalThresholds(alpha, conformal_quantile(scores, alpha), per_slice, int(truth.size), counts)


def prediction_sets(
    proba: np.ndarray, thresholds: ConformalThresholds, item_slices: Sequence[Sequence[str]] | None = None
) -> list[tuple[int, ...]]:
    """Per item, the label indices whose score 1 - p is within the item's threshold."""
    memberships = item_slices or [() for _ in range(proba.shape[0])]
    out: list[tuple[int, ...]] = []
    for row, slices in zip(proba, memberships, strict=True):
        q = thresholds.threshold_for(slices)
        out.append(tuple(int(j) for j in np.flatnonzero(1.0 - row <= q + 1e-12)))
    return out
