"""LLM judges: rubric prompts with a JSON score schema, robust parsing of the judge's answer, majority votes,
and repeated judgements that expose flaky items.

A judge is asked to return `{"score": <int in [score_min, score_max]>, "verdict": <one of verdicts>, "reason":
<text>}`; `judge_score_schema` is that schema, sent as `response_format` where the model supports it. Judges
still wrap JSON in prose or code fences, write "4/5" or "PASS", or forget the verdict: `parse_judgement` finds
the JSON with `pipeline.extract.extract_json`, reads keys case-insensitively, accepts a score written as a
string or a fraction, matches the verdict case-insensitively and, when the config has a `pass_score`, derives a
missing verdict from the score. What it cannot read becomes an invalid `Judgement` with the reason, never an
exception, so one bad judge answer does not stop a stage.

Votes: invalid judgements do not vote. A tie is reported as a tie (`Vote.tie`), and its verdict is the
config's `tie_verdict` (e.g. the conservative "fail") or None when no tie-break is configured; a tie is never
resolved by the order in which judgements arrived.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.evaluation.records import Record
from pipeline.extract import extract_json
from pipeline.llm.errors import OutputValidationError
from pipeline.prompts import render, template_fields
from pipeline.strict import StrictModel

__all__ = [
    "FlakyItem",
    "FlakyReport",
    "JudgeConfig",
    "Judgement",
    "Vote",
    "find_flaky",
    "judge_messages",
    "judge_score_schema",
    "majority_vote",
    "parse_judgement",
    "votes_by_item",
]

DEFAULT_JUDGE_SYSTEM = (
    "You are a strict evaluator. Judge the answer against the rubric only. Reply with one JSON object matching "
    "this schema and nothing else:\n{score_schema}"
)
DEFAULT_JUDGE_USER = (
    "Rubric:\n{rubric}\n\nInput:\n{input}\n\nExpected answer (may be empty):\n{expected}\n\nAnswer to judge:\n{answer}"
)
_JUDGE_FIELDS = {"rubric", "input", "expected", "answer", "score_schema", "score_min", "score_max", "verdicts"}


class JudgeConfig(StrictModel):
    """One LLM judge: its rubric, score scale, verdicts and prompt templates."""

    name: str = Field("judge", pattern=r"^[A-Za-z0-9_.-]+$", description="Judge name in judgements and votes.")
    rubric: str = Field(min_length=1, description="What a good answer is; rendered into the prompt as {rubric}.")
    score_min: int = Field(1, description="Lowest score.")
    score_max: int = Field(5, description="Highest score.")
    verdicts: list[str] = Field(default_factory=lambda: ["pass", "fail"], min_length=2, description="Allowed verdicts.")
    pass_score: float | None = Field(
        None,
        description="With two verdicts: score >= pass_score means verdicts[0], else verdicts[1]; used only to fill "
        "in a verdict the judge left out. None = a missing verdict makes the judgement invalid.",
    )
    tie_verdict: str | None = Field(
        None, description="Verdict of a tied majority vote (e.g. 'fail' to be conservative); None = no verdict."
    )
    system: str = Field(DEFAULT_JUDGE_SYSTEM, description="System template; placeholders as for `user`.")
    user: str = Field(
        DEFAULT_JUDGE_USER,
        description="User template: {rubric} {input} {expected} {answer} {score_schema} {score_min} {score_max} "
        "{verdicts}.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> JudgeConfig:
        if self.score_min >= self.score_max:
            raise ValueError(f"score_min {self.score_min} must be below score_max {self.score_max}")
        folded = [v.casefold() for v in self.verdicts]
        if len(set(folded)) != len(folded):
            raise ValueError(f"verdicts {self.verdicts} repeat a value (compared case-insensitively)")
        if self.tie_verdict is not None and self.tie_verdict not in self.verdicts:
            raise ValueError(f"tie_verdict {self.tie_verdict!r} is not one of the verdicts {self.verdicts}")
        if self.pass_score is not None and len(self.verdicts) != 2:
            raise ValueError("pass_score needs exactly two verdicts (pass, fail); remove it or the extra verdicts")
        for name in ("system", "user"):
            unknown = sorted(set(template_fields(getattr(self, name), name)) - _JUDGE_FIELDS)
            if unknown:
                raise ValueError(
                    f"{name} template uses {{{unknown[0]}}}; available: {', '.join(sorted(_JUDGE_FIELDS))}"
                )
        return self


def judge_score_schema(config: JudgeConfig) -> dict[str, Any]:
    """JSON Schema of a judge's answer: score in the scale, verdict from the list, a reason."""
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": config.score_min, "maximum": config.score_max},
            "verdict": {"type": "string", "enum": list(config.verdicts)},
            "reason": {"type": "string"},
        },
        "required": ["score", "verdict", "reason"],
        "additionalProperties": False,
    }


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "\n".join(f"{key}: {val}" for key, val in value.items())
    return str(value)


