"""Cohen's d between two independent groups, with the Hedges & Olkin large-sample confidence interval.

- ``d = (mean_a - mean_b) / s_pooled`` with ``s_pooled`` the pooled standard deviation (n - 1 denominators),
  Cohen (1988), Statistical Power Analysis for the Behavioral Sciences, 2nd ed., section 2.2.
- ``Var(d) = (n_a + n_b) / (n_a n_b) + d^2 / (2 (n_a + n_b))``, Hedges & Olkin (1985), Statistical Methods for
  Meta-Analysis, chapter 5; the interval is ``d +- z * sqrt(Var(d))`` (as in Borenstein et al. 2009,
  Introduction to Meta-Analysis, section 4.2).
- Hedges' ``g = J d`` with ``J = 1 - 3 / (4 (n_a + n_b - 2) - 1)`` (Hedges & Olkin 1985, chapter 5).

statsmodels and scipy have no two-sample Cohen's d with this interval, hence this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

__all__ = ["CohensD", "cohens_d", "cohens_d_from_stats"]


@dataclass(frozen=True)
class CohensD:
    """Standardized mean difference a - b with its confidence interval."""

    d: float
    """Cohen's d; NaN when the pooled standard deviation is 0 (both groups constant)."""
    hedges_g: float
    """Small-sample corrected d."""
    standard_error: float
    """sqrt of the Hedges & Olkin large-sample variance of d."""
    low: float
    high: float
    confidence: float
    n_a: int
    n_b: int


def cohens_d_from_stats(
    mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int, confidence: float = 0.95
) -> CohensD:
    """Cohen's d of group a minus group b from summary statistics (sample SDs, n - 1 denominators)."""
    if n_a < 2 or n_b < 2:
        raise ValueError(f"Cohen's d needs at least 2 observations per group, got n_a={n_a}, n_b={n_b}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    pooled = math.sqrt(((n_a - 1) * sd_a**2 + (n_b - 1) * sd_b**2) / (n_a + n_b - 2))
    d = (mean_a - mean_b) / pooled if pooled > 0 else float("nan")
    variance = (n_a + n_b) / (n_a * n_b) + d**2 / (2 * (n_a + n_b))
    se = math.sqrt(variance)
    z = float(norm.ppf(0.5 + confidence / 2))
    correction = 1 - 3 / (4 * (n_a + n_b - 2) - 1)
    return CohensD(d, correction * d, se, d - z * se, d + z * se, confidence, n_a, n_b)


def cohens_d(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> CohensD:
    """Cohen's d of sample ``a`` minus sample ``b`` (independent groups)."""
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"Cohen's d needs at least 2 observations per group, got {xa.size} and {xb.size}")
    return cohens_d_from_stats(
        float(xa.mean()),
        float(xa.std(ddof=1)),
        int(xa.size),
        float(xb.mean()),
        float(xb.std(ddof=1)),
        int(xb.size),
        confidence,
    )
