"""Nonparametric bootstrap confidence intervals (Efron & Tibshirani 1993, chapters 13-14).

- ``bootstrap_ci``: resample the rows of ``data`` with replacement, recompute ``statistic``, and take
  either the percentile interval or the bias-corrected and accelerated (BCa) interval.
- ``paired_bootstrap_ci``: the same for a statistic of two aligned samples (e.g. the accuracy of
  system A minus that of system B on the same items): item pairs are resampled together, so the
  correlation between the two systems is kept.

Resampling is driven by ``numpy.random.default_rng(seed)``: the same inputs and seed give the same
interval on every run.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from pipeline.stats.proportions import Interval

__all__ = ["BootstrapInterval", "bootstrap_ci", "paired_bootstrap_ci"]

Method = Literal["percentile", "bca"]
_METHODS = ("percentile", "bca")


@dataclass(frozen=True)
class BootstrapInterval(Interval):
    """An ``Interval`` with the bootstrap quantities behind it."""

    standard_error: float
    """Standard deviation of the bootstrap replications (Efron & Tibshirani 1993, chapter 6)."""
    n_resamples: int
    """Number of bootstrap resamples drawn."""
    bias_correction: float | None = None
    """BCa bias-correction ``z0`` (None for the percentile method)."""
    acceleration: float | None = None
    """BCa acceleration ``a`` from the jackknife (None for the percentile method)."""


def _scalar(statistic: Callable[[np.ndarray], Any], sample: np.ndarray) -> float:
    value = statistic(sample)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"statistic must return one number, got {value!r}. Reduce its output to a scalar "
            "(e.g. return np.mean(x), not x)."
        ) from None


def bootstrap_ci(
    data: ArrayLike,
    statistic: Callable[[np.ndarray], Any],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    method: Method = "percentile",
    seed: int = 0,
) -> BootstrapInterval:
    """Bootstrap confidence interval for ``statistic(data)``.

    ``data`` is resampled along its first axis: a 1-D array of observations, or a 2-D array whose rows
    are observations (pass ``np.column_stack([x, y])`` for a statistic of paired columns).
    ``statistic`` receives a resampled array of the same shape and returns a number.
    ``method="bca"`` also evaluates ``statistic`` once per left-out observation (jackknife), so it
    costs ``n`` extra calls.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}.")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2 (2000 or more is usual), got {n_resamples!r}.")
    arr = np.asarray(data)
    if arr.ndim == 0 or arr.shape[0] < 2:
        raise ValueError(
            f"data must hold at least 2 observations along its first axis, got shape {arr.shape}. "
            "A bootstrap of fewer observations has no spread."
        )
    n_resamples = int(n_resamples)
    n = arr.shape[0]
    estimate = _scalar(statistic, arr)
    rng = np.random.default_rng(seed)
    # One index draw per resample, not one (n_resamples, n) matrix: with 10^5 items that matrix
    # alone would take gigabytes.
    replicates = np.array([_scalar(statistic, arr[rng.integers(0, n, size=n)]) for _ in range(n_resamples)])
    bad = int(np.count_nonzero(~np.isfinite(replicates)))
    if bad:
        raise ValueError(
            f"statistic returned a non-finite value on {bad} of {n_resamples} resamples (e.g. a "
            "correlation of a constant resample). Use a statistic defined on every resample, or more data."
        )
    standard_error = float(np.std(replicates, ddof=1))
    tail = (1.0 - confidence) / 2.0

    if method == "percentile":
        low, high = np.quantile(replicates, [tail, 1.0 - tail])
        return BootstrapInterval(
            estimate=estimate,
            low=float(low),
            high=float(high),
            method="bootstrap-percentile",
            confidence=confidence,
            standard_error=standard_error,
            n_resamples=n_resamples,
        )

    # BCa as in Efron & Tibshirani (1993), chapter 14. Ties with the estimate count half: for
    # discrete statistics such as accuracies many replicates equal the estimate exactly, and counting
    # them all as "above" would bias z0 (this matches scipy.stats.bootstrap).
    below = np.count_nonzero(replicates < estimate) + 0.5 * np.count_nonzero(replicates == estimate)
    fraction = below / n_resamples
    if fraction <= 0.0 or fraction >= 1.0:
        raise ValueError(
            f"all {n_resamples} bootstrap replicates lie on one side of the estimate {estimate!r}, so "
            "the BCa bias correction is infinite. Use method='percentile' or check the statistic."
        )
    z0 = float(norm.ppf(fraction))
    jackknife = np.array([_scalar(statistic, np.delete(arr, i, axis=0)) for i in range(n)])
    d = jackknife.mean() - jackknife
    denominator = 6.0 * float(np.sum(d**2)) ** 1.5
    # All jackknife values equal (e.g. a constant sample): no skewness to correct for.
    acceleration = float(np.sum(d**3)) / denominator if denominator > 0 else 0.0
    low, high = np.quantile(replicates, _bca_levels(z0, acceleration, confidence))
    return BootstrapInterval(
        estimate=estimate,
        low=float(low),
        high=float(high),
        method="bootstrap-bca",
        confidence=confidence,
        standard_error=standard_error,
        n_resamples=n_resamples,
        bias_correction=z0,
        acceleration=acceleration,
    )


def _bca_levels(z0: float, acceleration: float, confidence: float) -> np.ndarray:
    """Quantile levels (alpha1, alpha2) of the replicates that bound the BCa interval (E&T 1993, ch. 14)."""
    tail = (1.0 - confidence) / 2.0
    z = norm.ppf([tail, 1.0 - tail])
    return np.asarray(norm.cdf(z0 + (z0 + z) / (1.0 - acceleration * (z0 + z))))


def _mean_difference(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(x) - np.mean(y))


def paired_bootstrap_ci(
    x: ArrayLike,
    y: ArrayLike,
    statistic: Callable[[np.ndarray, np.ndarray], Any] = _mean_difference,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    method: Method = "percentile",
    seed: int = 0,
) -> BootstrapInterval:
    """Bootstrap interval for ``statistic(x, y)`` of two aligned samples, resampling pairs.

    The default statistic is ``mean(x) - mean(y)``: with ``x``, ``y`` the per-item correctness (0/1)
    of systems A and B on the same items, that is the accuracy difference A - B.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.ndim != 1 or ya.ndim != 1:
        raise ValueError(f"x and y must be 1-D, got shapes {xa.shape} and {ya.shape}.")
    if xa.shape != ya.shape:
        raise ValueError(
            f"x has {xa.shape[0]} items but y has {ya.shape[0]}; a paired bootstrap needs one y per x. "
            "Align both samples by item id first."
        )

    def on_pairs(pairs: np.ndarray) -> Any:
        return statistic(pairs[:, 0], pairs[:, 1])

    return bootstrap_ci(
        np.column_stack([xa, ya]),
        on_pairs,
        n_resamples=n_resamples,
        confidence=confidence,
        method=method,
        seed=seed,
    )