def judge_messages(config: JudgeConfig, item_input: Any, answer: str, expected: Any = None) -> list[dict[str, str]]:
    """System and user messages asking the judge to grade `answer` to `item_input` against the rubric."""
    context = {
        "rubric": config.rubric,
        "input": _as_text(item_input),
        "expected": _as_text(expected),
        "answer": answer,
        "score_schema": json.dumps(judge_score_schema(config)),
        "score_min": config.score_min,
        "score_max": config.score_max,
        "verdicts": ", ".join(config.verdicts),
    }
    messages = [{"role": "user", "content": render(config.user, context, "judge user")}]
    if config.system:
        messages.insert(0, {"role": "system", "content": render(config.system, context, "judge system")})
    return messages


class Judgement(Record):
    """One judge's reading of one answer (one repeat)."""

    format_version: Literal[1] = 1
    item_id: str
    judge: str
    repeat: int = 0
    """Repeat index (0..k-1) when the same judge is asked k times."""
    score: float | None = None
    verdict: str | None = None
    """One of the config's verdicts (spelled as there), or None when invalid."""
    reason: str = ""
    """The judge's reason."""
    valid: bool = True
    error: str = ""
    """Why the answer could not be read ('' when valid)."""


_FRACTION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+(?:\.\d+)?)?\s*$")


