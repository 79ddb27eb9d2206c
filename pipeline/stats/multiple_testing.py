"""Holm and Benjamini-Hochberg adjustment of one family of p-values, side by side.

- Holm (1979), Scand. J. Statist. 6:65-70: step-down, controls the family-wise error rate.
- Benjamini & Hochberg (1995), J. R. Statist. Soc. B 57:289-300: step-up, controls the false discovery rate.

Both come from statsmodels' ``multipletests`` (methods ``holm`` and ``fdr_bh``), which is tested against R's
multtest; this module only runs both at once and returns a typed result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from statsmodels.stats.multitest import multipletests

__all__ = ["Adjusted", "adjust_pvalues"]


@dataclass(frozen=True)
class Adjusted:
    """Adjusted p-values and rejections, in the order of the input p-values."""

    p_holm: tuple[float, ...]
    p_bh: tuple[float, ...]
    reject_holm: tuple[bool, ...]
    reject_bh: tuple[bool, ...]
    alpha: float


def adjust_pvalues(pvalues: Sequence[float], alpha: float = 0.05) -> Adjusted:
    """Holm and BH adjusted p-values of a family; an empty family gives empty tuples."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1 (e.g. 0.05), got {alpha!r}")
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return Adjusted((), (), (), (), alpha)
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    reject_holm, p_holm, _, _ = multipletests(p, alpha=alpha, method="holm")
    reject_bh, p_bh, _, _ = multipletests(p, alpha=alpha, method="fdr_bh")
    return Adjusted(
        p_holm=tuple(float(v) for v in p_holm),
        p_bh=tuple(float(v) for v in p_bh),
        reject_holm=tuple(bool(v) for v in reject_holm),
        reject_bh=tuple(bool(v) for v in reject_bh),
        alpha=alpha,
    )
