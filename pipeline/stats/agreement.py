"""Agreement between raters (LLM judges, annotators) and with gold labels.

- ``cohens_kappa_two_raters``: Cohen's (1960) kappa of two raters on the same items, with its asymptotic
  standard error and interval, from statsmodels' ``cohens_kappa`` (optionally weighted, for ordinal scales).
- ``fleiss_kappa_raters``: Fleiss' (1971) kappa of any fixed number of raters per item, from statsmodels'
  ``aggregate_raters`` + ``fleiss_kappa``.
- ``krippendorff_alpha``: Krippendorff's alpha for any number of raters with missing ratings, at the nominal,
  ordinal, interval or ratio level, from the ``krippendorff`` package.
- ``agreement_with_gold``: accuracy (Wilson interval) and Cohen's kappa of one rater against gold labels.

Labels may be any hashable values; they are mapped to integer codes in a fixed order (sorted, or the order
given as ``categories``, which ordinal statistics need). ``None`` is a missing rating.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import krippendorff
import numpy as np
from statsmodels.stats.inter_rater import aggregate_raters, cohens_kappa, fleiss_kappa

from pipeline.stats.metrics import KappaResult, accuracy_with_ci
from pipeline.stats.metrics import cohens_kappa as _gold_kappa
from pipeline.stats.proportions import Interval

__all__ = [
    "CohenKappa",
    "FleissKappa",
    "GoldAgreement",
    "KrippendorffAlpha",
    "agreement_with_gold",
    "cohens_kappa_from_table",
    "cohens_kappa_two_raters",
    "fleiss_kappa_from_counts",
    "fleiss_kappa_raters",
    "krippendorff_alpha",
]

Level = Literal["nominal", "ordinal", "interval", "ratio"]
Weighting = Literal["linear", "quadratic"]


@dataclass(frozen=True)
class CohenKappa:
    """Cohen's kappa of two raters with its asymptotic interval (Fleiss, Cohen & Everitt 1969)."""

    kappa: float
    std_error: float
    """Asymptotic standard error of kappa."""
    interval: Interval
    """kappa with the normal-approximation interval."""
    p_value: float
    """Two-sided p-value of H0: kappa = 0."""
    n: int
    """Items rated by both raters."""
    weighting: str
    """'none', 'linear' or 'quadratic'."""


@dataclass(frozen=True)
class FleissKappa:
    """Fleiss' kappa of m raters per item."""

    kappa: float
    n_items: int
    n_raters: int
    """Raters per item (the same for every item)."""
    categories: tuple[Hashable, ...]


@dataclass(frozen=True)
class KrippendorffAlpha:
    """Krippendorff's alpha."""

    alpha: float
    level: str
    n_raters: int
    n_units: int
    """Units with at least two ratings (the pairable ones)."""
    n_ratings: int
    """Non-missing ratings in pairable units."""


@dataclass(frozen=True)
class GoldAgreement:
    """One rater against gold labels."""

    accuracy: Interval
    kappa: KappaResult


def _codes(
    columns: Sequence[Sequence[Hashable | None]], categories: Sequence[Hashable] | None
) -> tuple[list[Hashable], dict[Hashable, int]]:
    seen = {value for column in columns for value in column if value is not None}
    if categories is None:
        try:
            order = sorted(seen)  # type: ignore[type-var]
        except TypeError:
            order = sorted(seen, key=repr)
    else:
        order = list(categories)
        unknown = seen - set(order)
        if unknown:
            raise ValueError(
                f"ratings {sorted(map(repr, unknown))} are not among categories {order!r}; add them to categories"
            )
    return order, {value: code for code, value in enumerate(order)}


def cohens_kappa_from_table(table: Sequence[Sequence[int]], weighting: Weighting | None = None) -> CohenKappa:
    """Cohen's kappa from a square contingency table (rows: rater A's category, columns: rater B's)."""
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
        raise ValueError(f"table must be square with at least 2 categories, got shape {counts.shape}")
    result = cohens_kappa(counts, wt=weighting) if weighting else cohens_kappa(counts)
    confidence = 0.95  # statsmodels' kappa_low/kappa_upp are the 95% limits
    return CohenKappa(
        kappa=float(result.kappa),
        std_error=float(result.std_kappa),
        interval=Interval(
            estimate=float(result.kappa),
            low=float(result.kappa_low),
            high=float(result.kappa_upp),
            method="asymptotic-normal",
            confidence=confidence,
        ),
        p_value=float(result.pvalue_two_sided),
        n=int(counts.sum()),
        weighting=weighting or "none",
    )


