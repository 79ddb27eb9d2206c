"""One builder per stage kind: a data stage's asset, a call stage's plan asset and its responses asset.

Every body is a few lines over pipeline/: the stage framework computes records, the call runner sends
calls. The responses asset reports why it stopped as typed Failure metadata (`stopped_by`), which the
launcher reads instead of matching words in the failure text.
"""

import threading
from collections.abc import Iterator
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
)

from pipeline.call_stages import load_plan, plan_call_stage, run_budget
from pipeline.runner import CallOutcome, StopReason, current_hooks
from pipeline.stages import CallStage, DataStage, StageCheck, StageInputs, run_data_stage
from pipeline.worker import call_runner_for
from resources.assay import AssayResource

MAX_FAILURE_LINES = 20
STOPPED_BY = "stopped_by"
"""Failure metadata key: a StopReason value."""


PATH_METADATA = ("run_folder", "report", "path")
"""Record metadata keys shown as file paths in the UI."""
MARKDOWN_SUFFIX = "_markdown"
"""A record metadata key ending so, with text, is rendered as Markdown in the UI (the report, with its plots)."""


def dagster_metadata(record_metadata: dict[str, Any]) -> dict[str, Any]:
    """A record's metadata as Dagster metadata: paths as paths, `*_markdown` text as Markdown, the rest as is."""
    metadata = dict(record_metadata)
    for name, value in metadata.items():
        if not isinstance(value, str):
            continue
        if name in PATH_METADATA:
            metadata[name] = MetadataValue.path(value)
        elif name.endswith(MARKDOWN_SUFFIX):
            metadata[name] = MetadataValue.md(value)
    return metadata


def data_stage_asset(
    experiment: str, stage: DataStage, deps: list[str], common: dict[str, Any]
) -> tuple[AssetsDefinition, list[AssetChecksDefinition]]:
    """The asset of a data stage (and, for the source, its blocking input check)."""
    prefix = common["key_prefix"]

    @asset(
        name=stage.name,
        deps=[AssetKey([*prefix, dep]) for dep in deps],
        description=stage.description,
        kinds={"python"},
        **common,
    )
    def _data(context: AssetExecutionContext, assay: AssayResource) -> MaterializeResult:
        exp = assay.context(experiment)
        # The stage as this run's overrides declare it (the graph built at load time has no overrides).
        own = exp.graph.get(stage.name)
        assert isinstance(own, DataStage)
        record = run_data_stage(exp, own, context.run_id)
        return MaterializeResult(metadata=dagster_metadata(record.metadata()))

    checks = [stage_check(experiment, stage, check, _data) for check in stage.checks]
    if stage.role != "source":
        return _data, checks

    @asset_check(
        asset=_data,
        name="input_expectations",
        blocking=True,
        description="Great Expectations suite: unique non-null ids, non-empty string text, row count, gold labels "
        "allowed. A failure stops the run before any call is paid for.",
    )
    def _items_check(assay: AssayResource) -> AssetCheckResult:
        from pipeline.data.expectations import validate_snapshot
        from pipeline.data.snapshot import read_snapshot

        exp = assay.context(experiment)
        items = read_snapshot(exp.snapshot_dir)
        sha256 = (exp.snapshot_dir / "items.parquet.sha256").read_text().split()[0]
        validation = validate_snapshot(exp.snapshot_dir, items, sha256, labels=exp.config.output.labels)
        failed = [o.expectation + (f"[{o.column}]" if o.column else "") for o in validation.outcomes if not o.success]
        return AssetCheckResult(
            passed=validation.success,
            metadata={"items": len(items), **validation.metadata()},
            description=None if validation.success else f"input check failed: {', '.join(failed)}; fix the input file",
        )

    return _data, [_items_check, *checks]


