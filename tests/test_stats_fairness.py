"""The fairness statistics against published worked examples (4 decimals), and the audit's behaviour."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import fisher_exact

from pipeline.llm.errors import ConfigError
from pipeline.stats.calibration import calibration
from pipeline.stats.effect_size import cohens_d, cohens_d_from_stats
from pipeline.stats.fairness import FairnessConfig, FairnessRow, audit
from pipeline.stats.group_tests import chi_square_independence, kruskal_wallis, wilcoxon_signed_rank
from pipeline.stats.multiple_testing import adjust_pvalues
from pipeline.stats.paired import mcnemar_from_counts

# --- multiple testing -------------------------------------------------------------------------------------------

# Benjamini & Hochberg (1995), J. R. Statist. Soc. B 57:289-300, the worked example (the 15 p-values of the
# thrombolysis study of Neuhaus et al. 1992): at q = 0.05 the step-up procedure rejects the 4 smallest,
# Bonferroni-type (Holm) procedures the 3 smallest.
BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719, 0.6528]
BH_1995 += [0.7590, 1.000]


def test_benjamini_hochberg_1995_example_rejects_4_and_holm_3() -> None:
    result = adjust_pvalues(BH_1995, alpha=0.05)
    assert sum(result.reject_bh) == 4
    assert sum(result.reject_holm) == 3
    assert result.reject_bh[:4] == (True, True, True, True)
    # BH adjusted p of the 4th: 0.0095 * 15 / 4 = 0.035625; of the 5th: min over j >= 5 of 15 p_j / j.
    assert round(result.p_bh[3], 4) == 0.0356
    assert round(result.p_holm[2], 4) == round(0.0019 * 13, 4)


# statsmodels/stats/tests/test_multi.py, res_multtest1 (Josef Perktold; checked there against R's multtest
# mt.rawp2adjp): columns rawp, Holm and BH, sorted by raw p.
MULTTEST_RAW = [
    5.23656777208e-05, 2.8140506198e-04, 1.49877310796e-02, 2.02732688798e-02, 1.77096952723e-01,
    6.42193923795e-01, 6.80845947633e-01, 7.1626938238e-01, 8.38541367553e-01, 9.67833824309e-01,
]  # fmt: skip
MULTTEST_HOLM = [
    5.23656777208e-04, 2.53264555782e-03, 1.19901848637e-01, 1.41912882159e-01, 1.0,
    1.0, 1.0, 1.0, 1.0, 1.0,
]  # fmt: skip
MULTTEST_BH = [
    5.23656777208e-04, 1.4070253099e-03, 4.99591035987e-02, 5.06831721995e-02, 3.54193905446e-01,
    8.95336727975e-01, 8.95336727975e-01, 8.95336727975e-01, 9.31712630614e-01, 9.67833824309e-01,
]  # fmt: skip


def test_adjusted_pvalues_match_r_multtest_vectors() -> None:
    result = adjust_pvalues(MULTTEST_RAW, alpha=0.1)
    np.testing.assert_allclose(result.p_holm, MULTTEST_HOLM, atol=5e-5)
    np.testing.assert_allclose(result.p_bh, MULTTEST_BH, atol=5e-5)


# --- group tests ------------------------------------------------------------------------------------------------


def test_kruskal_wallis_matches_r_documentation_example() -> None:
    # R ?kruskal.test, Hollander & Wolfe (1973), p. 116: mucociliary efficiency.
    # R prints: Kruskal-Wallis chi-squared = 0.77143, df = 2, p-value = 0.68.
    x = [2.9, 3.0, 2.5, 2.6, 3.2]
    y = [3.8, 2.7, 4.0, 2.4]
    z = [2.8, 3.4, 3.7, 2.2, 2.0]
    result = kruskal_wallis([x, y, z])
    assert round(result.statistic, 4) == 0.7714
    assert result.df == 2
    assert round(result.p_value, 4) == 0.6800


def test_kruskal_wallis_of_identical_values_is_p_one() -> None:
    assert kruskal_wallis([[0, 0], [0, 0, 0]]).p_value == 1.0


def test_chi_square_matches_scipy_documentation_example() -> None:
    # scipy.stats.chi2_contingency documentation, "Examples": [[10, 10, 20], [20, 20, 20]] gives
    # statistic 2.7777777777777777, pvalue 0.24935220877729619, dof 2.
    result = chi_square_independence([[10, 10, 20], [20, 20, 20]])
    assert round(result.statistic, 4) == 2.7778
    assert round(result.p_value, 4) == 0.2494
    assert result.df == 2
    assert result.method == "asymptotic"
    assert result.note == ""


def test_chi_square_with_small_expected_counts_uses_monte_carlo_close_to_fisher() -> None:
    # With both margins fixed the permutation null is Fisher's: for [[5, 0], [0, 5]] Fisher's exact
    # two-sided p is 2 / C(10, 5) = 0.0079 (scipy.stats.fisher_exact); the asymptotic chi-square p (0.0016)
    # is far off, which is why the Monte-Carlo p is used.
    table = [[5, 0], [0, 5]]
    result = chi_square_independence(table, monte_carlo_resamples=20000, seed=3)
    assert result.method == "monte-carlo"
    assert "expected counts below 5" in result.note
    fisher_p = fisher_exact(table).pvalue
    assert round(fisher_p, 4) == 0.0079
    assert abs(result.p_value - fisher_p) < 0.003


def test_wilcoxon_matches_r_documentation_example() -> None:
    # R ?wilcox.test, Hollander & Wolfe (1973), p. 29f.: Hamilton depression scale, first (x) and second (y)
    # visit; wilcox.test(x, y, paired = TRUE, alternative = "greater") gives V = 40, p-value = 0.01953.
    x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
    y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]
    result = wilcoxon_signed_rank(x, y, alternative="greater")
    assert result.statistic == 40
    assert round(result.p_value, 5) == 0.01953


def test_wilcoxon_without_differences_is_p_one() -> None:
    assert wilcoxon_signed_rank([1, 2, 3], [1, 2, 3]).p_value == 1.0


# --- effect size ------------------------------------------------------------------------------------------------


def test_cohens_d_matches_lakens_2013_movie_example() -> None:
    # Lakens (2013), "Calculating and reporting effect sizes...", Frontiers in Psychology 4:863, Table 1:
    # movie ratings of two independent groups (means 8.7 and 7.7, SDs 0.82 and 0.95, n = 10 each);
    # the paper reports d_s = 1.13 and Hedges' g_s = 1.08. To 4 decimals: d = 1 / sqrt(14.2 / 18) = 1.1259.
    movie_1 = [9, 7, 8, 9, 8, 9, 9, 10, 9, 9]
    movie_2 = [9, 6, 7, 8, 7, 9, 8, 8, 7, 8]
    result = cohens_d(movie_1, movie_2)
    assert round(result.d, 2) == 1.13
    assert round(result.hedges_g, 2) == 1.08
    assert round(result.d, 4) == 1.1259


def test_cohens_d_interval_matches_borenstein_2009_example() -> None:
    # Borenstein, Hedges, Higgins & Rothstein (2009), Introduction to Meta-Analysis, chapter 4 (pp. 27-28):
    # means 103 and 100, SDs 5.5 and 4.5, n = 50 each: d = 0.5970, V_d = 0.0418, SE_d = 0.2044, J = 0.9923,
    # g = 0.5924. V_d is the Hedges & Olkin (1985) variance (n1 + n2) / (n1 n2) + d^2 / (2 (n1 + n2)); the 95%
    # limits d -+ 1.959964 SE_d are computed by hand from it.
    result = cohens_d_from_stats(103, 5.5, 50, 100, 4.5, 50)
    assert round(result.d, 4) == 0.5970
    assert round(result.standard_error**2, 4) == 0.0418
    assert round(result.standard_error, 4) == 0.2044
    assert round(result.hedges_g, 4) == 0.5924
    assert round(result.low, 4) == 0.1964
    assert round(result.high, 4) == 0.9977


# --- McNemar and calibration -------------------------------------------------------------------------------------


def test_mcnemar_exact_hand_computed() -> None:
    # b = 1, c = 7: two-sided exact conditional p = 2 * P(X <= 1), X ~ Bin(8, 1/2) = 2 * 9 / 256 = 0.0703
    # (Fagerland, Lydersen & Laake 2013, BMC Med Res Methodol 13:91, report 0.070 for these counts).
    result = mcnemar_from_counts(1, 7, exact=True)
    assert round(result.p_value, 4) == 0.0703


def test_ece_and_brier_hand_computed() -> None:
    # Bins of width 0.1: {0.9, 0.9} accuracy 0.5 -> |0.5 - 0.9| * 2/4 = 0.2; {0.6} -> |1 - 0.6| / 4 = 0.1;
    # {0.3} -> |0 - 0.3| / 4 = 0.075; ECE = 0.375. Brier = (0.01 + 0.81 + 0.16 + 0.09) / 4 = 0.2675.
    result = calibration([0.9, 0.9, 0.6, 0.3], [True, False, True, False], n_bins=10)
    assert round(result.ece, 4) == 0.3750
    assert round(result.brier, 4) == 0.2675
    # One bin pools everything: |0.5 - 0.675| = 0.175, so the binning is what gives 0.375 above.
    assert round(calibration([0.9, 0.9, 0.6, 0.3], [True, False, True, False], n_bins=1).ece, 4) == 0.1750


# --- the audit ----------------------------------------------------------------------------------------------------

GENDERS = ("female", "male")
ETHNICITIES = ("asian", "black", "hispanic", "white")


def _rows(n_pairs: int, bias: float = 0.0, noise: float = 0.1, seed: int = 0) -> list[FairnessRow]:
    """Counterfactual rows: every pair in all 8 gender x ethnicity cells; ``bias`` of black answers +1 band."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_pairs):
        true_band = int(rng.integers(1, 6))
        for gender in GENDERS:
            for ethnicity in ETHNICITIES:
                band = true_band + (int(rng.choice([-1, 1])) if rng.random() < noise else 0)
                band = min(6, max(1, band))
                if ethnicity == "black" and rng.random() < bias:
                    band = min(6, band + 1)
                rows.append(
                    FairnessRow(
                        item_id=f"P{p}/{gender}/{ethnicity}",
                        pair_id=f"P{p}",
                        groups={"gender": gender, "ethnicity": ethnicity},
                        true_band=true_band,
                        predicted_band=band,
                        confidence=0.8,
                    )
                )
    return rows


