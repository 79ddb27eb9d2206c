"""AssayResource: the per-run settings every asset of an experiment reads (overrides and state folder)."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext
from pydantic import Field

from pipeline.session import ExperimentSession


class AssayResource(ConfigurableResource):
    """Settings of one run. The `assay` command fills `overrides` from its flags; the UI's launchpad can too."""

    overrides: list[str] = Field(
        default_factory=list,
        description="`key.path=value` overrides of the experiment file and the model zoo (like --set).",
    )
    home: str | None = Field(None, description="Assay's state folder (store, work); default $ASSAY_HOME or .assay.")

    def session(self, experiment: str) -> ExperimentSession:
        """The experiment with this run's overrides applied."""
        return ExperimentSession(experiment, self.overrides, home=Path(self.home) if self.home else None)


class NullIOManager(ConfigurableIOManager):
    """Stores nothing: llm_responses' data is in the ResponseStore; downstream assets read it from there."""

    def handle_output(self, context: OutputContext, obj: object) -> None:
        """Nothing to store."""

    def load_input(self, context: InputContext) -> None:
        """Nothing to load (downstream assets use deps=, not inputs)."""
        return None
