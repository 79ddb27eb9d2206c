"""Asset factory: one experiment file -> one asset group, its checks and its jobs.

source_snapshot -> llm_calls -> llm_responses (one partition per call) -> extractions -> evaluation -> report.
Every body is a few lines over pipeline.session.ExperimentSession.
"""

import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    asset_check,
    define_asset_job,
    in_process_executor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from pipeline.config import ExperimentConfig, load_experiment
from pipeline.runner import CallOutcome
from pipeline.worker import call_runner_for
from resources.assay import AssayResource

MAX_FAILURE_LINES = 20


@dataclass(frozen=True)
class ExperimentDefinitions:
    """Everything one experiment contributes to the code location."""

    config: ExperimentConfig
    assets: list[AssetsDefinition]
    checks: list[AssetChecksDefinition]
    jobs: list[UnresolvedAssetJobDefinition]
    calls_partitions: DynamicPartitionsDefinition


def calls_partitions_name(config: ExperimentConfig) -> str:
    """Name of the dynamic partitions of an experiment's calls."""
    return f"{config.asset_prefix}__calls"


def job_names(config: ExperimentConfig) -> dict[str, str]:
    """The jobs of an experiment: all, plan, calls, analysis."""
    prefix = config.asset_prefix
    return {
        "all": f"{prefix}_job",
        "plan": f"{prefix}_plan_job",
        "calls": f"{prefix}_calls_job",
        "analysis": f"{prefix}_analysis_job",
    }


def _watch_interrupts(stop: threading.Event) -> threading.Event:
    """Set `stop` when Dagster captures SIGINT/SIGTERM; returns an event that ends the watch.

    During execution Dagster only records a signal (its handler sets a flag) and interrupts the run
    between steps; the calls inside this step must learn of it themselves to stop starting new ones.
    """
    from dagster._utils.interrupts import check_captured_interrupt

    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            if check_captured_interrupt():
                stop.set()
                return

    threading.Thread(target=watch, name="assay-interrupt-watch", daemon=True).start()
    return done


def _call_metadata(outcome: CallOutcome) -> dict[str, Any]:
    result = outcome.result
    assert result is not None
    return {
        "model": result.model_used,
        "alias": result.alias_used,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "cost_usd": round(result.record.cost_usd, 8),
        "latency_s": round(result.latency_s, 4),
        "attempts": result.attempts,
        "from_store": result.from_store,
    }


