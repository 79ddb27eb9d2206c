"""The Dagster code location: one asset group, its jobs, schedules and sensors per experiment file."""

from __future__ import annotations

from dagster import Definitions

from assets.experiment import build_experiment_definitions
from pipeline.config import experiment_sources
from resources.assay import AssayResource, NullIOManager


def build_definitions() -> Definitions:
    """Assemble Definitions from every experiment file."""
    experiments = [build_experiment_definitions(source) for source in experiment_sources()]
    return Definitions(
        assets=[asset for exp in experiments for asset in exp.assets],
        asset_checks=[check for exp in experiments for check in exp.checks],
        jobs=[job for exp in experiments for job in exp.jobs],
        schedules=[schedule for exp in experiments for schedule in exp.schedules],
        sensors=[sensor for exp in experiments for sensor in exp.sensors],
        resources={"assay": AssayResource(home=None, calls="live"), "assay_null_io": NullIOManager()},
    )


defs = build_definitions()
