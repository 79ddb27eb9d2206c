"""Bootstrap intervals against Efron & Tibshirani, An Introduction to the Bootstrap (1993), and scipy.

Published bootstrap figures carry Monte Carlo error of their own: the book used B = 2000 for
Table 14.2, and over 60 seeds a B = 2000 endpoint here has a standard deviation of 1.5 (percentile
low), 2.2 (percentile high), 1.9 (BCa low) and 3.4 (BCa high); the book's draw sits about 2 SD high
on the percentile lower limit, in line with its z0 = 0.146 against our mean 0.173. Endpoints are
compared with tolerances of about 3-4 such SDs (5.5, 6, 6, 10) at B = 10000 here, still well short
of the gaps between methods (BCa's lower limit is 15 above the percentile one), so a percentile
interval cannot pass for a BCa one.
"""

import numpy as np
import pytest
from scipy import stats

from pipeline.stats.bootstrap import BootstrapInterval, _bca_levels, bootstrap_ci, paired_bootstrap_ci

# Efron & Tibshirani (1993) Table 14.1 (p. 180): spatial test scores A and B of 26 children.
SPATIAL_A = np.array(
    [48, 36, 20, 29, 42, 42, 20, 42, 22, 41, 45, 14, 6, 0, 33, 28, 34, 4, 32, 24, 47, 41, 24, 26, 30, 41.0]
)
SPATIAL_B = np.array(
    [42, 33, 16, 39, 38, 36, 15, 33, 20, 43, 34, 22, 7, 15, 34, 29, 41, 13, 38, 25, 27, 41, 28, 14, 28, 40.0]
)
# Efron & Tibshirani (1993) Table 3.1: the sample of 15 law schools (of the 82 in Table 3.2).
LSAT = np.array([576, 635, 558, 578, 666, 580, 555, 661, 651, 605, 653, 575, 545, 572, 594.0])
GPA = np.array([3.39, 3.30, 2.81, 3.03, 3.44, 3.07, 3.00, 3.43, 3.36, 3.13, 3.12, 2.74, 2.76, 2.88, 2.96])


def plug_in_variance(x: np.ndarray) -> float:
    return float(np.var(x, ddof=0))


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def test_spatial_variance_percentile_interval_table_14_2() -> None:
    """Efron & Tibshirani (1993) Table 14.2 (p. 183): 90% intervals for the plug-in variance of A.

    theta_hat = 171.5; percentile interval (100.8, 233.9), versus the standard interval
    (98.8, 244.2) and BCa (115.8, 259.6).
    """
    ci = bootstrap_ci(SPATIAL_A, plug_in_variance, n_resamples=10_000, confidence=0.90, seed=0)
    assert round(ci.estimate, 1) == 171.5
    assert ci.method == "bootstrap-percentile"
    assert ci.low == pytest.approx(100.8, abs=5.5)
    assert ci.high == pytest.approx(233.9, abs=6.0)


def test_spatial_variance_bca_interval_table_14_2() -> None:
    """Efron & Tibshirani (1993) Table 14.2 (p. 183): BCa 90% interval (115.8, 259.6).

    The text of Chapter 14 gives the jackknife acceleration a_hat = 0.061 (deterministic, so checked
    tightly) and the bias correction z0_hat = 0.146 (Monte Carlo, from the book's 2000 resamples).
    """
    ci = bootstrap_ci(SPATIAL_A, plug_in_variance, n_resamples=10_000, confidence=0.90, method="bca", seed=0)
    assert ci.method == "bootstrap-bca"
    assert ci.acceleration == pytest.approx(0.061, abs=5e-4)
    assert ci.bias_correction == pytest.approx(0.146, abs=0.08)
    assert ci.low == pytest.approx(115.8, abs=6.0)
    assert ci.high == pytest.approx(259.6, abs=10.0)


def test_bca_percentile_levels_section_14_3() -> None:
    """Efron & Tibshirani (1993) Chapter 14: with z0 = 0.146, a = 0.061 and alpha = 0.05 the BCa
    interval uses the alpha1 = 0.110 and alpha2 = 0.985 quantiles of the replicates."""
    alpha1, alpha2 = _bca_levels(0.146, 0.061, confidence=0.90)
    assert alpha1 == pytest.approx(0.110, abs=1e-3)
    assert alpha2 == pytest.approx(0.985, abs=1e-3)


def test_law_school_correlation_standard_error_table_6_1() -> None:
    """Efron & Tibshirani (1993): the law-school correlation is 0.776 (Chapter 3) and its bootstrap
    standard error is 0.132 with B = 3200 (Table 6.1)."""
    ci = paired_bootstrap_ci(LSAT, GPA, correlation, n_resamples=3200, seed=0)
    assert round(ci.estimate, 3) == 0.776
    assert ci.standard_error == pytest.approx(0.132, abs=0.01)
    assert ci.low < ci.estimate < ci.high <= 1.0


