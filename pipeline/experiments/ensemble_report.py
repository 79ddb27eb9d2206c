"""The ensemble's report stage: the standard run folder (pipeline/report/runs.py) with the ensemble's figures.

Adds to the generic report: each figure next to the issue's target, per-slice F1 (with label support), the
reliability diagram and the risk-coverage curve (PNG), the tiers that decided, Snorkel's labeling-function
analysis, and a copy of the review queue in outputs/.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.data.labelled import LabelledItem
from pipeline.data.loaders import Item
from pipeline.experiments.base import ReportHooks
from pipeline.experiments.ensemble_records import (
    EnsembleMetrics,
    FinalPassRecord,
    ReviewQueueRecord,
    SplitsRecord,
)
from pipeline.records import ModelMetrics, ReportRecord
from pipeline.stages import StageInputs

if TYPE_CHECKING:
    from pipeline.experiments.ensemble import EnsembleExperiment

__all__ = ["TARGETS", "EnsembleReport", "Target"]


class Target:
    """One figure of issue #11 with its target; `met` compares a value with it."""

    def __init__(self, name: str, field: str, bound: float, higher_is_better: bool, fmt: str = "{:.4f}") -> None:
        self.name = name
        self.field = field
        self.bound = bound
        self.higher_is_better = higher_is_better
        self.fmt = fmt

    def met(self, value: float | None) -> bool:
        """True when `value` reaches the target (None or NaN never does)."""
        if value is None or math.isnan(value):
            return False
        return value >= self.bound if self.higher_is_better else value <= self.bound

    @property
    def text(self) -> str:
        """The target as `>= 0.92`."""
        return f"{'>=' if self.higher_is_better else '<='} {self.fmt.format(self.bound)}"


TARGETS: tuple[Target, ...] = (
    Target("macro F1 (abstentions scored by best guess)", "macro_f1", 0.92, True),
    Target("worst-slice macro F1", "worst_slice_f1", 0.85, True),
    Target("worst-slice macro F1, slices with label support", "worst_supported_slice_f1", 0.85, True),
    Target("ECE (stacker, 15 bins)", "ece", 0.03, False),
    Target("coverage at <= 1% selective error", "coverage_at_1pct_risk", 0.85, True),
    Target("LLM call rate", "llm_call_rate", 0.10, False),
    Target("p95 latency per cheap prediction (ms)", "cheap_latency_p95_ms", 200.0, False, "{:.1f}"),
)
"""The targets of issue #11 measured in a run (the LLM-only baseline comparison is benchmarks/ensemble.py's)."""