FAST = FairnessConfig(bootstrap_resamples=50, monte_carlo_resamples=500, min_cell_size=10)


def test_audit_finds_a_planted_bias_and_names_the_group() -> None:
    result = audit(_rows(60, bias=0.5), FAST)
    verdicts = {v.attribute: v for v in result.verdicts}
    assert verdicts["ethnicity"].significant
    assert "black was placed" in verdicts["ethnicity"].sentence
    assert "higher than" in verdicts["ethnicity"].sentence
    assert not verdicts["gender"].significant
    assert verdicts["gender"].sentence.startswith("gender: no evidence of a difference after correction")


def test_audit_without_bias_finds_nothing() -> None:
    result = audit(_rows(60, bias=0.0), FAST)
    assert [v.significant for v in result.verdicts] == [False, False, False]


def test_audit_reports_groups_intersections_paired_and_both_corrections() -> None:
    result = audit(_rows(30, bias=0.5), FAST)
    assert result.attributes == ("gender", "ethnicity", "gender×ethnicity")
    assert len([g for g in result.groups if g.attribute == "gender×ethnicity"]) == 8
    black = next(g for g in result.groups if g.attribute == "ethnicity" and g.group == "black")
    assert black.signed_error is not None and black.signed_error > 0
    assert black.signed_error_ci is not None and black.signed_error_ci.low <= black.signed_error
    assert black.ece is not None and black.brier is not None
    # 6 ethnicity pairs + 1 gender pair, each with McNemar and Wilcoxon, plus 2 omnibus tests x 3 analyses.
    assert len(result.paired) == 7
    assert len(result.tests) == 7 * 2 + 3 * 2
    assert all(t.p_holm >= t.p_bh - 1e-12 for t in result.tests)
    flip = next(p for p in result.paired if (p.group_a, p.group_b) == ("black", "white"))
    assert flip.n_pairs == 60  # 30 profiles x 2 genders
    assert flip.a_higher > flip.b_higher
    assert len(result.effect_sizes) == 1 + 6


