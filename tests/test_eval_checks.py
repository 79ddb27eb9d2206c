"""Hard checks: each type on passing and failing answers, the summary, the pass-rate gate, custom callables."""

from __future__ import annotations

import pytest

from pipeline.evaluation.checks import (
    CheckResult,
    ChecksConfig,
    CheckSummary,
    load_checks,
    pass_rate_ok,
    resolve_callable,
    run_checks,
    summarize,
)
from pipeline.llm.errors import ConfigError


def _one(check: dict, text: str) -> CheckResult:
    config = load_checks({"checks": [check]})
    (result,) = run_checks({"i1": text}, config)
    return result


def test_valid_json() -> None:
    assert _one({"type": "valid_json"}, 'Sure: ```json\n{"a": 1}\n```').passed
    assert not _one({"type": "valid_json", "strict": True}, 'Sure: {"a": 1}').passed
    failed = _one({"type": "valid_json"}, "no json here")
    assert not failed.passed and "no JSON object" in failed.detail


def test_json_schema() -> None:
    check = {"type": "json_schema", "json_schema": {"type": "object", "required": ["topic"]}}
    assert _one(check, '{"topic": "sports"}').passed
    failed = _one(check, '{"label": "sports"}')
    assert not failed.passed and "'topic' is a required property" in failed.detail


def test_json_schema_rejects_a_broken_schema() -> None:
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        load_checks({"checks": [{"type": "json_schema", "json_schema": {"type": "nonsense"}}]})


def test_label_in_set() -> None:
    check = {"type": "label_in_set", "field": "topic", "labels": ["sports", "cooking"]}
    assert _one(check, '{"topic": "Sports"}').passed
    assert not _one({**check, "case_sensitive": True}, '{"topic": "Sports"}').passed
    failed = _one(check, '{"topic": "politics"}')
    assert not failed.passed and "'politics' is not one of" in failed.detail
    assert "missing" in _one(check, '{"other": 1}').detail
    assert _one({"type": "label_in_set", "labels": ["yes", "no"]}, " yes\n").passed


def test_regex_must_match_and_must_not_match() -> None:
    assert _one({"type": "regex", "pattern": r"^\{"}, '{"a": 1}').passed
    assert not _one({"type": "regex", "pattern": r"^\{"}, 'Here: {"a": 1}').passed
    forbidden = _one({"type": "regex", "pattern": "as an ai", "must_match": False, "ignore_case": True}, "As an AI, no")
    assert not forbidden.passed and "forbidden" in forbidden.detail
    assert _one({"type": "regex", "pattern": "as an ai", "must_match": False}, "fine").passed


def test_regex_that_does_not_compile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        load_checks({"checks": [{"type": "regex", "pattern": "("}]})


def test_length_bounds() -> None:
    assert _one({"type": "length", "min_chars": 2, "max_chars": 5}, "abc").passed
    assert "fewer than the minimum 2" in _one({"type": "length", "min_chars": 2}, "a").detail
    assert "more than the maximum 5" in _one({"type": "length", "max_chars": 5}, "abcdef").detail
    with pytest.raises(ConfigError, match="swap them"):
        load_checks({"checks": [{"type": "length", "min_chars": 5, "max_chars": 2}]})
    with pytest.raises(ConfigError, match="give min_chars, max_chars or both"):
        load_checks({"checks": [{"type": "length"}]})


def test_numeric_range_of_a_field() -> None:
    check = {"type": "numeric_range", "field": "result.score", "min": 1, "max": 5}
    assert _one(check, '{"result": {"score": 3}}').passed
    assert _one(check, '{"result": {"score": "4.5"}}').passed
    assert "above the maximum" in _one(check, '{"result": {"score": 9}}').detail
    assert "below the minimum" in _one(check, '{"result": {"score": 0}}').detail
    assert "not a number" in _one(check, '{"result": {"score": "high"}}').detail
    assert "not a number" in _one(check, '{"result": {"score": true}}').detail
    assert "missing" in _one(check, '{"result": {}}').detail


def test_custom_callable_from_the_project() -> None:
    check = {"type": "custom", "callable": "pipeline.evaluation.custom_checks.no_refusal"}
    assert _one(check, '{"topic": "sports"}').passed
    failed = _one(check, "I'm sorry, I cannot help with that.")
    assert not failed.passed and "refusal" in failed.detail
    assert failed.check == "custom:no_refusal"


def test_custom_callable_outside_the_project_is_rejected() -> None:
    with pytest.raises(ConfigError, match="outside the project's modules"):
        load_checks({"checks": [{"type": "custom", "callable": "os.system"}]})
    with pytest.raises(ConfigError, match="outside the project's modules"):
        resolve_callable("subprocess.run")


def test_custom_callable_that_does_not_exist() -> None:
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        resolve_callable("pipeline.evaluation.custom_checks.nope")
    with pytest.raises(ConfigError, match="cannot be imported"):
        resolve_callable("pipeline.no_such_module.fn")


def test_unknown_type_and_unknown_key_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="type"):
        load_checks({"checks": [{"type": "spelling"}]}, source="configs/experiments/x.yaml")
    with pytest.raises(ConfigError, match="unknown field"):
        load_checks({"checks": [{"type": "regex", "pattern": "a", "must_mach": False}]})


def test_duplicate_check_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match="give one of them a distinct `name:`"):
        load_checks({"checks": [{"type": "valid_json"}, {"type": "valid_json", "strict": True}]})


def test_summary_pass_rates_failures_and_the_gate() -> None:
    config = ChecksConfig.model_validate(
        {"checks": [{"type": "valid_json"}, {"type": "length", "max_chars": 10, "name": "short"}]}
    )
    answers = {"a": '{"x": 1}', "b": '{"x": 12345678}', "c": "nope", "d": None}
    summary = summarize(run_checks(answers, config))
    rates = {stat.check: stat.pass_rate for stat in summary.per_check}
    assert rates == {"valid_json": 0.5, "short": 0.5}
    assert summary.n_items == 4
    assert {(f.item_id, f.check) for f in summary.failures} == {
        ("b", "short"),
        ("c", "valid_json"),
        ("d", "valid_json"),
        ("d", "short"),
    }
    assert next(f for f in summary.failures if f.item_id == "d").detail == "no answer"
    verdict = pass_rate_ok(summary, 0.5)
    assert verdict.ok and bool(verdict) and verdict.lowest_rate == 0.5
    strict = pass_rate_ok(summary, 0.75)
    assert not strict and strict.below == ("valid_json", "short") and strict.threshold == 0.75
    with pytest.raises(ValueError, match="threshold"):
        pass_rate_ok(summary, 75)


def test_summary_round_trips_through_json() -> None:
    summary = summarize(run_checks({"a": "x", "b": "{}"}, load_checks({"checks": [{"type": "valid_json"}]})))
    assert CheckSummary.from_json(summary.to_json()) == summary
    with pytest.raises(ConfigError, match="format_version"):
        CheckSummary.from_json(summary.to_json().replace('"format_version":1', '"format_version":9'), "s.json")
