"""Sensor: after a failed calls run launched from the UI, a backfill or a schedule, keep the stage's unanswered
partitions together at the end (jobs/partition_order.py), so the next backfill of them is one range."""

from collections.abc import Mapping
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunStatusSensorContext,
    SensorDefinition,
    SkipReason,
    run_status_sensor,
)

from jobs.partition_order import keep_unanswered_together
from pipeline.context import ExperimentContext


def keep_failed_calls_together_sensor(experiment: str, prefix: str, stage_of_job: dict[str, str]) -> SensorDefinition:
    """A run-failure sensor over the calls jobs of one experiment (`stage_of_job`: job name -> call stage)."""

    @run_status_sensor(
        run_status=DagsterRunStatus.FAILURE,
        name=f"{prefix}_keep_failed_calls_together",
        description="After a failed calls run, moves the calls still unanswered together to the end of the "
        "stage's partitions, so a backfill of them needs ceil(N / calls-per-run) runs.",
        default_status=DefaultSensorStatus.RUNNING,
        monitor_all_code_locations=False,
    )
    def _sensor(context: RunStatusSensorContext) -> SkipReason | None:
        run = context.dagster_run
        stage = stage_of_job.get(run.job_name)
        if stage is None:
            return SkipReason(f"{run.job_name} is not a calls job of {experiment}")
        moved = keep_unanswered_together(
            context.instance, ExperimentContext(experiment, run_overrides(run.run_config)), stage
        )
        context.log.info(f"{experiment}/{stage}: moved {moved} unanswered partitions to the end")
        return None

    return _sensor


def run_overrides(run_config: Mapping[str, Any]) -> list[str]:
    """The `--set` overrides a run was launched with (resources.assay.config.overrides), [] if none."""
    node: Any = run_config
    for key in ("resources", "assay", "config", "overrides"):
        node = node.get(key) if isinstance(node, Mapping) else None
    return [str(flag) for flag in node] if isinstance(node, list) else []