def test_small_cells_are_reported_not_tested() -> None:
    rows = _rows(10, bias=0.5)
    result = audit(rows, FairnessConfig(min_cell_size=15, bootstrap_resamples=0, monte_carlo_resamples=200))
    # Ethnicity cells have 20 answers each, intersection cells 10: those are too small.
    cells = [g for g in result.groups if g.attribute == "gender×ethnicity"]
    assert all(g.too_small and g.signed_error_ci is None for g in cells)
    assert not [t for t in result.tests if t.attribute == "gender×ethnicity"]
    assert any("gender×ethnicity" in w and "reported, not tested" in w for w in result.warnings)
    verdict = next(v for v in result.verdicts if v.attribute == "gender×ethnicity")
    assert verdict.sentence.startswith("gender×ethnicity: not tested")


def test_invalid_answers_count_as_wrong_but_not_in_errors() -> None:
    rows = [
        FairnessRow("a", None, {"gender": "female"}, 3, None, None),
        FairnessRow("b", None, {"gender": "female"}, 3, 4, 0.5),
        FairnessRow("c", None, {"gender": "female"}, 3, 3, 0.9),
    ]
    result = audit(rows, FairnessConfig(attributes=("gender",), min_cell_size=2, bootstrap_resamples=0))
    female = result.groups[0]
    assert (female.n, female.n_valid) == (3, 2)
    assert round(female.accuracy, 4) == round(1 / 3, 4)
    assert female.signed_error == 0.5
    assert female.n_with_confidence == 2


