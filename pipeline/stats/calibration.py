"""Calibration of stated confidence: expected calibration error (ECE) and Brier score.

A model states a confidence with each answer, read as the probability that the answer is right.

- ECE (Naeini, Cooper & Hauskrecht 2015, AAAI; Guo et al. 2017, ICML, eq. 3): answers are put into
  ``n_bins`` equal-width confidence bins ``((k-1)/M, k/M]`` (a confidence of exactly 0 goes into the first);
  ``ECE = sum_bins (n_bin / n) * |accuracy_bin - mean confidence_bin|``.
- Brier score (Brier 1950, Monthly Weather Review 78:1-3): ``mean((confidence - correct)^2)``.

scikit-learn has ``brier_score_loss`` but no ECE, and one formula for both reads simpler than two libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration", "calibration"]


@dataclass(frozen=True)
class Calibration:
    """Calibration of ``n`` answers."""

    ece: float
    brier: float
    n: int
    n_bins: int


def calibration(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> Calibration:
    """ECE and Brier score of stated confidences against correctness (1 = right)."""
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-D of one length, got {conf.shape} and {hit.shape}")
    if conf.size == 0:
        raise ValueError("calibration of zero answers is undefined; pass at least one answer with a confidence")
    if np.any((conf < 0) | (conf > 1)) or not np.all(np.isfinite(conf)):
        raise ValueError(f"confidences must lie in [0, 1], got values from {conf.min()} to {conf.max()}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    # Right-closed bins: ceil(c * M) - 1, with c = 0 put in the first bin. The small tolerance keeps a
    # confidence on a bin edge (0.3 * 10 = 3.0000000000000004 in floating point) in the bin it closes.
    bins = np.clip(np.ceil(conf * n_bins - 1e-9).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for k in range(n_bins):
        mask = bins == k
        if mask.any():
            ece += mask.sum() / conf.size * abs(float(hit[mask].mean()) - float(conf[mask].mean()))
    brier = float(np.mean((conf - hit) ** 2))
    return Calibration(ece=float(ece), brier=brier, n=int(conf.size), n_bins=n_bins)
