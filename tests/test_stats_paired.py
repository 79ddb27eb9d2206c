"""McNemar's test against published worked examples."""

import math

import numpy as np
import pytest

from pipeline.stats.paired import McNemarResult, mcnemar_from_counts, mcnemar_test


def _pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    """Per-item correctness of A and B from the four cells of the paired 2x2 table."""
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return a, b


def test_agresti_presidential_approval_uncorrected() -> None:
    """Agresti, An Introduction to Categorical Data Analysis, 2nd ed. (2007), Section 8.1, Table 8.1.

    Approval of the President in two surveys of the same 1600 people: approve/approve 794,
    approve/disapprove 150, disapprove/approve 86, disapprove/disapprove 570. The book gives
    z = (86 - 150) / sqrt(86 + 150) = -4.17 and McNemar's statistic z^2 = 17.36 (df = 1), P < 0.001.
    """
    a, b = _pairs(794, 150, 86, 570)
    result = mcnemar_test(a, b, exact=False, continuity=False)
    assert (result.b, result.c) == (150, 86)
    assert result.method == "chi2"
    assert round(result.statistic, 2) == 17.36
    assert round(math.sqrt(result.statistic), 2) == 4.17
    assert result.p_value < 0.001


def test_agresti_presidential_approval_default_is_corrected() -> None:
    """Same table (b + c = 236 >= 25): the default is the continuity-corrected chi-square.

    (|150 - 86| - 1)^2 / 236 = 63^2 / 236 = 16.818; R's ``mcnemar.test`` example runs this very
    table (citing Agresti 1990, p. 350) with its default ``correct = TRUE``.
    """
    result = mcnemar_from_counts(150, 86)
    assert result.method == "chi2-cc"
    assert result.statistic == pytest.approx(63**2 / 236)
    assert round(result.statistic, 3) == 16.818
    assert result.p_value < 0.001


def test_fagerland_bentur_exact_conditional() -> None:
    """Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, Table 1 (Bentur et al. 2009).

    Airway hyper-responsiveness before/after stem cell transplantation in 21 children: 1 yes/yes,
    1 yes/no, 7 no/yes, 12 no/no, so b = 1 and c = 7. Their supplement defines the exact conditional
    p-value as 2 * binomcdf(1, 8, 0.5) = 2 * 9/256 = 0.0703; the paper reports P = 0.070 for the
    exact conditional test and P = 0.034 for the asymptotic (uncorrected) McNemar test.
    """
    exact = mcnemar_from_counts(1, 7)  # b + c = 8 < 25: exact by default
    assert exact.method == "exact"
    assert exact.p_value == pytest.approx(18 / 256)
    assert round(exact.p_value, 3) == 0.070
    assert exact.statistic == 1.0

    asymptotic = mcnemar_from_counts(1, 7, exact=False, continuity=False)
    assert asymptotic.statistic == pytest.approx(36 / 8)
    assert round(asymptotic.p_value, 3) == 0.034

    a, b = _pairs(1, 1, 7, 12)
    assert mcnemar_test(a, b) == exact


def test_exact_small_case_by_hand() -> None:
    """b = 0, c = 5: the only outcomes as extreme are 0/5 and 5/0, so p = 2 / 2^5 = 0.0625."""
    assert mcnemar_from_counts(0, 5).p_value == pytest.approx(0.0625)


def test_result_is_symmetric_in_a_and_b() -> None:
    rng = np.random.default_rng(3)
    a = list(rng.random(60) < 0.7)
    b = list(rng.random(60) < 0.5)
    ab, ba = mcnemar_test(a, b), mcnemar_test(b, a)
    assert (ab.b, ab.c) == (ba.c, ba.b)
    assert ab.p_value == pytest.approx(ba.p_value)


@pytest.mark.parametrize("exact", [True, False])
def test_no_difference_gives_p_one(exact: bool) -> None:
    assert mcnemar_from_counts(7, 7, exact=exact).p_value == pytest.approx(1.0)
    assert mcnemar_from_counts(0, 0, exact=exact).p_value == 1.0


def test_threshold_between_exact_and_chi2() -> None:
    assert mcnemar_from_counts(12, 12).method == "exact"  # 24 discordant
    assert mcnemar_from_counts(12, 13).method == "chi2-cc"  # 25 discordant
    assert mcnemar_from_counts(100, 80, exact=True).method == "exact"


def test_length_mismatch_names_both_lengths() -> None:
    with pytest.raises(ValueError, match=r"3 items.*2"):
        mcnemar_test([True, False, True], [True, False])


def test_none_is_not_silently_treated_as_wrong() -> None:
    with pytest.raises(ValueError, match=r"b_correct\[1\] is None"):
        mcnemar_test([True, True], [True, None])  # type: ignore[list-item]


def test_negative_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_from_counts(-1, 3)


def test_result_type() -> None:
    assert isinstance(mcnemar_from_counts(3, 9), McNemarResult)