def build_experiment_definitions(name: str) -> ExperimentDefinitions:
    """Build the asset group of experiment `name` (configs/experiments/<name>.yaml)."""
    config = load_experiment(name)
    prefix = config.asset_prefix
    partitions = DynamicPartitionsDefinition(name=calls_partitions_name(config))
    common: dict[str, Any] = {"key_prefix": [prefix], "group_name": prefix}

    @asset(
        name="source_snapshot", description="Input items, validated, sampled and frozen as Parquet + sha256.", **common
    )
    def source_snapshot(assay: AssayResource) -> MaterializeResult:
        snapshot, item_set = assay.session(name).snapshot()
        return MaterializeResult(
            metadata={
                "rows": snapshot.rows,
                "load_errors": snapshot.errors,
                "sha256": snapshot.sha256,
                "path": MetadataValue.path(str(snapshot.path)),
                "source": item_set.source,
            }
        )

    @asset_check(asset=source_snapshot, name="items_have_unique_ids_and_text", blocking=True)
    def items_check(assay: AssayResource) -> AssetCheckResult:
        items = assay.session(name).items()
        ids = [item.item_id for item in items]
        duplicates = len(ids) - len(set(ids))
        empty = sum(1 for item in items if not str(item.fields.get("text", "")).strip())
        return AssetCheckResult(
            passed=duplicates == 0 and empty == 0 and len(items) > 0,
            metadata={"items": len(items), "duplicate_ids": duplicates, "empty_text": empty},
        )

    @asset(
        name="llm_calls",
        deps=[source_snapshot],
        description="The call plan (prompts x models x repeats); one dynamic partition per call; cost estimate.",
        **common,
    )
    def llm_calls(context: AssetExecutionContext, assay: AssayResource) -> MaterializeResult:
        summary = assay.session(name).plan()
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new_keys = [key for key in summary.plan.call_ids if key not in known]
        if new_keys:
            context.instance.add_dynamic_partitions(partitions.name, new_keys)  # one call for all keys
        return MaterializeResult(
            metadata={
                "plan_id": summary.plan.plan_id,
                "calls": len(summary.plan.calls),
                "already_stored": summary.already_stored,
                "new_partitions": len(new_keys),
                "estimated_cost_usd": round(summary.estimated_cost_usd, 6),
                "spent_usd": round(summary.spent_usd, 6),
                "budget_usd": summary.budget_usd if summary.budget_usd is not None else "unlimited",
            }
        )

    @asset_check(asset=llm_calls, name="estimated_cost_within_budget", blocking=True)
    def budget_check(context: AssetCheckExecutionContext, assay: AssayResource) -> AssetCheckResult:
        session = assay.session(name)
        event = context.instance.get_latest_materialization_event(AssetKey([prefix, "llm_calls"]))
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        estimate = float(metadata["estimated_cost_usd"].value) if "estimated_cost_usd" in metadata else 0.0
        budget = session.config.budget.max_cost_usd
        spent = float(metadata["spent_usd"].value) if "spent_usd" in metadata else 0.0
        fits = budget is None or spent + estimate <= budget or not session.config.budget.block_on_estimate
        return AssetCheckResult(
            passed=fits,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "estimated_cost_usd": estimate,
                "spent_usd": spent,
                "budget_usd": budget if budget is not None else "unlimited",
            },
            description=None
            if fits
            else f"spent ${spent:.4f} + estimated ${estimate:.4f} for the calls still to send exceeds the budget "
            f"${budget:.4f}; raise --max-cost or lower --limit",
        )

    # backfill_policy is marked beta in Dagster 1.13; it is the documented way to batch partitions per run.
    warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=Warning)

    @asset(
        name="llm_responses",
        deps=[llm_calls],
        partitions_def=partitions,
        output_required=False,
        io_manager_key="assay_null_io",  # responses live in the ResponseStore, not in Dagster's IO manager
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=config.run.batch_size),
        description="One stored LLM response per call partition (ResponseStore); failed calls stay FAILED.",
        **common,
    )
    def llm_responses(context: AssetExecutionContext, assay: AssayResource) -> Iterator[Any]:
        session = assay.session(name)
        plan = session.load_plan()
        keys = context.partition_keys if context.has_partition_key_range else plan.call_ids
        by_id = plan.by_id()
        stale = [key for key in keys if key not in by_id]
        if stale:
            context.log.warning(f"{len(stale)} partitions are not in the current plan and were skipped: {stale[:5]}")
        specs = [by_id[key].spec for key in keys if key in by_id]
        runner = call_runner_for(session.client(session.budget(plan)), len(specs))
        shown = 0
        stop = threading.Event()
        watcher = _watch_interrupts(stop)
        for outcome in runner.run(specs, stop):
            if outcome.ok:
                yield AssetMaterialization(
                    asset_key=context.asset_key, partition=outcome.call_id, metadata=_call_metadata(outcome)
                )
            elif shown < MAX_FAILURE_LINES and outcome.error_type != "BudgetExceeded":
                shown += 1
                context.log.error(f"call {outcome.call_id} failed: {outcome.error}")
        summary = runner.summary
        context.log.info(
            f"sent {summary.sent}, from store {summary.from_store}, failed {summary.failed}, "
            f"not started {summary.not_started}, spent ${summary.spent_usd:.4f}"
        )
        watcher.set()
        if summary.stopped_by == "signal":
            raise Failure(
                description=f"interrupted: no new calls were started; the calls in flight finished and are stored "
                f"({summary.sent} sent this run). Resume with: assay resume {name}"
            )
        if summary.failed or summary.not_started:
            cause = "the budget ran out" if summary.stopped_by == "budget" else f"{summary.failed} calls failed"
            raise Failure(
                description=f"{cause}; finished responses are stored. Resume with: assay resume {name}",
                metadata={"failed": summary.failed, "not_started": summary.not_started, "errors": str(summary.errors)},
            )
        if not context.has_partition_key_range:
            # A run without partition tags (`dagster job execute -j <name>_job`) covers the whole plan; an
            # Output lets the downstream steps of the same run go ahead. Range runs record partitions only.
            yield Output(None)

    @asset(
        name="extractions",
        deps=[llm_responses],
        description="Answers parsed and validated against the schema and rules; one repair call per invalid one.",
        **common,
    )
    def extractions(assay: AssayResource) -> MaterializeResult:
        summary = assay.session(name).extract()
        return MaterializeResult(
            metadata={
                "items": summary.items,
                "valid": summary.valid,
                "invalid": summary.invalid,
                "missing": summary.missing,
                "repaired": summary.repaired,
                "repair_calls": summary.repair_calls,
                "invalid_reasons": str(summary.invalid_reasons),
            }
        )

    @asset(
        name="evaluation",
        deps=[extractions],
        description="Accuracy vs gold with Wilson CIs, validity, cost, latency.",
        **common,
    )
    def evaluation(assay: AssayResource) -> MaterializeResult:
        result = assay.session(name).evaluate()
        metadata: dict[str, Any] = {}
        for alias, metrics in result["models"].items():
            if "accuracy" in metrics:
                metadata[f"{alias}_accuracy"] = round(metrics["accuracy"]["estimate"], 4)
            metadata[f"{alias}_cost_usd"] = round(metrics["cost_usd"], 6)
        return MaterializeResult(metadata=metadata)

    @asset(
        name="report",
        deps=[evaluation],
        description="Markdown/HTML report, results files and the lab-notebook run folder.",
        **common,
    )
    def report(context: AssetExecutionContext, assay: AssayResource) -> MaterializeResult:
        from pipeline.report.runs import write_report

        written = write_report(assay.session(name), dagster_run_id=context.run_id)
        return MaterializeResult(
            metadata={
                "run_folder": MetadataValue.path(str(written.run_folder)),
                "report": MetadataValue.path(str(written.report_md)),
            }
        )

    names = job_names(config)
    executor = in_process_executor  # the concurrency is inside llm_responses; a process per step only adds start-up
    all_assets = [source_snapshot, llm_calls, llm_responses, extractions, evaluation, report]
    jobs = [
        define_asset_job(
            names["all"], selection=all_assets, executor_def=executor, description=config.description or None
        ),
        define_asset_job(names["plan"], selection=[source_snapshot, llm_calls], executor_def=executor),
        define_asset_job(names["calls"], selection=[llm_responses], executor_def=executor, partitions_def=partitions),
        define_asset_job(names["analysis"], selection=[extractions, evaluation, report], executor_def=executor),
    ]
    return ExperimentDefinitions(config, all_assets, [items_check, budget_check], jobs, partitions)
