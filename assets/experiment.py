"""Asset factory: one experiment file -> the assets, checks and jobs of the stages its kind declares.

Nothing here knows a kind: `pipeline.stages.StageGraph` says which data stages and call stages exist and
how they depend on each other; `assets/stage_assets.py` has one small builder per stage kind.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    DynamicPartitionsDefinition,
    JobDefinition,
    ScheduleDefinition,
    SensorDefinition,
    define_asset_job,
    in_process_executor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets.stage_assets import call_plan_asset, call_responses_asset, data_stage_asset
from jobs.experiment_job import experiment_driver_job
from jobs.partition_order import partitions_name
from pipeline.config import ExperimentConfig
from pipeline.context import ExperimentContext
from pipeline.stages import CallStage, DataStage, Segment, StageGraph
from schedules.canary import experiment_schedules
from schedules.partition_order import keep_failed_calls_together_sensor


@dataclass(frozen=True)
class ExperimentDefinitions:
    """Everything one experiment contributes to the code location."""

    config: ExperimentConfig
    graph: StageGraph
    assets: list[AssetsDefinition]
    checks: list[AssetChecksDefinition]
    jobs: list[UnresolvedAssetJobDefinition | JobDefinition]
    partitions: dict[str, DynamicPartitionsDefinition]
    schedules: list[ScheduleDefinition] = field(default_factory=list)
    sensors: list[SensorDefinition] = field(default_factory=list)


def segment_job_name(config: ExperimentConfig, segment: Segment) -> str:
    """The job that runs a segment's assets: `<prefix>_<stage>_plan_job`, or `<prefix>_analysis_job`."""
    if segment.call_stage is None:
        return f"{config.asset_prefix}_analysis_job"
    return f"{config.asset_prefix}_{segment.call_stage.name}_plan_job"


def calls_job_name(config: ExperimentConfig, stage: str) -> str:
    """The partitioned job of one call stage's responses."""
    return f"{config.asset_prefix}_{stage}_calls_job"


def all_job_name(config: ExperimentConfig) -> str:
    """The job that runs the whole experiment (what `assay run` does) as one Dagster run."""
    return f"{config.asset_prefix}_job"


def build_experiment_definitions(source: str) -> ExperimentDefinitions:
    """Build the asset group of experiment `source` (a name in configs/experiments/, or a YAML path)."""
    context = ExperimentContext(source)
    config, graph = context.config, context.graph
    prefix = config.asset_prefix
    common: dict[str, Any] = {"key_prefix": [prefix], "group_name": prefix}
    if config.owners:  # the experiment file's `owners:` (none by default)
        common["owners"] = list(config.owners)
    # backfill_policy is marked beta in Dagster 1.13; it is the documented way to batch partitions per run.
    warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=Warning)

    assets: dict[str, AssetsDefinition] = {}
    checks: list[AssetChecksDefinition] = []
    partitions: dict[str, DynamicPartitionsDefinition] = {}
    for stage in graph.ordered():
        deps = [graph.asset_name(dep) for dep in stage.deps]
        if isinstance(stage, DataStage):
            asset, stage_checks = data_stage_asset(source, stage, deps, common)
            assets[stage.name] = asset
            checks += stage_checks
        else:
            assert isinstance(stage, CallStage)
            partitions_def = DynamicPartitionsDefinition(name=partitions_name(config, stage.name))
            partitions[stage.name] = partitions_def
            plan_asset, plan_checks = call_plan_asset(source, stage, deps, partitions_def, common)
            assets[stage.plan_asset] = plan_asset
            checks += plan_checks
            assets[stage.responses_asset] = call_responses_asset(
                source, stage, partitions_def, config.run.batch_size, common
            )

    executor = (
        in_process_executor  # the concurrency is inside each responses step; a process per step only adds start-up
    )
    jobs: list[UnresolvedAssetJobDefinition | JobDefinition] = [experiment_driver_job(source, all_job_name(config))]
    for segment in graph.segments():
        if segment.assets:
            jobs.append(
                define_asset_job(
                    segment_job_name(config, segment),
                    selection=[assets[name] for name in segment.assets],
                    executor_def=executor,
                )
            )
        if segment.call_stage is not None:
            stage = segment.call_stage
            jobs.append(
                define_asset_job(
                    calls_job_name(config, stage.name),
                    selection=[assets[stage.responses_asset]],
                    executor_def=executor,
                    partitions_def=partitions[stage.name],
                )
            )
    schedules = experiment_schedules(config, all_job_name(config))
    stage_of_job = {calls_job_name(config, stage.name): stage.name for stage in graph.call_stages}
    sensors = [keep_failed_calls_together_sensor(source, prefix, stage_of_job)]
    return ExperimentDefinitions(config, graph, list(assets.values()), checks, jobs, partitions, schedules, sensors)