def stage_check(
    experiment: str, stage: DataStage, check: StageCheck, asset_def: AssetsDefinition
) -> AssetChecksDefinition:
    """A stage's declared check as an asset check: its verdict's metadata (observed value, threshold) on the UI."""

    @asset_check(asset=asset_def, name=check.name, description=check.description, blocking=check.blocking)
    def _check(context: AssetCheckExecutionContext, assay: AssayResource) -> AssetCheckResult:
        exp = assay.context(experiment)
        own = exp.graph.get(stage.name)  # as this run's overrides declare it
        assert isinstance(own, DataStage)
        evaluate = next(c.evaluate for c in own.checks if c.name == check.name)
        verdict = evaluate(StageInputs(exp, exp.graph, context.op_execution_context.run_id))
        return AssetCheckResult(
            passed=verdict.passed,
            severity=AssetCheckSeverity.ERROR,
            metadata=dict(verdict.metadata),
            description=verdict.description or None,
        )

    return _check


def call_plan_asset(
    experiment: str,
    stage: CallStage,
    deps: list[str],
    partitions: DynamicPartitionsDefinition,
    common: dict[str, Any],
) -> tuple[AssetsDefinition, list[AssetChecksDefinition]]:
    """The plan of a call stage: registers one partition per call; a blocking check on the estimate."""
    prefix = common["key_prefix"]

    @asset(
        name=stage.plan_asset,
        deps=[AssetKey([*prefix, dep]) for dep in deps],
        description=f"Call plan of stage {stage.name!r}: {stage.description}",
        kinds={"python"},
        **common,
    )
    def _plan(context: AssetExecutionContext, assay: AssayResource) -> MaterializeResult:
        exp = assay.context(experiment)
        own = exp.graph.get(stage.name)  # as this run's overrides declare it
        assert isinstance(own, CallStage)
        summary = plan_call_stage(exp, own, StageInputs(exp, exp.graph, context.run_id))
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new_keys = [key for key in summary.plan.keys if key not in known]
        if new_keys:
            context.instance.add_dynamic_partitions(partitions.name, new_keys)  # one call for all keys
        return MaterializeResult(
            metadata={
                "plan_id": summary.plan.plan_id,
                "calls": len(summary.plan.calls),
                "already_stored": summary.already_answered,
                "calls_to_send": len(summary.plan.calls) - summary.already_answered,
                "new_partitions": len(new_keys),
                "estimated_cost_usd": round(summary.estimated_cost_usd, 6),
                "priced_models": ", ".join(summary.priced_models) or "none",
                "spent_usd": round(summary.spent_usd, 6),
                "budget_usd": summary.budget_usd if summary.budget_usd is not None else "unlimited",
            }
        )

    @asset_check(asset=_plan, name="estimated_cost_within_budget", blocking=True)
    def _budget_check(context: AssetCheckExecutionContext, assay: AssayResource) -> AssetCheckResult:
        exp = assay.context(experiment)
        event = context.instance.get_latest_materialization_event(AssetKey([*prefix, stage.plan_asset]))
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        estimate = float(metadata["estimated_cost_usd"].value) if "estimated_cost_usd" in metadata else 0.0  # type: ignore[arg-type]
        spent = float(metadata["spent_usd"].value) if "spent_usd" in metadata else 0.0  # type: ignore[arg-type]
        budget = exp.config.budget.max_cost_usd
        fits = budget is None or spent + estimate <= budget or not exp.config.budget.block_on_estimate
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
            else f"stage {stage.name}: spent ${spent:.4f} + estimated ${estimate:.4f} for the calls still to send "
            f"exceeds the budget ${budget:.4f}; raise --max-cost or lower --limit",
        )

    return _plan, [_budget_check]


