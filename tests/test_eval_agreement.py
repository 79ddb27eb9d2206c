"""Agreement statistics against published worked examples."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pipeline.stats.agreement import (
    agreement_with_gold,
    cohens_kappa_from_table,
    cohens_kappa_two_raters,
    fleiss_kappa_from_counts,
    fleiss_kappa_raters,
    krippendorff_alpha,
)

# Wikipedia, "Fleiss' kappa", section "Worked example": 10 subjects, 14 raters, 5 categories.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Fleiss (1971), "Measuring nominal scale agreement among many raters", Psychological Bulletin 76(5), 378-382,
# Table 1: 30 patients, 6 psychiatrists each, 5 diagnoses; as the ratings per rater published with R's irr
# package (dataset `diagnoses`, documented as Fleiss 1971).
FLEISS_1971_DIAGNOSES = [
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
]  # fmt: skip

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", Annenberg School for Communication,
# section C ("Nominal data, any number of observers, missing data"): 4 observers, 12 units, None = missing.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_fleiss_wikipedia_worked_example() -> None:
    """Wikipedia "Fleiss' kappa", worked example: P-bar = 0.378, P-bar_e = 0.2128 (rounded 0.213), kappa = 0.210.

    The exact value from the same formula with fractions: P-bar = (828 - 140) / (10 * 14 * 13) and
    P-bar_e = (20^2 + 28^2 + 39^2 + 21^2 + 32^2) / 140^2.
    """
    result = fleiss_kappa_from_counts(WIKIPEDIA_FLEISS)
    p_bar = Fraction(828 - 140, 10 * 14 * 13)
    p_e = Fraction(20**2 + 28**2 + 39**2 + 21**2 + 32**2, 140**2)
    exact = float((p_bar - p_e) / (1 - p_e))
    assert round(float(p_bar), 3) == 0.378
    assert round(float(p_e), 4) == 0.2128
    assert round(result.kappa, 3) == 0.210
    assert round(result.kappa, 4) == round(exact, 4) == 0.2099
    assert (result.n_items, result.n_raters) == (10, 14)


def test_fleiss_1971_psychiatric_diagnoses_from_ratings() -> None:
    """Fleiss (1971), the worked example (pp. 378-382): kappa = .430 for the 30 x 6 diagnoses;
    R irr::kappam.fleiss gives 0.4302445."""
    result = fleiss_kappa_raters(FLEISS_1971_DIAGNOSES)
    assert round(result.kappa, 3) == 0.430
    assert round(result.kappa, 4) == 0.4302
    assert result.n_raters == 6 and result.categories == (1, 2, 3, 4, 5)


def test_fleiss_rejects_unequal_numbers_of_raters() -> None:
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa_from_counts([[2, 0], [1, 2]])


def test_cohen_wikipedia_fifty_proposals() -> None:
    """Wikipedia "Cohen's kappa", simple example: 50 grant proposals, two readers, yes/yes 20, A yes/B no 5,
    A no/B yes 10, no/no 15; p_o = 0.7, p_e = 0.5, kappa = 0.4."""
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = cohens_kappa_two_raters(a, b)
    assert round(result.kappa, 4) == 0.4000
    assert result.n == 50


def test_cohen_standard_error_sas_example() -> None:
    """SAS PROC FREQ simple kappa printout for the 3x3 table [[0,4,1],[0,8,0],[0,1,5]] (as reproduced in
    statsmodels' test_inter_rater.py): kappa 0.4842, ASE 0.1380, 95% limits 0.2137 and 0.7547."""
    result = cohens_kappa_from_table([[0, 4, 1], [0, 8, 0], [0, 1, 5]])
    assert round(result.kappa, 4) == 0.4842
    assert round(result.std_error, 4) == 0.1380
    assert (round(result.interval.low, 4), round(result.interval.high, 4)) == (0.2137, 0.7547)


def test_cohen_drops_items_a_rater_left_out() -> None:
    with_gaps = cohens_kappa_two_raters(["x", "y", None, "x"], ["x", "y", "y", None])
    assert with_gaps.n == 2 and with_gaps.kappa == pytest.approx(1.0)


def test_krippendorff_2011_nominal_with_missing_values() -> None:
    """Krippendorff (2011), section C: nominal alpha = 0.743 for the 4-observer, 12-unit data with missing values.

    The 4-decimal value is checked against the paper's formula computed here with fractions: the coincidence
    matrix over the 11 pairable units (n = 40 values), alpha = 1 - (n - 1) * D_o / D_e.
    """
    result = krippendorff_alpha(KRIPPENDORFF_2011, level="nominal")
    assert round(result.alpha, 3) == 0.743
    assert round(result.alpha, 4) == round(float(_nominal_alpha_by_formula(KRIPPENDORFF_2011)), 4)
    assert (result.n_units, result.n_ratings) == (11, 40)


def test_krippendorff_2011_other_levels() -> None:
    """Krippendorff (2011), same data, the paper's values at the other levels: ordinal .815, interval .849,
    ratio .797."""
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level="ordinal").alpha, 3) == 0.815
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level="interval").alpha, 3) == 0.849
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level="ratio").alpha, 3) == 0.797


def test_krippendorff_ordinal_labels_follow_the_given_order() -> None:
    """The same data as words: with categories in scale order the ordinal alpha is unchanged (.815)."""
    words = {1: "very low", 2: "low", 3: "mid", 4: "high", 5: "very high"}
    as_words = [[None if v is None else words[v] for v in row] for row in KRIPPENDORFF_2011]
    order = ["very low", "low", "mid", "high", "very high"]
    assert round(krippendorff_alpha(as_words, level="ordinal", categories=order).alpha, 3) == 0.815
    # Sorted alphabetically the scale is scrambled, and the statistic changes: the order is really used.
    assert round(krippendorff_alpha(as_words, level="ordinal").alpha, 3) != 0.815


def _nominal_alpha_by_formula(data: list[list[int | None]]) -> Fraction:
    units = [[row[u] for row in data if row[u] is not None] for u in range(len(data[0]))]
    units = [values for values in units if len(values) >= 2]
    values = sorted({v for unit in units for v in unit if v is not None})
    coincidence = {(c, k): Fraction(0) for c in values for k in values}
    for unit in units:
        m = len(unit)
        for i, c in enumerate(unit):
            for j, k in enumerate(unit):
                if i != j:
                    coincidence[(c, k)] += Fraction(1, m - 1)
    n_c = {c: sum(coincidence[(c, k)] for k in values) for c in values}
    n = sum(n_c.values())
    observed = sum(coincidence[(c, k)] for c in values for k in values if c != k)
    expected = sum(n_c[c] * n_c[k] for c in values for k in values if c != k)
    return 1 - (n - 1) * observed / expected


def test_agreement_with_gold() -> None:
    result = agreement_with_gold(["a", "b", "a", "b"], ["a", "b", "b", None])
    assert result.accuracy.estimate == 0.5
    assert result.kappa.n == 4
