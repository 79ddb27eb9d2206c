"""Judges: prompt rendering, robust parsing, majority votes with explicit ties, flaky items."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipeline.evaluation.judges import (
    FlakyReport,
    JudgeConfig,
    Judgement,
    find_flaky,
    judge_messages,
    judge_score_schema,
    majority_vote,
    parse_judgement,
    votes_by_item,
)
from pipeline.extract import validate_answer

CONFIG = JudgeConfig(name="strict", rubric="The topic must be the text's main subject.", pass_score=3)


def _j(item: str, verdict: str | None, judge: str = "j1", repeat: int = 0, score: float | None = None) -> Judgement:
    if verdict is None:
        return Judgement(item_id=item, judge=judge, repeat=repeat, valid=False, error="unreadable")
    return Judgement(item_id=item, judge=judge, repeat=repeat, verdict=verdict, score=score)


def test_prompt_has_rubric_answer_and_schema() -> None:
    messages = judge_messages(CONFIG, {"text": "Rain tomorrow."}, '{"topic": "weather"}', expected="weather")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert json.loads(messages[0]["content"].split("\n", 1)[1]) == judge_score_schema(CONFIG)
    user = messages[1]["content"]
    assert "main subject" in user and "text: Rain tomorrow." in user and '{"topic": "weather"}' in user


def test_score_schema_accepts_a_good_answer_and_rejects_a_bad_one() -> None:
    schema = judge_score_schema(CONFIG)
    assert validate_answer({"score": 4, "verdict": "pass", "reason": "ok"}, schema) is None
    assert validate_answer({"score": 9, "verdict": "pass", "reason": "ok"}, schema) is not None
    assert validate_answer({"score": 4, "verdict": "maybe", "reason": "ok"}, schema) is not None


def test_template_with_an_unknown_placeholder_is_rejected() -> None:
    with pytest.raises(ValidationError, match="user template uses \\{answr\\}"):
        JudgeConfig(rubric="r", user="Judge {answr}")


@pytest.mark.parametrize(
    ("text", "score", "verdict"),
    [
        ('{"score": 4, "verdict": "pass", "reason": "fine"}', 4.0, "pass"),
        ('Here you go:\n```json\n{"Score": "2/5", "Verdict": "FAIL", "reason": "off topic"}\n```', 2.0, "fail"),
        ('{"score": 5, "reason": "clearly right"}', 5.0, "pass"),  # verdict derived: 5 >= pass_score 3
        ('{"score": 1, "reason": "wrong"}', 1.0, "fail"),
        ('{"verdict": " Pass ", "rationale": "ok"}', None, "pass"),
    ],
)
def test_parse_readable_answers(text: str, score: float | None, verdict: str) -> None:
    judgement = parse_judgement(text, CONFIG, item_id="i1", repeat=2)
    assert judgement.valid, judgement.error
    assert (judgement.score, judgement.verdict, judgement.repeat, judgement.judge) == (score, verdict, 2, "strict")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("I think it is fine.", "no JSON object"),
        ('{"score": 7, "verdict": "pass"}', "outside [1, 5]"),
        ('{"score": "high", "verdict": "pass"}', "is not a number"),
        ('{"score": 4, "verdict": "maybe"}', "'maybe' is not one of"),
        ('["pass"]', "expected a JSON object"),
        ('{"reason": "no idea"}', "no verdict and no score"),
    ],
)
def test_parse_unreadable_answers_are_invalid_not_errors(text: str, error: str) -> None:
    judgement = parse_judgement(text, CONFIG, item_id="i1")
    assert not judgement.valid and judgement.verdict is None
    assert error in judgement.error


def test_missing_verdict_without_pass_score_is_invalid() -> None:
    config = JudgeConfig(rubric="r")
    assert not parse_judgement('{"score": 5}', config, item_id="i").valid


def test_majority_vote_and_abstentions() -> None:
    vote = majority_vote([_j("a", "pass"), _j("a", "pass"), _j("a", "fail"), _j("a", None)])
    assert (vote.verdict, vote.tie, vote.counts, vote.n_valid, vote.n_invalid) == (
        "pass",
        False,
        {"fail": 1, "pass": 2},
        3,
        1,
    )


def test_tie_is_explicit_and_resolved_only_by_the_tie_verdict() -> None:
    judgements = [_j("a", "pass"), _j("a", "fail")]
    untied = majority_vote(judgements)
    assert untied.tie and untied.verdict is None
    assert majority_vote(judgements, tie_verdict="fail").verdict == "fail"
    # The order of arrival does not decide a tie.
    assert majority_vote(list(reversed(judgements)), tie_verdict="fail").verdict == "fail"


def test_all_invalid_gives_no_verdict() -> None:
    vote = majority_vote([_j("a", None), _j("a", None)])
    assert vote.verdict is None and not vote.tie and vote.n_invalid == 2


def test_votes_by_item_and_mean_score() -> None:
    votes = votes_by_item([_j("b", "fail", score=1), _j("a", "pass", score=4), _j("a", "pass", score=5)])
    assert list(votes) == ["a", "b"]
    assert votes["a"].mean_score == 4.5 and votes["b"].verdict == "fail"
    with pytest.raises(ValueError, match="votes_by_item"):
        majority_vote([_j("a", "pass"), _j("b", "pass")])


def test_repeated_judgements_expose_flaky_items() -> None:
    judgements = [
        *(_j("steady", "pass", repeat=r) for r in range(3)),
        _j("wobbly", "pass", repeat=0),
        _j("wobbly", "fail", repeat=1),
        _j("wobbly", "pass", repeat=2),
        _j("once", "fail"),  # judged once: cannot be flaky, not counted
        _j("half", "pass", repeat=0),
        _j("half", None, repeat=1),  # an unreadable repeat is not a disagreement
        _j("half", "pass", repeat=2),
        _j("steady", "fail", judge="j2", repeat=0),
        _j("steady", "fail", judge="j2", repeat=1),
    ]
    report = find_flaky(judgements)
    assert [(f.item_id, f.judge) for f in report.flaky] == [("wobbly", "j1")]
    assert report.flaky[0].counts == {"fail": 1, "pass": 2}
    assert report.flaky[0].agreement == pytest.approx(2 / 3)
    assert report.n_items == 4 and report.flaky_rate == pytest.approx(1 / 4)


def test_judgement_records_round_trip() -> None:
    judgement = parse_judgement('{"score": "4", "verdict": "pass", "reason": "ok"}', CONFIG, item_id="x")
    assert Judgement.from_json(judgement.to_json()) == judgement
    report = find_flaky([_j("a", "pass"), _j("a", "fail", repeat=1)])
    assert FlakyReport.from_json(json.dumps(json.loads(report.to_json()))) == report