def call_responses_asset(
    experiment: str,
    stage: CallStage,
    partitions: DynamicPartitionsDefinition,
    calls_per_run: int,
    common: dict[str, Any],
) -> AssetsDefinition:
    """One stored response per call partition; failed calls leave exactly their partitions FAILED."""
    prefix = common["key_prefix"]

    @asset(
        name=stage.responses_asset,
        deps=[AssetKey([*prefix, stage.plan_asset])],
        partitions_def=partitions,
        output_required=False,
        io_manager_key="assay_null_io",  # responses live in the ResponseStore, not in Dagster's IO manager
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=calls_per_run),
        description=f"Stage {stage.name!r}: one stored LLM response per call partition (ResponseStore).",
        kinds={"openai"},
        **common,
    )
    def _responses(context: AssetExecutionContext, assay: AssayResource) -> Iterator[Any]:
        exp = assay.context(experiment)
        plan = load_plan(exp, stage.name)
        if plan is None:
            raise Failure(description=f"stage {stage.name} has no plan: materialize {stage.plan_asset} first")
        keys = context.partition_keys if context.has_partition_key_range else plan.keys
        by_key = plan.by_key()
        stale = [key for key in keys if key not in by_key]
        if stale:
            context.log.warning(f"{len(stale)} partitions are not in the current plan and were skipped: {stale[:5]}")
        specs = [by_key[key].spec for key in keys if key in by_key]
        key_of = {by_key[key].call_id: key for key in keys if key in by_key}
        hooks = current_hooks()
        client = exp.client(run_budget(exp))
        runner = call_runner_for(client, len(specs), warm=hooks.warm_worker)
        stop = threading.Event()
        watcher = _watch_interrupts(stop)
        shown = 0
        try:
            for outcome in runner.run(specs, stop):
                if hooks.on_outcome is not None:
                    hooks.on_outcome(outcome)
                if outcome.ok:
                    yield AssetMaterialization(
                        asset_key=context.asset_key,
                        partition=key_of[outcome.call_id],
                        metadata=call_metadata(outcome, key_of[outcome.call_id]),
                    )
                elif shown < MAX_FAILURE_LINES and outcome.error_type != "BudgetExceeded":
                    shown += 1
                    context.log.error(f"call {key_of[outcome.call_id]} failed: {outcome.error}")
        finally:
            watcher.set()
            client.close()  # its store writer process ends once it has committed what it holds
        summary = runner.summary
        context.log.info(
            f"stage {stage.name}: sent {summary.sent}, from store {summary.from_store}, failed {summary.failed}, "
            f"not started {summary.not_started}, spent ${summary.spent_usd:.4f}"
        )
        if summary.stopped_by == StopReason.SIGNAL:
            raise Failure(
                description=f"interrupted: no new calls were started; the calls in flight finished and are stored "
                f"({summary.sent} sent this run). Resume with: assay resume {exp.config.name}",
                metadata={STOPPED_BY: StopReason.SIGNAL.value},
            )
        if summary.failed or summary.not_started:
            reason = StopReason(summary.stopped_by) if summary.stopped_by else StopReason.FAILURES
            cause = {
                StopReason.BUDGET: "the budget ran out",
                StopReason.STORE: f"a response could not be stored ({summary.errors}); see the log for the disk",
            }.get(reason, f"{summary.failed} calls failed")
            raise Failure(
                description=f"stage {stage.name}: {cause}; finished responses are stored. "
                f"Resume with: assay resume {exp.config.name}",
                metadata={
                    STOPPED_BY: reason.value,
                    "failed": summary.failed,
                    "not_started": summary.not_started,
                    "errors": str(summary.errors),
                },
            )
        if not context.has_partition_key_range:
            # A run without partition tags covers the whole plan; an Output lets downstream steps go ahead.
            yield Output(None)

    return _responses


def call_metadata(outcome: CallOutcome, partition_key: str) -> dict[str, Any]:
    """A call partition's materialization metadata: who answered, tokens, cost, latency, and the command that
    shows its request, answer and attempts (`assay trace <partition key>`)."""
    result = outcome.result
    assert result is not None
    metadata: dict[str, Any] = {
        "model": result.model_used,
        "alias": result.alias_used,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "cost_usd": round(result.record.cost_usd, 8),
        "latency_s": round(result.latency_s, 4),
        "attempts": result.attempts,
        "from_store": result.from_store,
        "call_id": outcome.call_id,
        "trace": f"assay trace {partition_key}",
    }
    if result.call_id != outcome.call_id:
        metadata["answered_by_call_id"] = result.call_id  # a fallback model answered (its own stored call)
    return metadata


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
