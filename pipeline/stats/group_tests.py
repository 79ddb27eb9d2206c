"""Tests of a difference between groups, each a thin typed wrapper that also handles the degenerate cases.

- ``kruskal_wallis``: scipy's Kruskal-Wallis H test (tie-corrected, chi-square approximation), as R's
  ``kruskal.test``. All values identical gives H = 0, p = 1 (scipy raises there).
- ``chi_square_independence``: scipy's ``chi2_contingency`` (no continuity correction) on a groups x categories
  table, empty categories dropped. Where an expected count is below 5 the asymptotic p-value is not trusted
  (Cochran 1954): the result carries a warning and a Monte-Carlo permutation p-value with fixed margins
  (Hope 1968, J. R. Statist. Soc. B 30:582-598; R's ``chisq.test(simulate.p.value = TRUE)`` does the same),
  written here because scipy's ``chi2_contingency`` has no simulated p-value.
- ``wilcoxon_signed_rank``: scipy's ``wilcoxon`` on paired differences (zeros dropped, Wilcoxon's method);
  no non-zero difference gives p = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import chi2_contingency, kruskal, rankdata, wilcoxon

__all__ = [
    "MIN_EXPECTED_COUNT",
    "GroupTest",
    "chi_square_independence",
    "kruskal_wallis",
    "wilcoxon_signed_rank",
]

MIN_EXPECTED_COUNT = 5.0
"""Below this expected count in any cell the chi-square approximation is replaced by a Monte-Carlo p-value."""


@dataclass(frozen=True)
class GroupTest:
    """The outcome of one test."""

    statistic: float
    p_value: float
    df: int | None
    """Degrees of freedom of the reference chi-square distribution, where there is one."""
    method: str
    """e.g. ``"asymptotic"``, ``"monte-carlo"``, ``"exact"``, ``"degenerate"``."""
    note: str = ""
    """A warning to show next to the result ('' when none)."""


def kruskal_wallis(samples: Sequence[Sequence[float]]) -> GroupTest:
    """Kruskal-Wallis H test across two or more independent samples."""
    if len(samples) < 2 or any(len(s) == 0 for s in samples):
        raise ValueError(f"Kruskal-Wallis needs two or more non-empty samples, got sizes {[len(s) for s in samples]}")
    pooled = np.concatenate([np.asarray(s, dtype=float) for s in samples])
    if np.all(pooled == pooled[0]):
        return GroupTest(0.0, 1.0, len(samples) - 1, "degenerate", "all values identical: nothing to rank")
    result = kruskal(*[np.asarray(s, dtype=float) for s in samples])
    return GroupTest(float(result.statistic), float(result.pvalue), len(samples) - 1, "asymptotic")


def _chi2_statistic(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.asarray(((observed - expected) ** 2 / expected).sum(axis=(-2, -1)))


def chi_square_independence(
    table: Sequence[Sequence[int]], monte_carlo_resamples: int = 5000, seed: int = 0
) -> GroupTest:
    """Pearson chi-square test of independence of rows and columns; Monte-Carlo p where expected counts < 5."""
    observed = np.asarray(table, dtype=float)
    if observed.ndim != 2 or observed.shape[0] < 2:
        raise ValueError(f"the table needs two or more rows (groups), got shape {observed.shape}")
    observed = observed[:, observed.sum(axis=0) > 0]
    if observed.shape[1] < 2:
        return GroupTest(0.0, 1.0, 0, "degenerate", "every answer falls in one category: nothing to compare")
    if np.any(observed.sum(axis=1) == 0):
        raise ValueError("a row of the table is empty; drop groups without observations first")
    result = chi2_contingency(observed, correction=False)
    statistic, p_value, df = float(result.statistic), float(result.pvalue), int(result.dof)
    expected = np.asarray(result.expected_freq)
    if expected.min() >= MIN_EXPECTED_COUNT:
        return GroupTest(statistic, p_value, df, "asymptotic")
    p_mc = _monte_carlo_p(observed, expected, statistic, monte_carlo_resamples, seed)
    n_small = int(np.count_nonzero(expected < MIN_EXPECTED_COUNT))
    note = (
        f"{n_small} of {expected.size} expected counts below {MIN_EXPECTED_COUNT:g} (smallest "
        f"{expected.min():.2f}): Monte-Carlo p from {monte_carlo_resamples} permutations, asymptotic p {p_value:.4g}"
    )
    return GroupTest(statistic, p_mc, df, "monte-carlo", note)


def _monte_carlo_p(observed: np.ndarray, expected: np.ndarray, statistic: float, resamples: int, seed: int) -> float:
    """Permutation p-value with both margins fixed: shuffle the column label of every observation."""
    n_rows, n_cols = observed.shape
    counts = observed.astype(int)
    rows = np.repeat(np.arange(n_rows), counts.sum(axis=1))
    cols = np.concatenate([np.repeat(np.arange(n_cols), counts[r]) for r in range(n_rows)])
    rng = np.random.default_rng(seed)
    exceed = 0
    # Chunks keep the (chunk, n) index matrix small for large tables.
    chunk = max(1, min(resamples, 2_000_000 // max(1, cols.size)))
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        shuffled = rng.permuted(np.broadcast_to(cols, (size, cols.size)), axis=1)
        cells = rows[None, :] * n_cols + shuffled + (np.arange(size) * n_rows * n_cols)[:, None]
        tables = np.bincount(cells.ravel(), minlength=size * n_rows * n_cols).reshape(size, n_rows, n_cols)
        # A relative tolerance so that a replicate equal to the observed table counts as "at least as extreme".
        exceed += int(np.count_nonzero(_chi2_statistic(tables, expected) >= statistic * (1 - 1e-9)))
        done += size
    return (1 + exceed) / (1 + resamples)


Alternative = Literal["two-sided", "greater", "less"]


def wilcoxon_signed_rank(x: ArrayLike, y: ArrayLike, alternative: Alternative = "two-sided") -> GroupTest:
    """Wilcoxon signed-rank test of paired samples (x - y); statistic V = sum of positive ranks, as in R."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D and paired, got shapes {xa.shape} and {ya.shape}")
    diff = xa - ya
    if not np.any(diff != 0):
        return GroupTest(0.0, 1.0, None, "degenerate", "no pair differs: nothing to rank")
    # R reports V, the sum of (average) ranks of positive differences; scipy's statistic for a two-sided
    # test is min(W+, W-), so V is computed here and the p-value taken from scipy.
    nonzero = diff[diff != 0]
    ranks = rankdata(np.abs(nonzero))
    v = float(ranks[nonzero > 0].sum())
    result = wilcoxon(diff, zero_method="wilcox", alternative=alternative)
    # scipy picks the exact null distribution for small samples without ties, else the normal approximation.
    return GroupTest(v, float(result.pvalue), None, "scipy-auto")
