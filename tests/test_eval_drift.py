"""Canary drift on hand-made runs: changed answers raise the alarm, identical ones do not."""

from __future__ import annotations

import pytest

from pipeline.evaluation.drift import DriftConfig, DriftResult, compare_runs, drift_alarm

GOLD = {f"i{k}": ("a" if k % 2 else "b") for k in range(20)}
BASELINE = dict(GOLD)


def test_identical_answers_no_alarm() -> None:
    canary = {key: value.upper() for key, value in BASELINE.items()}  # case is not drift
    result = compare_runs(BASELINE, canary, GOLD)
    assert result.agreement.estimate == 1.0 and result.changed == ()
    assert result.accuracy_change == 0.0 and result.mcnemar is not None and result.mcnemar.p_value == 1.0
    alarm = drift_alarm(result, DriftConfig())
    assert not alarm and alarm.reasons == ()


def test_changed_answers_raise_the_alarm_with_reasons() -> None:
    canary = dict(BASELINE)
    for key in ("i0", "i1", "i2", "i3", "i4", "i5"):
        canary[key] = "c"
    result = compare_runs(BASELINE, canary, GOLD)
    assert result.n_items == 20 and len(result.changed) == 6
    assert result.changed[0].model_dump(include={"item_id", "baseline", "canary", "expected"}) == {
        "item_id": "i0",
        "baseline": "b",
        "canary": "c",
        "expected": "b",
    }
    assert result.agreement.estimate == pytest.approx(0.7)
    assert result.accuracy_change == pytest.approx(-0.3)
    assert (result.mcnemar.b, result.mcnemar.c) == (6, 0)  # type: ignore[union-attr]
    alarm = drift_alarm(result, DriftConfig())
    assert alarm.alarm
    assert any("agreement with the baseline 70.0% is below 95.0%" in r for r in alarm.reasons)
    assert any("accuracy fell by 30.0%" in r for r in alarm.reasons)
    assert any("significant" in r for r in alarm.reasons)


def test_thresholds_are_configurable() -> None:
    canary = dict(BASELINE, i0="c")
    result = compare_runs(BASELINE, canary, GOLD)
    assert drift_alarm(result, DriftConfig()).alarm  # 95% agreement is not below 95%, but a 5-point drop is > 2
    assert not drift_alarm(result, DriftConfig(min_agreement=0.9, max_accuracy_drop=0.1)).alarm


def test_without_gold_only_agreement_counts() -> None:
    canary = dict(BASELINE, i0="c", i1="c")
    result = compare_runs(BASELINE, canary)
    assert result.baseline_accuracy is None and result.accuracy_change is None and result.mcnemar is None
    assert drift_alarm(result, DriftConfig(min_agreement=0.95)).alarm
    assert not drift_alarm(result, DriftConfig(min_agreement=0.9)).alarm


def test_missing_canary_answers() -> None:
    canary = {key: value for key, value in BASELINE.items() if key != "i7"}
    canary["new"] = "a"
    result = compare_runs(BASELINE, canary, GOLD)
    assert result.missing_in_canary == ("i7",) and result.new_in_canary == ("new",)
    alarm = drift_alarm(result, DriftConfig())
    assert alarm.alarm and "1 baseline items have no canary answer" in alarm.reasons[0]
    assert not drift_alarm(result, DriftConfig(max_missing=1)).alarm


def test_no_shared_items_is_an_error() -> None:
    with pytest.raises(ValueError, match="share no item"):
        compare_runs({"a": 1}, {"b": 1})


def test_drift_result_round_trips() -> None:
    result = compare_runs(BASELINE, dict(BASELINE, i3="z"), GOLD)
    assert DriftResult.from_json(result.to_json()) == result
