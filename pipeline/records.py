"""Typed records handed between the stages of the classify-family kinds (written by pipeline.stages).

Each record class names its `record_type` and `format_version`; `to_json`/`from_json` round-trip exactly
(tests/test_records.py). Bump the version when a field changes meaning: an old file is then refused with a
message to re-run the stage, never misread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

AnswerStatus = Literal["ok", "invalid", "missing"]

_R = TypeVar("_R", bound="FlatRecord")


class FlatRecord:
    """`to_json`/`from_json` for a record whose fields are all plain JSON values (a dataclass)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[_R], data: dict[str, Any]) -> _R:
        """Inverse of `to_json`."""
        return cls(**data)


@dataclass(frozen=True)
class SourceRecord(FlatRecord):
    """The frozen input snapshot: where it is, its checksum, what was loaded and rejected."""

    record_type: ClassVar[str] = "source"
    format_version: ClassVar[int] = 1

    path: str
    sha256: str
    rows: int
    load_errors: int
    source: str

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        return {"rows": self.rows, "load_errors": self.load_errors, "sha256": self.sha256, "source": self.source}


@dataclass(frozen=True)
class AnswerRecord:
    """One item's answer from one call: parsed, validated, maybe repaired.

    Attributes:
        item_id: the dataset item.
        call_id: the planned call that asked (the partition's call).
        alias: the model alias that *answered* (a fallback's, when one answered).
        requested_alias: the alias the plan asked.
        repeat: repeat index of the call.
        label: the label compared with gold (None unless status is 'ok').
        answer: the parsed answer object.
        status: 'ok', 'invalid' (with a reason) or 'missing' (no stored response).
        reason: why it is invalid or missing ('' when ok).
        raw_response: the model's text, always kept.
        model_used: litellm id that answered.
        repaired: True when the repair call made it valid.
        first_raw_response: the invalid first answer, when repaired.
        repair_call_id: the repair call's id (its cost belongs to this run).
        answered_call_id: where the answer is stored (differs from call_id after a fallback).
    """

    item_id: str
    call_id: str
    alias: str
    repeat: int
    label: str | None
    answer: Any
    status: AnswerStatus
    reason: str
    raw_response: str
    model_used: str
    requested_alias: str = ""
    repaired: bool = False
    first_raw_response: str = ""
    repair_call_id: str = ""
    answered_call_id: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnswerRecord:
        """Inverse of `to_json`."""
        return cls(**data)

    def with_changes(self, **changes: Any) -> AnswerRecord:
        """A copy with some fields replaced."""
        return replace(self, **changes)


@dataclass(frozen=True)
class AnswerSet:
    """Every item's answers of one stage (extractions: first pass; answers: after repairs)."""

    record_type: ClassVar[str] = "answers"
    format_version: ClassVar[int] = 1

    rows: tuple[AnswerRecord, ...]
    repair_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {"rows": [row.to_json() for row in self.rows], "repair_calls": self.repair_calls}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnswerSet:
        """Inverse of `to_json`."""
        return cls(tuple(AnswerRecord.from_json(row) for row in data["rows"]), data.get("repair_calls", 0))

    def counts(self) -> dict[str, int]:
        """Rows by status."""
        out = {"items": len(self.rows), "valid": 0, "invalid": 0, "missing": 0, "repaired": 0}
        for row in self.rows:
            out[{"ok": "valid", "invalid": "invalid", "missing": "missing"}[row.status]] += 1
            out["repaired"] += int(row.repaired)
        return out

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        reasons: dict[str, int] = {}
        for row in self.rows:
            if row.status == "invalid":
                key = row.reason.split(":")[0][:60]
                reasons[key] = reasons.get(key, 0) + 1
        return {**self.counts(), "repair_calls": self.repair_calls, "invalid_reasons": str(reasons)}