class EnsembleReport(ReportHooks):
    """Report hooks of one ensemble run: result rows per test item, and the ensemble's sections."""

    results_filename = "results.csv"

    def __init__(self, kind: EnsembleExperiment) -> None:
        self.kind = kind
        self.metrics: EnsembleMetrics | None = None
        self.review: ReviewQueueRecord | None = None
        self.splits: SplitsRecord | None = None

    def write(self, inputs: StageInputs, test: Sequence[LabelledItem]) -> ReportRecord:
        """Write the run folder from the run's records; returns where."""
        from pipeline.experiments.ensemble_stages import FINAL, LLM, METRICS, REVIEW, SOURCE
        from pipeline.report.runs import ReportInputs, write_report
        from pipeline.stats.metrics import accuracy_with_ci

        context = inputs.context
        task = self.kind.task
        self.metrics = inputs.record(METRICS, EnsembleMetrics)
        self.review = inputs.record(REVIEW, ReviewQueueRecord)
        self.splits = inputs.record(SOURCE, SplitsRecord)
        final = inputs.record(FINAL, FinalPassRecord)
        responses = inputs.responses(LLM, required=False)
        votes = {vote.item_id: vote for vote in final.votes}
        items = [
            Item(item.item_id, {"text": item.text, "slices": ", ".join(task.slices_of(item.text))}, item.label)
            for item in test
        ]
        rows: list[dict[str, Any]] = []
        for decision in final.final_pass.decisions:
            vote = votes.get(decision.item_id)
            status = "ok" if decision.settled else "missing" if vote is not None and not vote.answered else "abstained"
            rows.append(
                {
                    "item_id": decision.item_id,
                    "label": decision.label,
                    "status": status,
                    "reason": decision.reason,
                    "tier": decision.tier,
                    "best_guess": decision.best_guess,
                    "confidence": decision.confidence,
                    "raw_response": vote.raw_response if vote else "",
                    "model_used": vote.model_used if vote else "",
                    "alias": "ensemble",
                    "repeat": 0,
                }
            )
        gold = [item.label for item in test]
        accuracy = accuracy_with_ci(gold, [row["label"] for row in rows])
        records = responses.answers() if responses.current else {}
        answered = [r for r in records.values() if r is not None]
        summary = ModelMetrics(
            items=len(rows),
            valid=sum(row["status"] == "ok" for row in rows),
            invalid=sum(row["status"] == "abstained" for row in rows),
            missing=sum(row["status"] == "missing" for row in rows),
            cost_usd=self.metrics.llm_cost_usd,
            prompt_tokens=sum(r.usage.get("prompt_tokens", 0) for r in answered),
            completion_tokens=sum(r.usage.get("completion_tokens", 0) for r in answered),
            accuracy=asdict(accuracy),
            labelled=len(gold),
        )
        evaluation = {
            "experiment": context.config.name,
            "prompt_version": self.kind.prompts.version,
            "models": {"ensemble": summary.to_json()},
            "ensemble": self.metrics.to_json(),
            "review_queue": self.review.to_json(),
            "splits": self.splits.to_json(),
        }
        system = self.kind.llm_messages("{text}", [])[0]["content"]
        written = write_report(
            ReportInputs(
                config=context.config,
                zoo=context.zoo,
                aliases=context.aliases(),
                overrides=context.overrides,
                hooks=self,
                prompt_version=self.kind.prompts.version,
                prompt_templates={**self.kind.prompts.to_json(), "system_as_sent": system},
                items=items,
                rows=rows,
                evaluation=evaluation,
                planned_call_ids=responses.plan.call_ids if responses.current else [],
                plan_id=responses.plan.plan_id,
                records=records,
                load_errors_path=context.snapshot_dir / "load_errors.jsonl",
                latest_pointer=context.work_dir / "latest_run_folder",
                store_root=context.store.root,
            ),
            dagster_run_id=inputs.run_id,
        )
        return ReportRecord(str(written.run_folder), str(written.report_md), written.status)

    # -- hooks ----------------------------------------------------------------------------------------------
    def result_row(self, row: dict[str, Any], item: Item | None) -> dict[str, Any]:
        """One row of results.csv: the decision, its tier and reason, the LLM's raw answer if it was asked."""
        return {
            "item_id": row["item_id"],
            "text": item.fields.get("text", "") if item else "",
            "slices": item.fields.get("slices", "") if item else "",
            "gold": item.gold if item else None,
            "label": row["label"],
            "status": row["status"],
            "tier": row["tier"],
            "best_guess": row["best_guess"],
            "confidence": row["confidence"],
            "reason": row["reason"],
            "llm_raw_response": row["raw_response"],
            "model_used": row["model_used"],
        }

    def report_sections(
        self, evaluation: dict[str, Any], rows: list[dict[str, Any]], items: Sequence[Item], outputs_dir: Path
    ) -> list[str]:
        """The ensemble's figures against targets, slices, plots, tiers, labeling functions, review queue."""
        metrics, review, splits = self.metrics, self.review, self.splits
        assert metrics is not None and review is not None and splits is not None
        values = metrics.to_json()
        lines = ["## Ensemble figures (test split)", "", "| figure | value | target | |", "|---|---|---|---|"]
        for target in TARGETS:
            value = values.get(target.field)
            shown = "n/a" if value is None else target.fmt.format(value)
            lines.append(f"| {target.name} | {shown} | {target.text} | {'ok' if target.met(value) else 'MISSED'} |")
        lines += [
            "",
            f"- test items: {metrics.test_items}; settled {metrics.coverage:.3f} of them, selective error among "
            f"them {metrics.selective_error:.4f}; macro F1 on settled items {metrics.macro_f1_settled:.4f}",
            f"- worst slice: {metrics.worst_slice} ({_num(metrics.worst_slice_f1)}); among slices with at least "
            f"{metrics.min_label_support} gold items of every label: {metrics.worst_supported_slice} "
            f"({_num(metrics.worst_supported_slice_f1)})",
            f"- Brier {metrics.brier:.4f}, AURC {metrics.aurc:.4f}",
            f"- LLM voter: {metrics.llm_calls} calls ({metrics.llm_answered} answered), "
            f"cost ${metrics.llm_cost_usd:.6f}, ${metrics.cost_per_prediction_usd:.8f} per prediction",
            f"- latency p50/p95: cheap path {metrics.cheap_latency_p50_ms:.1f}/{metrics.cheap_latency_p95_ms:.1f} ms; "
            f"with the LLM {_num(metrics.llm_latency_p50_ms, '{:.1f}')}/"
            f"{_num(metrics.llm_latency_p95_ms, '{:.1f}')} ms",
            f"- splits: {splits.counts} (seed {splits.seed}, sha256 {splits.sha256[:12]}); reviewed labels joined "
            f"from feedback: {splits.reviewed_labels} ({', '.join(splits.feedback_files) or 'no feedback file'})",
            "",
            "| tier | first pass | final |",
            "|---|---|---|",
        ]
        for tier in sorted(set(metrics.tiers_first) | set(metrics.tiers_final)):
            lines.append(f"| {tier} | {metrics.tiers_first.get(tier, 0)} | {metrics.tiers_final.get(tier, 0)} |")
        labels = sorted({label for s in metrics.slices for label in s.support})
        lines += ["", "## Slices", "", f"| slice | items | macro F1 | {' | '.join(labels)} |"]
        lines.append("|---" * (3 + len(labels)) + "|")
        for s in metrics.slices:
            support = " | ".join(str(s.support.get(label, 0)) for label in labels)
            lines.append(f"| {s.name} | {s.n} | {_num(s.macro_f1)} | {support} |")
        lines += ["", *self._plots(metrics, outputs_dir)]
        if metrics.labeling_functions:
            lines += ["## Labeling functions (Snorkel LFAnalysis, calibration split)", ""]
            lines += [
                "| function | label | coverage | overlaps | conflicts | empirical accuracy |",
                "|---|---|---|---|---|---|",
            ]
            for lf in metrics.labeling_functions:
                lines.append(
                    f"| {lf['name']} | {lf['label']} | {lf['coverage']:.3f} | {lf['overlaps']:.3f} | "
                    f"{lf['conflicts']:.3f} | {_num(lf['empirical_accuracy'], '{:.3f}')} |"
                )
            lines.append("")
        if metrics.classical_variants:
            variants = ", ".join(f"{name} {ece:.4f}" for name, ece in sorted(metrics.classical_variants.items()))
            lines += [f"Classical variants by calibration-split ECE: {variants}.", ""]
        for source in (Path(review.csv), Path(review.jsonl)):
            if source.is_file():
                shutil.copy2(source, outputs_dir / source.name)
        lines += [
            "## Review queue",
            "",
            f"{review.rows} items ({review.abstained} abstentions, {review.disagreements} disagreements): "
            f"outputs/{Path(review.csv).name} and outputs/{Path(review.jsonl).name}. Fill in `reviewed_label` (and "
            "`reviewer`) and list the file under `ensemble.feedback`: the next run joins the labels to the gold set "
            "with their provenance.",
            "",
        ]
        return lines

    def _plots(self, metrics: EnsembleMetrics, outputs_dir: Path) -> list[str]:
        from pipeline.ensemble.metrics import CalibrationBin, CalibrationReport, plot_reliability_diagram

        bins = tuple(CalibrationBin(*b) for b in metrics.calibration_bins)
        calibration = CalibrationReport(metrics.ece, bins, sum(b.count for b in bins))
        plot_reliability_diagram(calibration, outputs_dir / "reliability.png", f"{self.kind.task.name} stacker")
        _plot_risk_coverage(metrics.risk_coverage, outputs_dir / "risk_coverage.png")
        return [
            "## Calibration and selective prediction",
            "",
            "![reliability diagram](reliability.png)",
            "",
            "![risk-coverage curve](risk_coverage.png)",
            "",
        ]


def _num(value: float | None, fmt: str = "{:.4f}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _plot_risk_coverage(points: Sequence[tuple[float, float]], path: Path) -> Path:
    """Selective error against coverage (the stacker's confidence ranks the items)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.add_subplot()
    axes.plot([p[0] for p in points], [p[1] for p in points], color="tab:blue")
    axes.axhline(0.01, linestyle="--", color="grey", label="1% selective error")
    axes.set_xlabel("coverage")
    axes.set_ylabel("selective error")
    axes.set_xlim(0, 1)
    axes.set_title("Risk-coverage (stacker)")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
