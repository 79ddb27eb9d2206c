"""McNemar's test: do two classifiers scored on the same items differ in accuracy?

Only the discordant items carry information: ``b`` items that A got right and B got wrong, ``c`` items
that A got wrong and B got right. Under the null hypothesis each discordant item is a fair coin flip.

- ``exact``: two-sided binomial test on ``min(b, c)`` out of ``b + c`` with p = 1/2, the "McNemar exact
  conditional test" of Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91.
- ``chi2-cc``: ``(|b - c| - 1)^2 / (b + c)`` against chi-square(1), with Edwards' continuity correction.
- ``chi2``: ``(b - c)^2 / (b + c)``, the uncorrected statistic (= z^2 in Agresti, An Introduction to
  Categorical Data Analysis, 2nd ed., Section 8.1).

By default the exact test is used when ``b + c < 25`` and the corrected chi-square otherwise.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, chi2

__all__ = ["EXACT_BELOW", "McNemarResult", "mcnemar_from_counts", "mcnemar_test"]

EXACT_BELOW = 25
"""With ``exact=None`` the exact binomial test is used when ``b + c`` is below this."""


@dataclass(frozen=True)
class McNemarResult:
    """Outcome of McNemar's test on paired correctness of systems A and B."""

    b: int
    """Items A got right and B got wrong."""
    c: int
    """Items A got wrong and B got right."""
    statistic: float
    """``min(b, c)`` for the exact test; the chi-square statistic (1 df) otherwise."""
    p_value: float
    """Two-sided p-value."""
    method: str
    """``"exact"``, ``"chi2-cc"`` (continuity corrected) or ``"chi2"`` (uncorrected)."""


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer count, got {value!r} ({type(value).__name__}).")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative count, got {value}.")


def mcnemar_from_counts(b: int, c: int, exact: bool | None = None, continuity: bool = True) -> McNemarResult:
    """McNemar's test from the two discordant counts.

    ``exact=None`` picks the exact binomial test when ``b + c < 25``, else the chi-square test;
    ``exact=True``/``False`` forces one. ``continuity`` applies only to the chi-square test: set it to
    ``False`` for the uncorrected statistic ``(b - c)^2 / (b + c)``.
    """
    _check_count("b", b)
    _check_count("c", c)
    b, c = int(b), int(c)
    n = b + c
    use_exact = n < EXACT_BELOW if exact is None else exact
    if use_exact:
        k = min(b, c)
        # Doubling the smaller tail overshoots 1 when b == c; the two-sided p-value is then 1.
        p = 1.0 if n == 0 else min(1.0, 2.0 * float(binom.cdf(k, n, 0.5)))
        return McNemarResult(b=b, c=c, statistic=float(k), p_value=p, method="exact")
    method = "chi2-cc" if continuity else "chi2"
    if n == 0:
        # No discordant pairs: the systems are indistinguishable on these data.
        return McNemarResult(b=b, c=c, statistic=0.0, p_value=1.0, method=method)
    diff = abs(b - c)
    # Clamp at 0 so that b == c gives statistic 0 (p = 1) rather than 1/n from (0 - 1)^2.
    numerator = max(diff - 1, 0) ** 2 if continuity else diff**2
    statistic = numerator / n
    return McNemarResult(b=b, c=c, statistic=statistic, p_value=float(chi2.sf(statistic, 1)), method=method)


def _as_bool_array(name: str, values: Sequence[bool]) -> np.ndarray:
    out = np.empty(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, bool | np.bool_) or (isinstance(v, numbers.Integral) and v in (0, 1)):
            out[i] = bool(v)
        else:
            raise ValueError(
                f"{name}[{i}] is {v!r}; expected True/False (was the item answered correctly?). "
                "Map invalid or missing answers to False before testing."
            )
    return out


def mcnemar_test(
    a_correct: Sequence[bool],
    b_correct: Sequence[bool],
    exact: bool | None = None,
    continuity: bool = True,
) -> McNemarResult:
    """McNemar's test on per-item correctness of system A and system B over the same items.

    ``a_correct[i]`` and ``b_correct[i]`` say whether A and B got item ``i`` right. See
    ``mcnemar_from_counts`` for ``exact`` and ``continuity``.
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(
            f"a_correct has {len(a_correct)} items but b_correct has {len(b_correct)}; McNemar's test "
            "needs both systems scored on the same items in the same order. Align them by item id first."
        )
    a = _as_bool_array("a_correct", a_correct)
    bb = _as_bool_array("b_correct", b_correct)
    b = int(np.count_nonzero(a & ~bb))
    c = int(np.count_nonzero(~a & bb))
    return mcnemar_from_counts(b, c, exact=exact, continuity=continuity)