@pytest.mark.parametrize(("ours", "theirs"), [("percentile", "percentile"), ("bca", "BCa")])
def test_law_school_intervals_agree_with_scipy(ours: str, theirs: str) -> None:
    """Second check: scipy.stats.bootstrap on the same law-school data, same confidence."""
    ci = paired_bootstrap_ci(LSAT, GPA, correlation, n_resamples=3200, method=ours, seed=1)  # type: ignore[arg-type]
    ref = stats.bootstrap(
        (LSAT, GPA),
        correlation,
        paired=True,
        vectorized=False,
        n_resamples=3200,
        method=theirs,
        rng=np.random.default_rng(1),
    )
    # Identical today (same index stream); the tolerance keeps the test valid if scipy ever draws
    # its indices differently.
    assert ci.low == pytest.approx(ref.confidence_interval.low, abs=0.05)
    assert ci.high == pytest.approx(ref.confidence_interval.high, abs=0.02)
    assert ci.standard_error == pytest.approx(ref.standard_error, abs=0.01)


@pytest.mark.parametrize(("ours", "theirs"), [("percentile", "percentile"), ("bca", "BCa")])
def test_paired_mean_difference_agrees_with_scipy(ours: str, theirs: str) -> None:
    """Paired difference of means B - A on the Table 14.1 spatial data, against scipy (paired=True)."""
    ci = paired_bootstrap_ci(SPATIAL_B, SPATIAL_A, method=ours, seed=2)  # type: ignore[arg-type]
    ref = stats.bootstrap(
        (SPATIAL_B, SPATIAL_A),
        lambda x, y: np.mean(x) - np.mean(y),
        paired=True,
        vectorized=False,
        n_resamples=2000,
        method=theirs,
        rng=np.random.default_rng(2),
    )
    assert ci.estimate == pytest.approx(SPATIAL_B.mean() - SPATIAL_A.mean())
    assert ci.low == pytest.approx(ref.confidence_interval.low, abs=0.3)
    assert ci.high == pytest.approx(ref.confidence_interval.high, abs=0.3)


def test_paired_is_bootstrap_of_stacked_pairs() -> None:
    """Resampling pairs = resampling rows of the two-column array, draw for draw."""
    paired = paired_bootstrap_ci(LSAT, GPA, correlation, n_resamples=500, seed=5)
    stacked = bootstrap_ci(
        np.column_stack([LSAT, GPA]), lambda d: correlation(d[:, 0], d[:, 1]), n_resamples=500, seed=5
    )
    assert paired == stacked


def test_accuracy_difference_of_correctness_vectors() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.80
    b = rng.random(400) < 0.70
    ci = paired_bootstrap_ci(a, b, method="bca", seed=0)
    assert ci.estimate == pytest.approx(a.mean() - b.mean())
    assert ci.low < ci.estimate < ci.high


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    one = bootstrap_ci(SPATIAL_A, np.mean, n_resamples=300, seed=11)
    again = bootstrap_ci(SPATIAL_A, np.mean, n_resamples=300, seed=11)
    other = bootstrap_ci(SPATIAL_A, np.mean, n_resamples=300, seed=12)
    assert one == again
    assert (one.low, one.high) != (other.low, other.high)
    assert isinstance(one, BootstrapInterval)


def test_constant_data_gives_degenerate_interval() -> None:
    ones = np.ones(30)
    for method in ("percentile", "bca"):
        ci = bootstrap_ci(ones, np.mean, n_resamples=200, method=method)  # type: ignore[arg-type]
        assert (ci.low, ci.estimate, ci.high) == (1.0, 1.0, 1.0)


def test_bca_with_all_replicates_on_one_side_is_a_clear_error() -> None:
    distinct = np.arange(20.0)  # every resample repeats some value, so has fewer distinct values
    with pytest.raises(ValueError, match="one side of the estimate"):
        bootstrap_ci(distinct, lambda x: len(np.unique(x)), n_resamples=500, method="bca")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "bc"}, "method"),
        ({"confidence": 95}, "confidence"),
        ({"n_resamples": 1}, "n_resamples"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(SPATIAL_A, np.mean, **kwargs)  # type: ignore[arg-type]


def test_too_little_data() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci([1.0], np.mean)


def test_statistic_must_return_a_number() -> None:
    with pytest.raises(TypeError, match="one number"):
        bootstrap_ci(SPATIAL_A, lambda x: x, n_resamples=10)


def test_non_finite_statistic_is_reported() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci(SPATIAL_A, lambda x: np.inf, n_resamples=10)


def test_paired_length_mismatch() -> None:
    with pytest.raises(ValueError, match=r"x has 3 items but y has 2"):
        paired_bootstrap_ci([1, 0, 1], [1, 0])
