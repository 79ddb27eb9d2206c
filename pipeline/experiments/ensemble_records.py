"""Typed records handed between the stages of the `ensemble` kind (written by pipeline.stages).

Each names its `record_type` and `format_version` and round-trips exactly through `to_json`/`from_json`
(tests/test_ensemble_experiment.py). Large things stay out of records: the items live in the source snapshot
(Parquet + sha256), trained voters and the arbiter in versioned artifact files whose paths the records hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from pipeline.ensemble.arbiter import Decision, PassResult
from pipeline.ensemble.voter import VoterOutput
from pipeline.records import FlatRecord

__all__ = [
    "ArbiterRecord",
    "EnsembleMetrics",
    "FinalPassRecord",
    "LlmVote",
    "ReviewQueueRecord",
    "SliceFigure",
    "SplitsRecord",
    "VoterRecord",
    "decisions_from_json",
    "decisions_to_json",
    "output_from_json",
    "output_to_json",
    "tier_counts",
]


def decisions_to_json(result: PassResult) -> dict[str, Any]:
    """A pass as JSON (the same fields as `write_pass`'s JSONL lines)."""
    return {
        "labels": list(result.labels),
        "stage": result.stage,
        "decisions": [{**asdict(d), "prediction_set": list(d.prediction_set)} for d in result.decisions],
    }


def decisions_from_json(data: Mapping[str, Any]) -> PassResult:
    """Inverse of `decisions_to_json`."""
    decisions = tuple(Decision(**{**row, "prediction_set": tuple(row["prediction_set"])}) for row in data["decisions"])
    return PassResult(tuple(data["labels"]), decisions, data["stage"])


def output_to_json(output: VoterOutput) -> dict[str, Any]:
    """One voter's outputs as JSON (probabilities as plain floats: they round-trip exactly)."""
    return {
        "voter": output.voter,
        "labels": list(output.labels),
        "proba": output.proba.tolist(),
        "abstain": [bool(a) for a in output.abstain],
        "explanations": list(output.explanations),
        "safety": list(output.safety),
        "safety_labels": list(output.safety_labels),
    }


def output_from_json(data: Mapping[str, Any]) -> VoterOutput:
    """Inverse of `output_to_json`."""
    labels = tuple(data["labels"])
    proba = np.asarray(data["proba"], dtype=float).reshape(len(data["explanations"]), len(labels))
    return VoterOutput(
        voter=data["voter"],
        labels=labels,
        proba=proba,
        abstain=np.asarray(data["abstain"], dtype=bool),
        explanations=tuple(data["explanations"]),
        safety=tuple(data["safety"]),
        safety_labels=tuple(data["safety_labels"]),
    )


@dataclass(frozen=True)
class SplitsRecord(FlatRecord):
    """The task's labelled items (reviewed labels joined), split with a seed and frozen as a snapshot."""

    record_type: ClassVar[str] = "ensemble_splits"
    format_version: ClassVar[int] = 1

    task: str
    snapshot: str
    """The Parquet file holding every item (fields: text, split, provenance)."""
    sha256: str
    seed: int
    counts: dict[str, int]
    """Items per split: train, calibration, test."""
    hashes: dict[str, str]
    """`items_hash` per split: names the exact data each voter was trained and scored on."""
    max_items: int | None
    dropped_empty: int
    """Items without text, left out (the source check refuses empty texts)."""
    feedback_files: list[str] = field(default_factory=list)
    reviewed_labels: int = 0
    """Reviewed labels that joined the gold set from the feedback files."""

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        return {
            **{f"{name}_items": n for name, n in self.counts.items()},
            "sha256": self.sha256,
            "reviewed_labels": self.reviewed_labels,
            "path": self.snapshot,
        }


@dataclass(frozen=True)
class VoterRecord(FlatRecord):
    """A trained voter: its versioned artifact file and what it was trained on."""

    record_type: ClassVar[str] = "ensemble_voter"
    format_version: ClassVar[int] = 1

    name: str
    kind: str
    """Class name of the trained voter."""
    artifact: str
    """joblib file written by `pipeline.ensemble.voter.save_voter`."""
    training_hash: str
    """`items_hash` of the training split ('' for the rules voter, which is not trained)."""
    settings_hash: str
    """Hash of the voter's settings (and rules file): with the training hash, it names the artifact."""
    reused: bool
    """True when an artifact with the same settings and training data existed and was loaded, not refitted."""
    details: dict[str, Any] = field(default_factory=dict)
    """Voter-specific facts: the classical variant and every variant's calibration ECE, the labeling functions."""

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        return {
            "kind": self.kind,
            "training_hash": self.training_hash[:16],
            "reused": self.reused,
            "path": self.artifact,
        }


@dataclass(frozen=True, eq=False)
class ArbiterRecord:
    """The fitted arbiter (artifact path) and its first pass over the test split, with every voter's outputs."""

    record_type: ClassVar[str] = "ensemble_first_pass"
    format_version: ClassVar[int] = 1

    artifact: str
    """joblib file of the fitted Arbiter (stacker + conformal thresholds)."""
    voters: tuple[str, ...]
    """Voter stages in stacking-feature order."""
    first_pass: PassResult
    outputs: tuple[VoterOutput, ...]
    """Each voter's outputs on the test items (rows in decision order)."""
    stacker_proba: tuple[tuple[float, ...], ...]
    """The stacker's probabilities per test item (what calibration and risk-coverage are measured on)."""
    conformal: dict[str, Any]
    """alpha, global threshold, per-slice thresholds, calibration items reaching the tier."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {
            "artifact": self.artifact,
            "voters": list(self.voters),
            "first_pass": decisions_to_json(self.first_pass),
            "outputs": [output_to_json(o) for o in self.outputs],
            "stacker_proba": [list(row) for row in self.stacker_proba],
            "conformal": self.conformal,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArbiterRecord:
        """Inverse of `to_json`."""
        return cls(
            data["artifact"],
            tuple(data["voters"]),
            decisions_from_json(data["first_pass"]),
            tuple(output_from_json(o) for o in data["outputs"]),
            tuple(tuple(row) for row in data["stacker_proba"]),
            dict(data["conformal"]),
        )

    def __eq__(self, other: object) -> bool:
        # VoterOutput holds numpy arrays (no value equality): compare the JSON forms.
        return isinstance(other, ArbiterRecord) and self.to_json() == other.to_json()

    def unsettled(self) -> tuple[str, ...]:
        """Item ids the cheap tiers left unsettled: what the LLM voter's calls are planned for."""
        return tuple(d.item_id for d in self.first_pass.decisions if not d.settled)

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset: tiers of the first pass."""
        tiers: dict[str, int] = {}
        for d in self.first_pass.decisions:
            tiers[d.tier] = tiers.get(d.tier, 0) + 1
        return {
            "test_items": len(self.first_pass.decisions),
            "unsettled": len(self.unsettled()),
            **{f"tier_{k}": v for k, v in sorted(tiers.items())},
            "path": self.artifact,
        }


@dataclass(frozen=True)
class LlmVote:
    """The LLM voter's answer on one unsettled item (or why there is none)."""

    item_id: str
    call_id: str
    answered: bool
    """False when the call has no stored response (failed, or not run yet: assay resume)."""
    label: str | None
    """The label it gave; None when it abstained, was unsure, unreadable or missing."""
    explanation: str
    raw_response: str
    alias: str
    model_used: str
    cost_usd: float
    latency_s: float


@dataclass(frozen=True)
class FinalPassRecord:
    """The arbiter's final pass: the first pass with the LLM voter's answers merged."""

    record_type: ClassVar[str] = "ensemble_final_pass"
    format_version: ClassVar[int] = 1

    final_pass: PassResult
    votes: tuple[LlmVote, ...]
    plan_id: str
    plan_current: bool
    """False when the LLM plan was made from another first pass (its answers are then not used)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {
            "final_pass": decisions_to_json(self.final_pass),
            "votes": [asdict(v) for v in self.votes],
            "plan_id": self.plan_id,
            "plan_current": self.plan_current,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinalPassRecord:
        """Inverse of `to_json`."""
        return cls(
            decisions_from_json(data["final_pass"]),
            tuple(LlmVote(**v) for v in data["votes"]),
            data["plan_id"],
            data["plan_current"],
        )

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        decisions = self.final_pass.decisions
        return {
            "settled": sum(d.settled for d in decisions),
            "abstained": sum(not d.settled for d in decisions),
            "llm_calls": len(self.votes),
            "llm_answered": sum(v.answered for v in self.votes),
        }


@dataclass(frozen=True)
class SliceFigure:
    """Macro F1 on one slice, with how many gold items of each label it holds."""

    name: str
    n: int
    macro_f1: float
    support: dict[str, int]


@dataclass(frozen=True)
class EnsembleMetrics:
    """Every figure of an ensemble run on its test split (see pipeline/ensemble/metrics.py for definitions)."""

    record_type: ClassVar[str] = "ensemble_metrics"
    format_version: ClassVar[int] = 1

    test_items: int
    macro_f1: float
    """Final decisions; an abstention is scored with the stacker's best guess (every item gets a label)."""
    macro_f1_settled: float
    """Settled items only."""
    accuracy: float
    coverage: float
    """Share of test items settled (by any tier, the LLM included)."""
    selective_error: float
    """Error rate among the settled items."""
    slices: tuple[SliceFigure, ...]
    worst_slice: str | None
    worst_slice_f1: float | None
    min_label_support: int
    """A slice counts toward the supported worst-slice figure only with this many gold items of every label."""
    worst_supported_slice: str | None
    worst_supported_slice_f1: float | None
    ece: float
    """Of the stacker's top-label probability, 15 equal-width bins."""
    calibration_bins: tuple[tuple[float, float, int, float, float], ...]
    """(lower, upper, count, mean confidence, accuracy) per bin."""
    brier: float
    coverage_at_1pct_risk: float
    """Risk-coverage curve of the stacker's confidence: the largest coverage at <= 1% selective error."""
    aurc: float
    risk_coverage: tuple[tuple[float, float], ...]
    """(coverage, risk) points, thinned to at most 200."""
    tiers_first: dict[str, int]
    tiers_final: dict[str, int]
    llm_calls: int
    llm_call_rate: float
    llm_answered: int
    llm_cost_usd: float
    cost_per_prediction_usd: float
    cheap_latency_p50_ms: float
    cheap_latency_p95_ms: float
    """One text through every cheap voter and the arbiter, timed alone, for items the LLM does not see."""
    llm_latency_p50_ms: float | None
    llm_latency_p95_ms: float | None
    """Cheap path plus the stored call's latency, for items the LLM voter was asked about."""
    labeling_functions: tuple[dict[str, Any], ...] = ()
    """Snorkel's LF analysis on the calibration split: coverage, overlaps, conflicts, empirical accuracy."""
    classical_variants: dict[str, float] = field(default_factory=dict)
    """Calibration-split ECE of every classical variant tried."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able fields (tuples become lists)."""
        data = asdict(self)
        data["slices"] = [asdict(s) for s in self.slices]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnsembleMetrics:
        """Inverse of `to_json`."""
        values = dict(data)
        values["slices"] = tuple(SliceFigure(**s) for s in data["slices"])
        values["calibration_bins"] = tuple(tuple(b) for b in data["calibration_bins"])
        values["risk_coverage"] = tuple(tuple(p) for p in data["risk_coverage"])
        values["labeling_functions"] = tuple(data["labeling_functions"])
        return cls(**values)

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset: the headline figures."""
        return {
            "macro_f1": round(self.macro_f1, 4),
            "worst_slice_f1": None if self.worst_slice_f1 is None else round(self.worst_slice_f1, 4),
            "ece": round(self.ece, 4),
            "coverage_at_1pct_risk": round(self.coverage_at_1pct_risk, 4),
            "llm_call_rate": round(self.llm_call_rate, 4),
            "cost_per_prediction_usd": self.cost_per_prediction_usd,
            "cheap_latency_p95_ms": round(self.cheap_latency_p95_ms, 2),
        }


@dataclass(frozen=True)
class ReviewQueueRecord(FlatRecord):
    """Where the review queue was written, and how many rows of each kind it holds."""

    record_type: ClassVar[str] = "ensemble_review_queue"
    format_version: ClassVar[int] = 1

    csv: str
    jsonl: str
    rows: int
    abstained: int
    disagreements: int

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset."""
        return {"rows": self.rows, "abstained": self.abstained, "disagreements": self.disagreements, "path": self.csv}


def tier_counts(decisions: Sequence[Decision]) -> dict[str, int]:
    """Decisions per tier."""
    out: dict[str, int] = {}
    for d in decisions:
        out[d.tier] = out.get(d.tier, 0) + 1
    return dict(sorted(out.items()))
