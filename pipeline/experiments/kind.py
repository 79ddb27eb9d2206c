"""What every experiment kind offers the rest of Assay: its config, the stages it declares, a cheap call estimate.

`ExperimentContext`, the asset factory and the launcher know a kind only through this protocol, so a kind need
not be a `ClassifyExperiment` (the ensemble plans LLM calls for a few items only, not a prompt per item).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pipeline.config import ExperimentConfig, ModelZoo
    from pipeline.stages import Stage


class ExperimentKind(Protocol):
    """An experiment kind: built from an `ExperimentConfig`, declares the stage graph."""

    config: ExperimentConfig
    zoo: ModelZoo | None
    """The session's model zoo (set by ExperimentContext), for hooks that price calls in reports."""

    def stages(self) -> list[Stage]:
        """The stage graph (data stages and call stages) the asset factory builds."""
        ...

    def expected_calls(self, aliases: Sequence[str]) -> int:
        """About how many calls the first call stage sends, computed cheaply (decides on a call worker process)."""
        ...
