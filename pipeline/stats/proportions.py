"""Confidence intervals for a single binomial proportion (e.g. an accuracy).

Two methods, both from Newcombe (1998), "Two-sided confidence intervals for the single
proportion: comparison of seven methods", Stat Med 17:857-872:

- ``wilson_interval``: the score interval (Newcombe's method 3). The default for reports: close to
  nominal coverage, never outside [0, 1], sensible at 0 or n successes.
- ``clopper_pearson_interval``: the "exact" interval (method 5). Guarantees at least nominal coverage,
  at the price of being wider; use it when a conservative bound is wanted.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from scipy.stats import beta, norm

__all__ = ["Interval", "clopper_pearson_interval", "wilson_interval"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    """The point estimate (for a proportion: successes / n)."""
    low: float
    """Lower confidence limit."""
    high: float
    """Upper confidence limit."""
    method: str
    """How the limits were computed, e.g. ``"wilson"``, ``"clopper-pearson"``, ``"bootstrap-bca"``."""
    confidence: float
    """Two-sided confidence level, e.g. 0.95."""


def _check_counts(successes: int, n: int) -> None:
    for name, value in (("successes", successes), ("n", n)):
        # bool is an int subclass; True/False as a count is almost certainly a bug upstream.
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer count, got {value!r} ({type(value).__name__}).")
    if n <= 0:
        raise ValueError(
            f"n must be a positive number of trials, got n={n}. A proportion of zero trials has no "
            "interval; skip this group or report it as 'no data'."
        )
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n]; got successes={successes} with n={n}.")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}.")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for ``successes`` out of ``n`` trials (Newcombe 1998, method 3).

    Raises ``ValueError`` when ``n == 0`` or the counts are inconsistent.
    """
    _check_counts(successes, n)
    _check_confidence(confidence)
    z = float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    p = successes / n
    z2 = z * z
    centre = (2 * n * p + z2) / (2 * (n + z2))
    half = z * math.sqrt(z2 + 4 * n * p * (1 - p)) / (2 * (n + z2))
    # At 0 or n successes the formula gives the bound exactly in real arithmetic; pin it so that
    # floating point rounding cannot report a lower limit of 1e-17 for 0/20.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(estimate=p, low=low, high=high, method="wilson", confidence=confidence)


def clopper_pearson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Clopper-Pearson "exact" interval (Newcombe 1998, method 5), via beta quantiles.

    Raises ``ValueError`` when ``n == 0`` or the counts are inconsistent.
    """
    _check_counts(successes, n)
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return Interval(estimate=successes / n, low=low, high=high, method="clopper-pearson", confidence=confidence)
