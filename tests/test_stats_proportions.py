"""Single-proportion intervals against Newcombe (1998), Stat Med 17:857-872, Table I (p. 861)."""

from collections.abc import Callable

import pytest

from pipeline.stats.proportions import Interval, clopper_pearson_interval, wilson_interval

# (successes, n, low, high) as printed, 4 decimals, 95% two-sided.
NEWCOMBE_SCORE = [  # method 3, "score method" (Wilson)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]
NEWCOMBE_EXACT = [  # method 5, "exact" (Clopper-Pearson)
    (81, 263, 0.2527, 0.3676),
    (15, 148, 0.0578, 0.1617),
    (0, 20, 0.0000, 0.1684),
    (1, 29, 0.0009, 0.1776),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE_SCORE)
def test_wilson_matches_newcombe_table_1(k: int, n: int, low: float, high: float) -> None:
    """Newcombe (1998) Table I, p. 861, method 3 (score interval): 81/263, 15/148, 0/20, 1/29.

    The same four rows are used as regression data by other implementations (e.g. R package propint).
    """
    ci = wilson_interval(k, n)
    assert (round(ci.low, 4), round(ci.high, 4)) == (low, high)
    assert ci.estimate == pytest.approx(k / n)
    assert ci.method == "wilson"
    assert ci.confidence == 0.95


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE_EXACT)
def test_clopper_pearson_matches_newcombe_table_1(k: int, n: int, low: float, high: float) -> None:
    """Newcombe (1998) Table I, p. 861, method 5 ("exact", Clopper-Pearson): same four examples."""
    ci = clopper_pearson_interval(k, n)
    assert (round(ci.low, 4), round(ci.high, 4)) == (low, high)
    assert ci.method == "clopper-pearson"


def test_zero_successes_gives_exact_zero_lower_bound() -> None:
    """Newcombe (1998) Table I, 0/20: both methods print a lower limit of exactly 0.0000."""
    assert wilson_interval(0, 20).low == 0.0
    assert clopper_pearson_interval(0, 20).low == 0.0
    assert wilson_interval(20, 20).high == 1.0
    assert clopper_pearson_interval(20, 20).high == 1.0


def test_interval_is_a_frozen_dataclass() -> None:
    ci = wilson_interval(81, 263)
    assert isinstance(ci, Interval)
    with pytest.raises(AttributeError):
        ci.low = 0.0  # type: ignore[misc]


def test_higher_confidence_gives_wider_interval() -> None:
    narrow = wilson_interval(81, 263, confidence=0.90)
    wide = wilson_interval(81, 263, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
def test_zero_trials_is_a_clear_error(interval: Callable[[int, int], Interval]) -> None:
    with pytest.raises(ValueError, match="n=0"):
        interval(0, 0)


@pytest.mark.parametrize(
    ("k", "n", "error"),
    [(5, 3, ValueError), (-1, 3, ValueError), (1.5, 3, TypeError), (True, 3, TypeError)],
)
def test_bad_counts_are_rejected(k: object, n: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        wilson_interval(k, n)  # type: ignore[arg-type]


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_bad_confidence_is_rejected(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        clopper_pearson_interval(1, 10, confidence=confidence)
