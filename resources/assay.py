"""Resources: the per-run settings every asset of an experiment reads, and the IO manager for responses.

The LLM client and the store are chosen in one place, `AssayResource.context()`: the live client speaks
to the providers through litellm; `calls: "replay"` swaps in `pipeline.llm.replay.ReplayClient`, which
answers from a deterministic responder without any network (materialize() tests use it).
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext
from pydantic import Field

from pipeline.context import ExperimentContext


class AssayResource(ConfigurableResource):
    """Settings of one run. The `assay` command fills `overrides` from its flags; the UI's launchpad can too."""

    overrides: list[str] = Field(
        default_factory=list,
        description="`key.path=value` overrides of the experiment file and the model zoo (like --set).",
    )
    home: str | None = Field(None, description="Assay's state folder (store, work); default $ASSAY_HOME or .assay.")
    calls: str = Field(
        "live",
        description="'live' = the providers through litellm; 'replay' = a deterministic offline fake (tests).",
    )

    def context(self, experiment: str) -> ExperimentContext:
        """The experiment with this run's overrides applied, and the client implementation chosen."""
        return ExperimentContext(
            experiment, self.overrides, home=Path(self.home) if self.home else None, client_mode=self.calls
        )


class NullIOManager(ConfigurableIOManager):
    """Stores nothing: a responses asset's data is in the ResponseStore; downstream assets read it there."""

    def handle_output(self, context: OutputContext, obj: object) -> None:
        """Nothing to store."""

    def load_input(self, context: InputContext) -> None:
        """Nothing to load (downstream assets use deps=, not inputs)."""
        return None