@dataclass(frozen=True)
class ModelMetrics:
    """One answering model's figures in an evaluation."""

    items: int
    valid: int
    invalid: int
    missing: int
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    accuracy: dict[str, Any] | None = None
    """Estimate, Wilson interval and counts (pipeline.stats.metrics.accuracy_with_ci as a dict)."""
    labelled: int = 0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Kind-specific metrics (assign-cat: per-level accuracy)."""

    def to_json(self) -> dict[str, Any]:
        """Flat JSON (kind-specific metrics beside the common ones, as stats_summary.json has them)."""
        out: dict[str, Any] = {
            "items": self.items,
            "valid": self.valid,
            "invalid": self.invalid,
            "missing": self.missing,
        }
        if self.accuracy is not None:
            out["accuracy"] = dict(self.accuracy)
            out["labelled"] = self.labelled
        out.update(self.extra)
        out.update(
            {
                "cost_usd": self.cost_usd,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            }
        )
        if self.latency_p50_s is not None:
            out["latency_p50_s"] = self.latency_p50_s
            out["latency_p95_s"] = self.latency_p95_s
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMetrics:
        """Inverse of `to_json`."""
        known = {f.name for f in fields(cls)} - {"extra", "accuracy"}
        accuracy = data.get("accuracy")
        return cls(
            **{name: data[name] for name in known if name in data},
            accuracy=dict(accuracy) if accuracy else None,
            extra={k: v for k, v in data.items() if k not in known and k != "accuracy"},
        )


@dataclass(frozen=True)
class Evaluation:
    """Accuracy against gold (Wilson CIs), validity, cost and latency per answering model."""

    record_type: ClassVar[str] = "evaluation"
    format_version: ClassVar[int] = 1

    experiment: str
    prompt_version: str
    models: dict[str, ModelMetrics]

    def to_json(self) -> dict[str, Any]:
        """The shape of stats_summary.json."""
        return {
            "experiment": self.experiment,
            "prompt_version": self.prompt_version,
            "models": {alias: metrics.to_json() for alias, metrics in self.models.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        """Inverse of `to_json`."""
        models = {alias: ModelMetrics.from_json(m) for alias, m in data["models"].items()}
        return cls(data["experiment"], data["prompt_version"], models)

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset: accuracy and cost per model."""
        out: dict[str, Any] = {}
        for alias, metrics in self.models.items():
            if metrics.accuracy is not None:
                out[f"{alias}_accuracy"] = round(float(metrics.accuracy["estimate"]), 4)
            out[f"{alias}_cost_usd"] = round(metrics.cost_usd, 6)
        return out


@dataclass(frozen=True)
class Judgement:
    """One judge's reading of one answer, one repeat (pipeline.evaluation.judges.parse_judgement)."""

    item_id: str
    unit: str
    """What is voted on: the item id, or `<item>/<alias>/r<repeat>` when an item has several answers."""
    answer_call_id: str
    answer: str
    """The answer judged (its label)."""
    judge: str
    """The judge model's alias."""
    repeat: int
    judge_call_id: str
    verdict: str | None
    score: float | None
    reason: str
    valid: bool
    error: str = ""
    """Why the judgement could not be read, or 'no stored response' ('' when valid)."""


@dataclass(frozen=True)
class AgreementRow:
    """One agreement figure: between judges, between a judge's repeats, or of a judge (or the vote) with gold."""

    measure: str
    """'Cohen kappa', 'Fleiss kappa', 'Krippendorff alpha', 'accuracy vs gold', 'Cohen kappa vs gold'."""
    raters: str
    value: float | None
    """None when undefined (the reason is in `note`)."""
    n: int
    note: str = ""


@dataclass(frozen=True)
class JudgementSet:
    """The judge stage: every judgement, the majority vote per answer, flaky answers and agreement figures."""

    record_type: ClassVar[str] = "judgements"
    format_version: ClassVar[int] = 2

    rows: tuple[Judgement, ...]
    positive_verdict: str = ""
    """The verdict that means "the answer is right" (the config's first verdict)."""
    votes: tuple[dict[str, Any], ...] = ()
    """pipeline.evaluation.judges.Vote per unit, as JSON."""
    flaky: tuple[dict[str, Any], ...] = ()
    """pipeline.evaluation.judges.FlakyItem per (unit, judge) whose repeats disagree, as JSON."""
    agreement: tuple[AgreementRow, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {
            "rows": [asdict(row) for row in self.rows],
            "positive_verdict": self.positive_verdict,
            "votes": list(self.votes),
            "flaky": list(self.flaky),
            "agreement": [asdict(row) for row in self.agreement],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JudgementSet:
        """Inverse of `to_json`."""
        return cls(
            tuple(Judgement(**row) for row in data["rows"]),
            data["positive_verdict"],
            tuple(data["votes"]),
            tuple(data["flaky"]),
            tuple(AgreementRow(**row) for row in data["agreement"]),
        )

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        judged = [row for row in self.rows if row.valid]
        positive = sum(row.verdict == self.positive_verdict for row in judged)
        out: dict[str, Any] = {
            "judged": len(judged),
            "unjudged": len(self.rows) - len(judged),
            f"judged_{self.positive_verdict or 'positive'}": positive,
            "flaky": len(self.flaky),
        }
        for row in self.agreement:
            if row.value is not None:
                out[f"{row.measure} ({row.raters})"] = round(row.value, 4)
        return out


@dataclass(frozen=True)
class ReportRecord(FlatRecord):
    """Where the report stage wrote the run folder."""

    record_type: ClassVar[str] = "report"
    format_version: ClassVar[int] = 1

    run_folder: str
    report_md: str
    status: str

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset: the run folder, the report's path and the report itself (as Markdown in the UI)."""
        metadata: dict[str, Any] = {"run_folder": self.run_folder, "report": self.report_md, "status": self.status}
        report = Path(self.report_md)
        if report.is_file():
            from pipeline.report.inline_images import inline_images

            metadata["report_markdown"] = inline_images(report.read_text(encoding="utf-8"), report.parent)
        return metadata
