"""The stages of the classify family (classify, assign_cat) as functions of upstream records.

    source_snapshot -> llm (calls) -> extractions -> repair (calls) -> answers -> evaluation -> report
                                                                         \\-> evaluation-loop stages /

`repair` exists when `output.repair` is on; the evaluation loop's stages (hard checks, judges, canary drift,
perspectives and synthesis) when the experiment file has their section (pipeline/experiments/eval_stages.py).
Each function reads its inputs through StageInputs and returns a typed record; none calls back into a
caller. A failed or missing call is a missing row, never a crash.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pipeline.data.loaders import Item
from pipeline.data.snapshot import read_snapshot, write_snapshot
from pipeline.llm.errors import ConfigError
from pipeline.plan import CallPlan, PlannedCall
from pipeline.records import (
    AnswerRecord,
    AnswerSet,
    Evaluation,
    ModelMetrics,
    ReportRecord,
    SourceRecord,
)
from pipeline.stages import CallStage, DataStage, Stage, StageInputs
from pipeline.stats.metrics import accuracy_with_ci

if TYPE_CHECKING:
    from pipeline.experiments.base import ClassifyExperiment, ItemAnswer
    from pipeline.experiments.eval_stages import EvalStages
    from pipeline.report.runs import ReportInputs
    from pipeline.store import StoredResponse

SOURCE, PRIMARY, EXTRACTIONS, REPAIR, ANSWERS, EVALUATION, JUDGE, JUDGEMENTS, REPORT = (
    "source_snapshot",
    "llm",
    "extractions",
    "repair",
    "answers",
    "evaluation",
    "judge",
    "judgements",
    "report",
)


@dataclass(frozen=True)
class ClassifyStages:
    """Stage functions bound to one kind object (its prompts, schema and rules)."""

    kind: ClassifyExperiment

    def declare(self, extra: Sequence[Stage] = ()) -> list[Stage]:
        """The stage graph of this experiment.

        `extra`: stages a subclass adds after the family's own and before the report; those with
        role="analysis" become the report's dependencies like `evaluation` (e.g. risk_fairness's audit).
        """
        config = self.kind.config
        stages: list[Stage] = [
            DataStage(
                SOURCE,
                (),
                self.snapshot,
                SourceRecord,
                "Input items, validated, sampled and frozen as Parquet + sha256.",
                role="source",
            ),
            CallStage(
                PRIMARY,
                (SOURCE,),
                self.plan_primary,
                "One call per item (or batch of items) x model x repeat; each partition is one stored response.",
            ),
            DataStage(
                EXTRACTIONS,
                (SOURCE, PRIMARY),
                self.extract,
                AnswerSet,
                "Answers parsed and validated against the schema and business rules (first pass).",
            ),
        ]
        if config.output.repair:
            stages += [
                CallStage(
                    REPAIR,
                    (EXTRACTIONS, PRIMARY),
                    self.plan_repairs,
                    "One repair call per invalid answer: the conversation, the answer and what was wrong.",
                ),
                DataStage(
                    ANSWERS,
                    (EXTRACTIONS, PRIMARY, REPAIR),
                    self.merge_repairs,
                    AnswerSet,
                    "Final answer per item and model: valid, repaired, invalid (with its reason) or missing.",
                ),
            ]
        else:
            stages.append(
                DataStage(ANSWERS, (EXTRACTIONS,), self.without_repairs, AnswerSet, "Final answer per item and model.")
            )
        stages.append(
            DataStage(
                EVALUATION,
                (SOURCE, ANSWERS),
                self.evaluate,
                Evaluation,
                "Accuracy vs gold with Wilson CIs, validity, cost and latency per answering model.",
                role="analysis",
            )
        )
        stages += self.evaluation_stages().declare()
        stages += list(extra)
        analyses = [stage.name for stage in stages if isinstance(stage, DataStage) and stage.role == "analysis"]
        calls = [stage.name for stage in stages if isinstance(stage, CallStage)]
        stages.append(
            DataStage(
                REPORT,
                (SOURCE, ANSWERS, *analyses, *calls),
                self.report,
                ReportRecord,
                "Markdown/HTML report, results files and the lab-notebook run folder.",
                role="report",
            )
        )
        return stages

    def evaluation_stages(self) -> EvalStages:
        """The evaluation loop's optional stages (hard checks, judges, canary, perspectives)."""
        from pipeline.experiments.eval_stages import EvalStages

        return EvalStages(self)

    # -- source -----------------------------------------------------------------------------------------
    def snapshot(self, inputs: StageInputs) -> SourceRecord:
        """Load, validate and freeze the items."""
        item_set = self.kind.load_items()
        if not item_set.items:
            reasons = "; ".join(f"row {e.row_number}: {e.reason}" for e in item_set.errors[:3])
            raise ConfigError(f"experiment {self.kind.config.name!r}: no items loaded from {item_set.source} {reasons}")
        snap = write_snapshot(item_set, inputs.context.snapshot_dir)
        return SourceRecord(str(snap.path), snap.sha256, snap.rows, snap.errors, item_set.source)

    def items(self, inputs: StageInputs) -> list[Item]:
        """Items of the current snapshot."""
        return read_snapshot(inputs.context.snapshot_dir)

    # -- primary calls ----------------------------------------------------------------------------------
    def plan_primary(self, inputs: StageInputs) -> CallPlan:
        """Every call: aliases x repeats x chunks of items."""
        context = inputs.context
        calls = self.kind.planned_calls(self.items(inputs), context.aliases(), context.zoo)
        return CallPlan.build(context.config.name, PRIMARY, calls, inputs.input_digests([SOURCE]))

    def extract(self, inputs: StageInputs) -> AnswerSet:
        """Parse and validate every stored answer of the plan (no calls here)."""
        responses = inputs.responses(PRIMARY)
        rows: list[AnswerRecord] = []
        for call in responses.plan.calls:
            record = responses.answer(call.call_id)
            if record is None:
                rows.extend(missing_rows(call))
                continue
            rows.extend(
                answer_record(answer, call, record, "ok" if answer.valid else "invalid")
                for answer in self.kind.interpret(call, record.text, record.model_used)
            )
        return AnswerSet(tuple(rows))

    # -- repairs ----------------------------------------------------------------------------------------
    def _to_repair(self, inputs: StageInputs) -> list[tuple[PlannedCall, str, list[str]]]:
        """(planned call, its invalid text, reasons) for each call with an invalid answer."""
        by_id = inputs.responses(PRIMARY).plan.by_id()
        rows_by_call: dict[str, list[AnswerRecord]] = defaultdict(list)
        for row in inputs.record(EXTRACTIONS, AnswerSet).rows:
            rows_by_call[row.call_id].append(row)
        out = []
        for call_id, rows in rows_by_call.items():
            invalid = [row for row in rows if row.status == "invalid"]
            if invalid and call_id in by_id:
                out.append((by_id[call_id], invalid[0].raw_response, [row.reason for row in invalid]))
        return out

    def plan_repairs(self, inputs: StageInputs) -> CallPlan:
        """One repair call per call with an invalid answer."""
        calls = [
            PlannedCall(self.kind.repair_spec(call, text, reasons), call.item_ids)
            for call, text, reasons in self._to_repair(inputs)
        ]
        return CallPlan.build(inputs.context.config.name, REPAIR, calls, inputs.input_digests([EXTRACTIONS]))

    def merge_repairs(self, inputs: StageInputs) -> AnswerSet:
        """Extraction rows, with each invalid answer replaced by its repair's answer when that is valid."""
        first = inputs.record(EXTRACTIONS, AnswerSet)
        repairs = inputs.responses(REPAIR, required=False)
        if not repairs.current:
            return AnswerSet(first.rows)  # the repair plan was made from other extractions: not ours
        replaced: dict[tuple[str, str], AnswerRecord] = {}
        repair_calls = 0
        for call, text, reasons in self._to_repair(inputs):
            spec = self.kind.repair_spec(call, text, reasons)
            record = repairs.answer(spec.call_id)
            rows = [row for row in first.rows if row.call_id == call.call_id]
            if record is None:
                for row in rows:
                    note = "" if row.status == "ok" else "repair call has no stored response (failed or not run)"
                    replaced[(row.call_id, row.item_id)] = row.with_changes(
                        repair_call_id=spec.call_id, reason=note or row.reason
                    )
                continue
            repair_calls += 1
            second = {answer.item_id: answer for answer in self.kind.interpret(call, record.text, record.model_used)}
            for row in rows:
                retry = second.get(row.item_id)
                if row.status == "ok":
                    new = row.with_changes(repair_call_id=spec.call_id)
                elif retry is not None and retry.valid:
                    new = answer_record(retry, call, record, "ok").with_changes(
                        repaired=True, first_raw_response=row.raw_response, repair_call_id=spec.call_id
                    )
                else:
                    reason = f"after repair: {retry.reason if retry else row.reason}"
                    new = row.with_changes(reason=reason, repair_call_id=spec.call_id)
                replaced[(row.call_id, row.item_id)] = new
        merged = tuple(replaced.get((row.call_id, row.item_id), row) for row in first.rows)
        return AnswerSet(merged, repair_calls)

    def without_repairs(self, inputs: StageInputs) -> AnswerSet:
        """Repairs are off: the extractions are the answers."""
        return inputs.record(EXTRACTIONS, AnswerSet)

    # -- evaluation -------------------------------------------------------------------------------------
    def call_records(self, inputs: StageInputs, rows: Iterable[AnswerRecord] = ()) -> dict[str, StoredResponse | None]:
        """Answers of every call this run planned (primary, repair, judge...), keyed by planned call id."""
        out: dict[str, StoredResponse | None] = {}
        for stage in inputs.graph.call_stages:
            responses = inputs.responses(stage.name, required=stage.name == PRIMARY)
            if stage.name != PRIMARY and not responses.current:
                continue
            out.update(responses.answers())
        for row in rows:  # repair calls of a stale plan are still this run's answers
            if row.repair_call_id and row.repair_call_id not in out:
                out[row.repair_call_id] = inputs.context.store.get_answer(row.repair_call_id)
        return out

    def evaluate(self, inputs: StageInputs) -> Evaluation:
        """Accuracy against gold (Wilson CI) per answering model, validity counts, cost and latency."""
        gold = {item.item_id: item.gold for item in self.items(inputs)}
        rows = inputs.record(ANSWERS, AnswerSet).rows
        by_alias: dict[str, list[AnswerRecord]] = defaultdict(list)
        for row in rows:
            by_alias[row.alias].append(row)
        records = [r for r in self.call_records(inputs, rows).values() if r is not None]
        models: dict[str, ModelMetrics] = {}
        for alias, alias_rows in sorted(by_alias.items()):
            labelled = [row for row in alias_rows if gold.get(row.item_id) is not None]
            accuracy = None
            if labelled:
                interval = accuracy_with_ci([gold[row.item_id] for row in labelled], [row.label for row in labelled])
                accuracy = asdict(interval)
            dict_rows = [row.to_json() for row in labelled]
            alias_records = [r for r in records if r.alias_used == alias]
            latencies = sorted(r.latency_s for r in alias_records)
            models[alias] = ModelMetrics(
                items=len(alias_rows),
                valid=sum(row.status == "ok" for row in alias_rows),
                invalid=sum(row.status == "invalid" for row in alias_rows),
                missing=sum(row.status == "missing" for row in alias_rows),
                cost_usd=sum(r.cost_usd for r in alias_records),
                prompt_tokens=sum(r.usage.get("prompt_tokens", 0) for r in alias_records),
                completion_tokens=sum(r.usage.get("completion_tokens", 0) for r in alias_records),
                accuracy=accuracy,
                labelled=len(labelled),
                latency_p50_s=latencies[len(latencies) // 2] if latencies else None,
                latency_p95_s=latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] if latencies else None,
                extra=self.kind.extra_metrics(dict_rows, gold),
            )
        return Evaluation(self.kind.config.name, self.kind.prompts.version, models)

    # -- report -----------------------------------------------------------------------------------------
    def report(self, inputs: StageInputs) -> ReportRecord:
        """The run folder and the reports (pipeline/report/runs.py)."""
        from pipeline.report.runs import write_report

        written = write_report(self.report_inputs(inputs), dagster_run_id=inputs.run_id)
        return ReportRecord(str(written.run_folder), str(written.report_md), written.status)

    def report_inputs(self, inputs: StageInputs) -> ReportInputs:
        """What the report is written from: the records of this run's stages (a subclass may add to it)."""
        from pipeline.report.runs import ReportInputs

        context = inputs.context
        answers = inputs.record(ANSWERS, AnswerSet)
        evaluation = inputs.record(EVALUATION, Evaluation)
        sections = self.evaluation_stages().report_sections(inputs, answers)
        primary = inputs.responses(PRIMARY).plan
        return ReportInputs(
            config=context.config,
            zoo=context.zoo,
            aliases=context.aliases(),
            overrides=context.overrides,
            hooks=self.kind,
            prompt_version=self.kind.prompts.version,
            prompt_templates=self.kind.prompts.to_json(),
            items=self.items(inputs),
            rows=[row.to_json() for row in answers.rows],
            evaluation=evaluation.to_json(),
            planned_call_ids=primary.call_ids,
            plan_id=primary.plan_id,
            records=self.call_records(inputs, answers.rows),
            load_errors_path=context.snapshot_dir / "load_errors.jsonl",
            latest_pointer=context.work_dir / "latest_run_folder",
            extra_sections=sections,
            store_root=context.store.root,
        )