def _score(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        found = _FRACTION.match(raw)
        return float(found.group(1)) if found else None
    return None


def parse_judgement(text: str, config: JudgeConfig, *, item_id: str, repeat: int = 0) -> Judgement:
    """Read a judge's answer; anything unreadable gives `valid=False` with the reason (never raises)."""

    def invalid(error: str, score: float | None = None, reason: str = "") -> Judgement:
        return Judgement(
            item_id=item_id, judge=config.name, repeat=repeat, score=score, reason=reason, valid=False, error=error
        )

    try:
        value = extract_json(text)
    except OutputValidationError as exc:
        return invalid(str(exc))
    if not isinstance(value, dict):
        return invalid(f"expected a JSON object with score, verdict and reason; found {type(value).__name__}")
    fields = {str(key).strip().casefold(): val for key, val in value.items()}
    reason = _as_text(fields.get("reason", fields.get("explanation", fields.get("rationale", ""))))
    score = None
    if "score" in fields:
        score = _score(fields["score"])
        if score is None:
            return invalid(f"score {fields['score']!r} is not a number", reason=reason)
        if not config.score_min <= score <= config.score_max:
            return invalid(f"score {score:g} is outside [{config.score_min}, {config.score_max}]", reason=reason)
    raw_verdict = fields.get("verdict", fields.get("label"))
    verdict = None
    if isinstance(raw_verdict, str):
        by_folded = {v.casefold(): v for v in config.verdicts}
        verdict = by_folded.get(raw_verdict.strip().casefold())
        if verdict is None:
            return invalid(f"verdict {raw_verdict!r} is not one of {config.verdicts}", score=score, reason=reason)
    elif raw_verdict is not None:
        return invalid(f"verdict {raw_verdict!r} is not text", score=score, reason=reason)
    if verdict is None:
        if score is None or config.pass_score is None:
            return invalid("the answer has no verdict" + ("" if score is not None else " and no score"), score, reason)
        verdict = config.verdicts[0] if score >= config.pass_score else config.verdicts[1]
    return Judgement(item_id=item_id, judge=config.name, repeat=repeat, score=score, verdict=verdict, reason=reason)


class Vote(Record):
    """The majority verdict of several judgements of one item."""

    format_version: Literal[1] = 1
    item_id: str
    verdict: str | None
    """The most frequent verdict; on a tie the tie verdict (or None); None when no judgement was valid."""
    counts: dict[str, int]
    """Valid judgements per verdict."""
    tie: bool
    """True when two or more verdicts shared the top count."""
    n_valid: int
    n_invalid: int
    mean_score: float | None = None
    """Mean of the valid judgements' scores (None when none had one)."""


def majority_vote(judgements: Sequence[Judgement], tie_verdict: str | None = None) -> Vote:
    """Majority verdict over the judgements of one item; invalid ones abstain; ties are explicit."""
    if not judgements:
        raise ValueError("no judgements to vote on; pass at least one Judgement of the item")
    ids = {j.item_id for j in judgements}
    if len(ids) != 1:
        raise ValueError(f"majority_vote takes the judgements of one item; got items {sorted(ids)}. Use votes_by_item.")
    valid = [j for j in judgements if j.valid and j.verdict is not None]
    counts = Counter(j.verdict for j in valid if j.verdict is not None)
    top = max(counts.values(), default=0)
    leaders = sorted(v for v, c in counts.items() if c == top)
    tie = len(leaders) > 1
    verdict = leaders[0] if len(leaders) == 1 else tie_verdict if tie else None
    scores = [j.score for j in valid if j.score is not None]
    return Vote(
        item_id=judgements[0].item_id,
        verdict=verdict,
        counts=dict(sorted(counts.items())),
        tie=tie,
        n_valid=len(valid),
        n_invalid=len(judgements) - len(valid),
        mean_score=sum(scores) / len(scores) if scores else None,
    )


def votes_by_item(judgements: Sequence[Judgement], tie_verdict: str | None = None) -> dict[str, Vote]:
    """`majority_vote` for each item, keyed by item id (sorted)."""
    grouped: dict[str, list[Judgement]] = defaultdict(list)
    for judgement in judgements:
        grouped[judgement.item_id].append(judgement)
    return {item_id: majority_vote(grouped[item_id], tie_verdict) for item_id in sorted(grouped)}


class FlakyItem(Record):
    """An item whose repeated judgements by one judge disagree."""

    format_version: Literal[1] = 1
    item_id: str
    judge: str
    counts: dict[str, int]
    """Verdicts over the repeats (valid ones)."""
    agreement: float
    """Share of the repeats that gave the most frequent verdict."""


class FlakyReport(Record):
    """Items judged k times: which ones the judge cannot make up its mind about."""

    format_version: Literal[1] = 1
    n_items: int
    """(item, judge) pairs with at least two valid repeats."""
    flaky: tuple[FlakyItem, ...]

    @property
    def flaky_rate(self) -> float:
        """Flaky pairs / pairs judged at least twice (0.0 when none was)."""
        return len(self.flaky) / self.n_items if self.n_items else 0.0


def find_flaky(judgements: Sequence[Judgement]) -> FlakyReport:
    """Group repeated judgements by (item, judge); a pair whose valid verdicts differ is flaky.

    Invalid repeats are left out: a judge that once fails to answer is unreliable in another way, reported by
    `Vote.n_invalid`, not a disagreement about the item.
    """
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for judgement in judgements:
        if judgement.valid and judgement.verdict is not None:
            grouped[(judgement.item_id, judgement.judge)].append(judgement.verdict)
    repeated = {key: verdicts for key, verdicts in grouped.items() if len(verdicts) >= 2}
    flaky = []
    for (item_id, judge), verdicts in sorted(repeated.items()):
        counts = Counter(verdicts)
        if len(counts) > 1:
            flaky.append(
                FlakyItem(
                    item_id=item_id,
                    judge=judge,
                    counts=dict(sorted(counts.items())),
                    agreement=max(counts.values()) / len(verdicts),
                )
            )
    return FlakyReport(n_items=len(repeated), flaky=tuple(flaky))
