"""Model comparison on a hand-made case."""

from __future__ import annotations

import pytest

from pipeline.evaluation.compare_models import (
    ItemOutcome,
    ModelComparison,
    compare_models,
    render_comparison_markdown,
)


def _outcomes(correct: list[bool | None], cost: float, latency: list[float] | None = None) -> list[ItemOutcome]:
    latency = latency or [1.0] * len(correct)
    return [ItemOutcome(f"i{k:02d}", c, cost, t) for k, (c, t) in enumerate(zip(correct, latency, strict=True))]


# 20 items. big: 18 right. mid: 17 right (misses one big got right). small: 12 right. None = invalid answer.
BIG = [True] * 18 + [False, False]
MID = [True] * 17 + [False, False, None]
SMALL = [True] * 12 + [False] * 8
RESULTS = {
    "small": _outcomes(SMALL, 0.0001),
    "big": _outcomes(BIG, 0.01, [float(k) for k in range(1, 21)]),
    "mid": _outcomes(MID, 0.001),
}


def test_best_paired_tests_and_cheapest_within_margin() -> None:
    result = compare_models(RESULTS, margin=0.05)
    assert result.best == "big"
    assert [s.model for s in result.models] == ["big", "mid", "small"]
    big = result.models[0]
    assert big.accuracy.estimate == 0.9 and big.total_cost_usd == pytest.approx(0.2)
    # numpy's linear percentiles of latencies 1..20 s: p50 = 10.5, p95 = 19.05.
    assert (big.latency_p50_s, big.latency_p95_s) == pytest.approx((10.5, 19.05))
    tests = {p.other: p for p in result.paired}
    assert (tests["mid"].mcnemar.b, tests["mid"].mcnemar.c) == (1, 0)
    assert tests["mid"].mcnemar.method == "exact" and tests["mid"].mcnemar.p_value == 1.0
    assert (tests["small"].mcnemar.b, tests["small"].mcnemar.c) == (6, 0)
    # Exact McNemar, 6 discordant items all one way: p = 2 * 0.5^6 = 0.03125.
    assert tests["small"].mcnemar.p_value == pytest.approx(0.03125)
    assert result.recommended == "mid"
    assert result.evidence.startswith("mid is the cheapest model within 5.0% of the best: 85.0% [")
    assert "(10.0x cheaper)" in result.evidence and "p = 1" in result.evidence


def test_margin_decides_the_recommendation() -> None:
    assert compare_models(RESULTS, margin=0.0).recommended == "big"
    assert compare_models(RESULTS, margin=0.30).recommended == "small"
    assert "is both the most accurate" in compare_models(RESULTS, margin=0.0).evidence


def test_models_must_share_items() -> None:
    uneven = {"a": _outcomes([True, False], 0.1), "b": _outcomes([True], 0.1)}
    with pytest.raises(ValueError, match="same gold items"):
        compare_models(uneven)
    with pytest.raises(ValueError, match="at least 2 models"):
        compare_models({"a": _outcomes([True], 0.1)})


def test_markdown_table_and_round_trip() -> None:
    result = compare_models(RESULTS, margin=0.05)
    table = render_comparison_markdown(result)
    lines = table.splitlines()
    assert lines[0].startswith("| model | accuracy | 95% CI |")
    assert lines[2].startswith("| big | 90.0% |") and lines[2].endswith("| best |")
    assert lines[3].startswith("| **mid** | 85.0% |")
    assert result.evidence in table
    assert ModelComparison.from_json(result.to_json()) == result