def cohens_kappa_two_raters(
    rater_a: Sequence[Hashable | None],
    rater_b: Sequence[Hashable | None],
    categories: Sequence[Hashable] | None = None,
    weighting: Weighting | None = None,
) -> CohenKappa:
    """Cohen's kappa of two raters over the same items; items either rater left out (None) are dropped.

    For ``weighting`` the category order matters: pass ``categories`` from lowest to highest.
    """
    if len(rater_a) != len(rater_b):
        raise ValueError(
            f"rater_a has {len(rater_a)} ratings but rater_b has {len(rater_b)}; rate the same items in the same "
            "order (None for a missing rating)"
        )
    pairs = [(a, b) for a, b in zip(rater_a, rater_b, strict=True) if a is not None and b is not None]
    if not pairs:
        raise ValueError("no item was rated by both raters; kappa needs at least one common item")
    order, code = _codes([[a for a, _ in pairs], [b for _, b in pairs]], categories)
    if len(order) < 2:
        raise ValueError(f"every rating is {order[0]!r}: kappa needs at least 2 categories (pass categories=...)")
    table = np.zeros((len(order), len(order)), dtype=int)
    for a, b in pairs:
        table[code[a], code[b]] += 1
    return cohens_kappa_from_table(table.tolist(), weighting)


def fleiss_kappa_from_counts(
    counts: Sequence[Sequence[int]], categories: Sequence[Hashable] | None = None
) -> FleissKappa:
    """Fleiss' kappa from an items x categories table of how many raters chose each category."""
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[1] < 2:
        raise ValueError(f"counts must be items x categories with at least 2 categories, got shape {table.shape}")
    per_item = table.sum(axis=1)
    if not np.all(per_item == per_item[0]) or per_item[0] < 2:
        raise ValueError(
            f"every item needs the same number (>= 2) of ratings for Fleiss' kappa; found {sorted(set(per_item))}. "
            "Use krippendorff_alpha for missing ratings."
        )
    names = tuple(categories) if categories is not None else tuple(range(table.shape[1]))
    return FleissKappa(
        kappa=float(fleiss_kappa(table, method="fleiss")),
        n_items=int(table.shape[0]),
        n_raters=int(per_item[0]),
        categories=names,
    )


def fleiss_kappa_raters(
    ratings: Sequence[Sequence[Hashable]], categories: Sequence[Hashable] | None = None
) -> FleissKappa:
    """Fleiss' kappa from ratings[item][rater] (every item rated by the same number of raters, none missing)."""
    if any(value is None for row in ratings for value in row):
        raise ValueError("a rating is None; Fleiss' kappa needs complete ratings. Use krippendorff_alpha instead.")
    order, code = _codes([list(row) for row in ratings], categories)
    coded = np.asarray([[code[value] for value in row] for row in ratings], dtype=int)
    if coded.ndim != 2:
        raise ValueError("every item needs the same number of ratings for Fleiss' kappa; use krippendorff_alpha")
    counts, _ = aggregate_raters(coded, n_cat=len(order))
    return fleiss_kappa_from_counts(counts.tolist(), order)


def krippendorff_alpha(
    ratings_by_rater: Sequence[Sequence[Hashable | None]],
    level: Level = "nominal",
    categories: Sequence[Hashable] | None = None,
) -> KrippendorffAlpha:
    """Krippendorff's alpha from ratings_by_rater[rater][unit] (None = missing).

    Nominal and ordinal levels take any labels (ordinal: ``categories`` from lowest to highest, else sorted);
    interval and ratio levels take numbers.
    """
    width = {len(row) for row in ratings_by_rater}
    if len(ratings_by_rater) < 2 or len(width) != 1:
        raise ValueError(
            f"need >= 2 raters with one rating (or None) per unit each; got {len(ratings_by_rater)} raters with "
            f"{sorted(width)} units"
        )
    if level in ("nominal", "ordinal"):
        order, code = _codes(ratings_by_rater, categories)
        data = np.asarray(
            [[np.nan if v is None else float(code[v]) for v in row] for row in ratings_by_rater], dtype=float
        )
        domain: list[float] | None = [float(i) for i in range(len(order))]
    else:
        data = np.asarray([[np.nan if v is None else float(v) for v in row] for row in ratings_by_rater], dtype=float)  # type: ignore[arg-type]
        domain = None
    rated = np.sum(~np.isnan(data), axis=0)
    pairable = rated >= 2
    if not pairable.any():
        raise ValueError("no unit has ratings from two raters; alpha needs at least one pairable unit")
    value = krippendorff.alpha(reliability_data=data, level_of_measurement=level, value_domain=domain)
    return KrippendorffAlpha(
        alpha=float(value),
        level=level,
        n_raters=len(ratings_by_rater),
        n_units=int(pairable.sum()),
        n_ratings=int(rated[pairable].sum()),
    )


def agreement_with_gold(
    gold: Sequence[Hashable],
    ratings: Sequence[Hashable | None],
    labels: Sequence[Hashable] | None = None,
    confidence: float = 0.95,
) -> GoldAgreement:
    """Accuracy (Wilson interval) and Cohen's kappa of `ratings` against `gold`; None ratings count as wrong."""
    return GoldAgreement(
        accuracy=accuracy_with_ci(gold, ratings, confidence=confidence),
        kappa=_gold_kappa(gold, ratings, labels),
    )
