"""Records of the evaluation-loop stages (hard checks, canary drift, perspectives and synthesis).

Each names its `record_type` and `format_version` and round-trips through `to_json`/`from_json`
(tests/test_eval_wiring.py); the judge stage's record is `pipeline.records.JudgementSet`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from pipeline.evaluation.checks import CheckResult, CheckSummary, summarize
from pipeline.evaluation.drift import DriftAlarm, DriftResult
from pipeline.records import FlatRecord


@dataclass(frozen=True)
class HardCheckRow:
    """One hard check on one answer (an item's answer from one model and repeat)."""

    item_id: str
    alias: str
    repeat: int
    call_id: str
    check: str
    passed: bool
    detail: str = ""
    """Why it failed ('' when it passed)."""


@dataclass(frozen=True)
class HardCheckSet:
    """Every hard check on every answer, and the pass rate the experiment asks for."""

    record_type: ClassVar[str] = "hard_checks"
    format_version: ClassVar[int] = 1

    rows: tuple[HardCheckRow, ...]
    min_pass_rate: float

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {"rows": [asdict(row) for row in self.rows], "min_pass_rate": self.min_pass_rate}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HardCheckSet:
        """Inverse of `to_json`."""
        return cls(tuple(HardCheckRow(**row) for row in data["rows"]), float(data["min_pass_rate"]))

    def summary(self) -> CheckSummary:
        """Pass rate per check and the failures (pipeline.evaluation.checks.summarize)."""
        return summarize(
            [
                CheckResult(item_id=row.item_id, check=row.check, passed=row.passed, detail=row.detail)
                for row in self.rows
            ]
        )

    def failures(self) -> list[HardCheckRow]:
        """The failed rows."""
        return [row for row in self.rows if not row.passed]

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset: pass rate per check, failures, the threshold."""
        rates = {f"pass_rate:{stat.check}": round(stat.pass_rate, 4) for stat in self.summary().per_check}
        failures = len(self.failures())
        return {"checked": len(self.rows), "failures": failures, "min_pass_rate": self.min_pass_rate, **rates}


@dataclass(frozen=True)
class CanaryDrift:
    """A canary run's answers compared with its baseline run (pipeline.evaluation.drift)."""

    record_type: ClassVar[str] = "canary_drift"
    format_version: ClassVar[int] = 1

    baseline: str
    """Where the baseline answers came from (a run folder or the first canary run)."""
    result: DriftResult | None
    """None when there was no baseline to compare with (the first run keeps its answers as the baseline)."""
    alarm: DriftAlarm
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {
            "baseline": self.baseline,
            "result": None if self.result is None else self.result.model_dump(mode="json"),
            "alarm": self.alarm.model_dump(mode="json"),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CanaryDrift:
        """Inverse of `to_json`."""
        result = None if data["result"] is None else DriftResult.model_validate(data["result"])
        return cls(data["baseline"], result, DriftAlarm.model_validate(data["alarm"]), data.get("note", ""))

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        out: dict[str, Any] = {"baseline": self.baseline, "alarm": self.alarm.alarm}
        if self.result is not None:
            out |= {"agreement": round(self.result.agreement.estimate, 4), "changed": len(self.result.changed)}
        return out


@dataclass(frozen=True)
class PerspectiveRow(FlatRecord):
    """One analyst role's answer to one item from one model (or the synthesis of them, role 'synthesis')."""

    item_id: str
    alias: str
    role: str
    call_id: str
    text: str | None
    """None when the call has no stored answer."""


@dataclass(frozen=True)
class SynthesisSet:
    """Per item: every role's answer and the synthesis of them."""

    record_type: ClassVar[str] = "syntheses"
    format_version: ClassVar[int] = 1

    perspectives: tuple[PerspectiveRow, ...]
    syntheses: tuple[PerspectiveRow, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {
            "perspectives": [row.to_json() for row in self.perspectives],
            "syntheses": [row.to_json() for row in self.syntheses],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SynthesisSet:
        """Inverse of `to_json`."""
        return cls(
            tuple(PerspectiveRow.from_json(row) for row in data["perspectives"]),
            tuple(PerspectiveRow.from_json(row) for row in data["syntheses"]),
        )

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        return {
            "perspectives": sum(row.text is not None for row in self.perspectives),
            "perspectives_missing": sum(row.text is None for row in self.perspectives),
            "syntheses": sum(row.text is not None for row in self.syntheses),
            "syntheses_missing": sum(row.text is None for row in self.syntheses),
        }