def missing_rows(call: PlannedCall) -> list[AnswerRecord]:
    """One 'missing' row per item of a call without a stored response."""
    return [
        AnswerRecord(
            item_id=item_id,
            call_id=call.call_id,
            alias=call.spec.alias,
            requested_alias=call.spec.alias,
            repeat=call.spec.repeat,
            label=None,
            answer=None,
            status="missing",
            reason="no stored response (the call failed or has not run): assay resume",
            raw_response="",
            model_used="",
        )
        for item_id in call.item_ids
    ]


def answer_record(answer: ItemAnswer, call: PlannedCall, record: StoredResponse, status: str) -> AnswerRecord:
    """An item's answer as a record, credited to the model that answered."""
    return AnswerRecord(
        item_id=answer.item_id,
        call_id=call.call_id,
        alias=record.alias_used or call.spec.alias,
        requested_alias=call.spec.alias,
        repeat=answer.repeat,
        label=answer.label if status == "ok" else None,
        answer=answer.answer,
        status="ok" if status == "ok" else "invalid",
        reason=answer.reason,
        raw_response=answer.raw_response,
        model_used=answer.model_used,
        answered_call_id=record.call_id,
    )


def gold_of(items: Iterable[Item]) -> Mapping[str, str | None]:
    """item id -> gold label."""
    return {item.item_id: item.gold for item in items}
