"""Canary schedules: an experiment whose file declares `canary: {cron, models, baseline}` is re-run on that
cron against its pinned models; its `canary_drift` stage compares the answers with the baseline run and the
asset check `canary_no_drift` fails, naming the changed items, when the drift passes the configured thresholds.

The schedule targets the experiment's `<name>_job` (every stage, as `assay run` does) with run config that pins
the canary's models and sets `params.repeat_offset` to the tick's date, so each canary run asks the models
again instead of reading the archived answers of the same calls. Switch it on in the UI (Automation), or with
`canary.running: true`; `dagster-daemon run` (or `assay ui`) evaluates it.
"""

from __future__ import annotations

from typing import Any

from dagster import DefaultScheduleStatus, RunRequest, ScheduleDefinition, ScheduleEvaluationContext

from pipeline.config import ExperimentConfig

CANARY_TAG = "assay/canary"


def canary_schedule_name(config: ExperimentConfig) -> str:
    """`<prefix>_canary`."""
    return f"{config.asset_prefix}_canary"


def canary_overrides(config: ExperimentConfig, tick: str) -> list[str]:
    """The `--set` overrides of one canary run: the pinned canary models, and fresh calls for this tick."""
    assert config.canary is not None
    return [f"models=[{','.join(config.canary.models)}]", f"params.repeat_offset={tick}"]


def canary_schedule(config: ExperimentConfig, job_name: str) -> ScheduleDefinition:
    """The schedule of an experiment with a `canary:` section, targeting `job_name` (its whole-graph job)."""
    canary = config.canary
    assert canary is not None, f"{config.name} has no canary: section"

    def evaluate(context: ScheduleEvaluationContext) -> RunRequest:
        when = context.scheduled_execution_time
        tick = when.strftime("%Y%m%d%H%M") if when is not None else "0"
        run_config: dict[str, Any] = {
            "resources": {"assay": {"config": {"overrides": canary_overrides(config, tick)}}},
        }
        return RunRequest(run_key=f"{config.name}-canary-{tick}", run_config=run_config, tags={CANARY_TAG: tick})

    return ScheduleDefinition(
        name=canary_schedule_name(config),
        cron_schedule=canary.cron,
        job_name=job_name,
        execution_fn=evaluate,
        execution_timezone=canary.timezone,
        description=f"Canary of {config.name}: re-run on {', '.join(canary.models)} and compare with "
        f"{canary.baseline} (asset check canary_no_drift).",
        default_status=DefaultScheduleStatus.RUNNING if canary.running else DefaultScheduleStatus.STOPPED,
    )


def experiment_schedules(config: ExperimentConfig, job_name: str) -> list[ScheduleDefinition]:
    """Every schedule an experiment file asks for (its canary, if any)."""
    return [canary_schedule(config, job_name)] if config.canary is not None else []
