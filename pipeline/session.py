"""ExperimentSession: the stages of one experiment run, free of Dagster.

Each Dagster asset body is one call into this class: snapshot -> plan -> (responses via CallRunner) ->
extract -> evaluate -> report. State between stages lives in files under `<assay home>/work/<name>/` and
in the ResponseStore, so any stage can be re-run alone and a missing call is a missing row, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import (
    AUTO_MODEL,
    ExperimentConfig,
    ModelZoo,
    assay_home,
    load_experiment,
    load_model_zoo,
)
from pipeline.data.loaders import Item, ItemSet
from pipeline.data.snapshot import Snapshot, read_snapshot, write_snapshot
from pipeline.experiments import ClassifyExperiment, ItemAnswer, experiment_for
from pipeline.llm.client import DEFAULT_KEY_ENV, LLMClient
from pipeline.llm.cost import Budget, estimate_cost
from pipeline.llm.errors import AssayError, ConfigError
from pipeline.plan import CallPlan, PlannedCall
from pipeline.stats.metrics import accuracy_with_ci
from pipeline.store import ResponseStore, StoredResponse


@dataclass(frozen=True)
class PlanSummary:
    """What `plan` produced: the calls and their upper-bound cost."""

    plan: CallPlan
    estimated_cost_usd: float
    budget_usd: float | None
    already_stored: int
    spent_usd: float

    @property
    def within_budget(self) -> bool:
        """True when what this plan has cost so far plus the estimate of the calls still to send fits."""
        return self.budget_usd is None or self.spent_usd + self.estimated_cost_usd <= self.budget_usd


@dataclass(frozen=True)
class CallStatus:
    """Done / failed / missing calls of the current plan, and spend so far."""

    planned: int
    done: int
    missing: list[str]
    spent_usd: float


@dataclass
class ExtractionSummary:
    """Counts of the extraction stage."""

    items: int = 0
    valid: int = 0
    invalid: int = 0
    missing: int = 0
    repaired: int = 0
    repair_calls: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)


class ExperimentSession:
    """One experiment's config, model zoo, store, client and work folder, with its stages as methods."""

    def __init__(
        self,
        name: str,
        overrides: Sequence[str] = (),
        *,
        home: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.environ = os.environ if environ is None else environ
        self.overrides = list(overrides)
        self.config: ExperimentConfig = load_experiment(name, self.overrides, environ=self.environ)
        self.zoo: ModelZoo = load_model_zoo(overrides=self.overrides)
        self.home = home or assay_home()
        self.store = ResponseStore(self.home / "store")
        self.work_dir = self.home / "work" / self.config.name
        self.experiment: ClassifyExperiment = experiment_for(self.config)
        self.experiment.zoo = self.zoo  # report hooks price calls with the zoo as overridden for this run

    # -- paths ------------------------------------------------------------------------------------------
    @property
    def snapshot_dir(self) -> Path:
        """Folder of the input snapshot."""
        return self.work_dir / "snapshot"

    @property
    def plan_path(self) -> Path:
        """The current call plan."""
        return self.work_dir / "call_plan.jsonl"

    @property
    def extractions_path(self) -> Path:
        """One JSON line per item answer."""
        return self.work_dir / "extractions.jsonl"

    @property
    def evaluation_path(self) -> Path:
        """Metrics of the last evaluation."""
        return self.work_dir / "evaluation.json"

    # -- models -----------------------------------------------------------------------------------------
    def aliases(self) -> list[str]:
        """The experiment's model aliases; 'auto' = the zoo default if its key is set, else `local`."""
        resolved = []
        for alias in self.config.models:
            if alias == AUTO_MODEL:
                default = self.zoo.get(self.zoo.default)
                key_env = default.api_key_env or DEFAULT_KEY_ENV.get(default.provider, "")
                alias = self.zoo.default if self.environ.get(key_env) else "local"
            self.zoo.get(alias)  # unknown alias -> ConfigError listing the known ones
            resolved.append(alias)
        return resolved

    def client(self, budget: Budget | None = None) -> LLMClient:
        """An LLMClient over this session's zoo and store."""
        return LLMClient(self.zoo, self.store, budget=budget, environ=self.environ)

    def budget(self, plan: CallPlan | None = None) -> Budget:
        """The run budget, counting what this plan's calls have already cost (resume keeps the limit)."""
        spent = self.status(plan).spent_usd if plan is not None else 0.0
        return Budget(self.config.budget.max_cost_usd, already_spent_usd=spent)

    # -- stage 1: snapshot ------------------------------------------------------------------------------
    def snapshot(self) -> tuple[Snapshot, ItemSet]:
        """Load, validate and freeze the items."""
        item_set = self.experiment.load_items()
        if not item_set.items:
            reasons = "; ".join(f"row {e.row_number}: {e.reason}" for e in item_set.errors[:3])
            raise ConfigError(f"experiment {self.config.name!r}: no items loaded from {item_set.source} {reasons}")
        return write_snapshot(item_set, self.snapshot_dir), item_set

    def items(self) -> list[Item]:
        """Items of the current snapshot."""
        return read_snapshot(self.snapshot_dir)

    # -- stage 2: plan ----------------------------------------------------------------------------------
    def plan(self) -> PlanSummary:
        """Build and save the call plan; estimate the cost of the calls not yet stored."""
        plan = self.experiment.plan(self.items(), self.aliases(), self.zoo)
        plan.save(self.plan_path)
        stored = self.store.stored_ids()
        estimate = sum(
            estimate_cost(call.spec, self.zoo.get(call.spec.alias)).usd
            for call in plan.calls
            if call.call_id not in stored
        )
        already = sum(1 for call in plan.calls if call.call_id in stored)
        spent = self.status(plan).spent_usd if already else 0.0
        return PlanSummary(plan, estimate, self.config.budget.max_cost_usd, already, spent)

    def expected_calls(self, *, resuming: bool = False) -> int:
        """About how many calls the next run will send, cheaply (no rendering): a resumed run's missing
        calls, else items x models x repeats / items per prompt. Decides whether to start a call worker."""
        if resuming:
            if not self.plan_path.exists():
                return 0
            stored = self.store.stored_ids()  # a folder listing; status() would read every record
            return sum(1 for call_id in self.load_plan().call_ids if call_id not in stored)
        items = len(self.experiment.load_items().items)
        per_prompt = self.config.run.items_per_prompt
        return -(-items // per_prompt) * len(self.aliases()) * self.config.params.repeats

    def load_plan(self) -> CallPlan:
        """The current plan (written by `plan`)."""
        return CallPlan.load(self.plan_path)

    # -- status -----------------------------------------------------------------------------------------
    def status(self, plan: CallPlan | None = None) -> CallStatus:
        """Which calls of the plan have stored responses, and what they cost."""
        plan = plan or self.load_plan()
        stored = self.store.stored_ids()
        done_ids = [call_id for call_id in plan.call_ids if call_id in stored]
        spent = 0.0
        for call_id in done_ids:
            record = self.store.get(call_id)
            if record is not None:
                spent += record.cost_usd
        missing = [call_id for call_id in plan.call_ids if call_id not in stored]
        return CallStatus(len(plan.calls), len(done_ids), missing, spent)

    # -- stage 4: extraction ----------------------------------------------------------------------------
    def extract(self, *, repair: bool | None = None) -> ExtractionSummary:
        """Parse and validate every stored answer of the plan; one repair call per invalid answer."""
        plan = self.load_plan()
        repair = self.config.output.repair if repair is None else repair
        answers: list[dict[str, Any]] = []
        summary = ExtractionSummary()
        to_repair: list[tuple[PlannedCall, StoredResponse, list[ItemAnswer]]] = []
        for call in plan.calls:
            record = self.store.get(call.call_id)
            if record is None:
                answers.extend(_missing_rows(call))
                continue
            item_answers = self.experiment.interpret(call, record.text, record.model_used)
            if repair and any(not answer.valid for answer in item_answers):
                to_repair.append((call, record, item_answers))
            else:
                answers.extend(_answer_row(answer, "ok" if answer.valid else "invalid") for answer in item_answers)
        if to_repair:
            repaired_rows, repair_calls = asyncio.run(self._repair_all(to_repair))
            answers.extend(repaired_rows)
            summary.repair_calls = repair_calls
        _write_jsonl(self.extractions_path, answers)
        for row in answers:
            summary.items += 1
            if row["status"] == "ok":
                summary.valid += 1
                summary.repaired += int(row["repaired"])
            elif row["status"] == "invalid":
                summary.invalid += 1
                key = row["reason"].split(":")[0][:60]
                summary.invalid_reasons[key] = summary.invalid_reasons.get(key, 0) + 1
            else:
                summary.missing += 1
        return summary

    async def _repair_all(
        self, pending: list[tuple[PlannedCall, StoredResponse, list[ItemAnswer]]]
    ) -> tuple[list[dict[str, Any]], int]:
        client = self.client(self.budget())
        rows: list[dict[str, Any]] = []
        calls = 0

        async def repair_one(
            call: PlannedCall, record: StoredResponse, first: list[ItemAnswer]
        ) -> list[dict[str, Any]]:
            nonlocal calls
            reasons = [answer.reason for answer in first if not answer.valid]
            spec = self.experiment.repair_spec(call, record.text, reasons)
            try:
                result = await client.complete(spec)
            except AssayError as exc:
                return [
                    _answer_row(answer, "ok" if answer.valid else "invalid", note=f"repair call failed: {exc}")
                    for answer in first
                ]
            calls += 0 if result.from_store else 1
            tag = {"repair_call_id": spec.call_id}  # so the repair's cost is counted with the run's
            second = {
                answer.item_id: answer for answer in self.experiment.interpret(call, result.text, result.model_used)
            }
            out = []
            for answer in first:
                if answer.valid:
                    out.append({**_answer_row(answer, "ok"), **tag})
                    continue
                retry = second.get(answer.item_id)
                if retry is not None and retry.valid:
                    out.append({**_answer_row(retry, "ok", repaired=True, first_raw=answer.raw_response), **tag})
                else:
                    reason = f"after repair: {retry.reason if retry else answer.reason}"
                    out.append({**_answer_row(answer, "invalid", note=reason), **tag})
            return out

        for batch in await asyncio.gather(*(repair_one(*entry) for entry in pending)):
            rows.extend(batch)
        return rows, calls

    def call_records(
        self, plan: CallPlan | None = None, rows: list[dict[str, Any]] | None = None
    ) -> dict[str, StoredResponse | None]:
        """Stored records of the plan's calls and of the repair calls extraction made (None = not stored)."""
        plan = plan or self.load_plan()
        rows = self.extraction_rows() if rows is None else rows
        call_ids = list(
            dict.fromkeys([*plan.call_ids, *(r["repair_call_id"] for r in rows if r.get("repair_call_id"))])
        )
        return {call_id: self.store.get(call_id) for call_id in call_ids}

    def extraction_rows(self) -> list[dict[str, Any]]:
        """Rows written by `extract`."""
        if not self.extractions_path.exists():
            return []
        return [json.loads(line) for line in self.extractions_path.read_text(encoding="utf-8").splitlines() if line]

    # -- stage 5: evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Accuracy against gold (Wilson CI) per model alias, validity counts, cost and latency."""
        gold = {item.item_id: item.gold for item in self.items()}
        rows = self.extraction_rows()
        by_alias: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_alias[row["alias"]].append(row)
        plan = self.load_plan()
        records = self.call_records(plan, rows)
        result: dict[str, Any] = {
            "experiment": self.config.name,
            "prompt_version": self.experiment.prompts.version,
            "models": {},
        }
        for alias, alias_rows in sorted(by_alias.items()):
            labelled = [row for row in alias_rows if gold.get(row["item_id"]) is not None]
            metrics: dict[str, Any] = {
                "items": len(alias_rows),
                "valid": sum(row["status"] == "ok" for row in alias_rows),
                "invalid": sum(row["status"] == "invalid" for row in alias_rows),
                "missing": sum(row["status"] == "missing" for row in alias_rows),
            }
            if labelled:
                interval = accuracy_with_ci(
                    [gold[row["item_id"]] for row in labelled], [row["label"] for row in labelled]
                )
                metrics["accuracy"] = asdict(interval)
                metrics["labelled"] = len(labelled)
            metrics.update(self.experiment_metrics(labelled, gold))
            alias_records = [r for r in records.values() if r is not None and r.request.get("alias") == alias]
            metrics["cost_usd"] = sum(r.cost_usd for r in alias_records)
            metrics["prompt_tokens"] = sum(r.usage.get("prompt_tokens", 0) for r in alias_records)
            metrics["completion_tokens"] = sum(r.usage.get("completion_tokens", 0) for r in alias_records)
            latencies = sorted(r.latency_s for r in alias_records)
            if latencies:
                metrics["latency_p50_s"] = latencies[len(latencies) // 2]
                metrics["latency_p95_s"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
            result["models"][alias] = metrics
        self.evaluation_path.write_text(json.dumps(result, indent=2))
        return result

    def experiment_metrics(self, rows: list[dict[str, Any]], gold: Mapping[str, str | None]) -> dict[str, Any]:
        """Kind-specific metrics (the experiment object may add its own)."""
        hook = getattr(self.experiment, "extra_metrics", None)
        return hook(rows, gold) if hook else {}


def _missing_rows(call: PlannedCall) -> Iterable[dict[str, Any]]:
    for item_id in call.item_ids:
        yield {
            "item_id": item_id,
            "call_id": call.call_id,
            "alias": call.spec.alias,
            "repeat": call.spec.repeat,
            "label": None,
            "answer": None,
            "status": "missing",
            "reason": "no stored response (the call failed or has not run): assay resume",
            "raw_response": "",
            "model_used": "",
            "repaired": False,
        }


def _answer_row(
    answer: ItemAnswer, status: str, *, repaired: bool = False, note: str = "", first_raw: str = ""
) -> dict[str, Any]:
    row = {
        "item_id": answer.item_id,
        "call_id": answer.call_id,
        "alias": answer.alias,
        "repeat": answer.repeat,
        "label": answer.label if status == "ok" else None,
        "answer": answer.answer,
        "status": status,
        "reason": note or answer.reason,
        "raw_response": answer.raw_response,
        "model_used": answer.model_used,
        "repaired": repaired,
    }
    if first_raw:
        row["first_raw_response"] = first_raw
    return row


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