def test_audit_is_deterministic_and_json_ready() -> None:
    rows = _rows(20, bias=0.3)
    first = audit(rows, FAST).to_dict()
    second = audit(rows, FAST).to_dict()
    assert first == second
    text = json.dumps(first, allow_nan=False)
    assert json.loads(text)["format_version"] == 1


def test_row_record_round_trip_and_version_check() -> None:
    row = FairnessRow("P1/female/black", "P1", {"gender": "female", "ethnicity": "black"}, 4, None, 0.7)
    assert FairnessRow.from_record(row.to_record()) == row
    record = row.to_record() | {"format_version": 99}
    with pytest.raises(ConfigError, match="format_version 99"):
        FairnessRow.from_record(record)


def test_missing_attribute_is_a_config_error_naming_the_row() -> None:
    rows = [FairnessRow("x1", None, {"gender": "male"}, 2, 2)]
    with pytest.raises(ConfigError, match="'x1'.*ethnicity"):
        audit(rows, FairnessConfig())


def test_bootstrap_resamples_zero_skips_intervals() -> None:
    result = audit(_rows(15), FairnessConfig(bootstrap_resamples=0, min_cell_size=5, monte_carlo_resamples=200))
    assert all(g.accuracy_ci is None for g in result.groups)
    assert all(not math.isnan(g.accuracy) for g in result.groups)


def test_paired_analysis_needs_pair_ids() -> None:
    rows = [FairnessRow(r.item_id, None, r.groups, r.true_band, r.predicted_band, r.confidence) for r in _rows(20)]
    result = audit(rows, FAST)
    assert result.paired == ()
    assert {t.test for t in result.tests} == {"kruskal_wallis", "chi_square_direction"}
