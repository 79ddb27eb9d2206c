"""The Dagster code location: one asset group and its jobs per file in configs/experiments/."""

from __future__ import annotations

from dagster import Definitions

from assets.experiment import build_experiment_definitions
from pipeline.config import list_experiments
from resources.assay import AssayResource, NullIOManager


def build_definitions() -> Definitions:
    """Assemble Definitions from every experiment file."""
    experiments = [build_experiment_definitions(name) for name in list_experiments()]
    return Definitions(
        assets=[asset for exp in experiments for asset in exp.assets],
        asset_checks=[check for exp in experiments for check in exp.checks],
        jobs=[job for exp in experiments for job in exp.jobs],
        resources={"assay": AssayResource(), "assay_null_io": NullIOManager()},
    )


defs = build_definitions()
