"""ExperimentContext: one experiment's resolved settings, store and work folder. No stage logic lives here.

Stages (pipeline/stages.py) read and write records through it; the asset factory, the launcher, the CLI
and the report each take what they need from it. `calls.py` in this package computes call-stage status
and budgets from the context; nothing here calls back into a caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import AUTO_MODEL, ExperimentConfig, ModelZoo, assay_home, load_experiment, load_model_zoo
from pipeline.llm.client import DEFAULT_KEY_ENV, LLMClient
from pipeline.llm.cost import Budget
from pipeline.llm.errors import ConfigError
from pipeline.store import ResponseStore

if TYPE_CHECKING:
    from pipeline.experiments.kind import ExperimentKind
    from pipeline.stages import StageGraph


class ExperimentContext:
    """An experiment's config (overrides applied), model zoo, store and work folder."""

    def __init__(
        self,
        name: str,
        overrides: Sequence[str] = (),
        *,
        home: Path | None = None,
        environ: Mapping[str, str] | None = None,
        client_mode: str = "live",
    ) -> None:
        from pipeline.experiments import experiment_for

        if client_mode not in ("live", "replay"):
            raise ConfigError(f"calls mode {client_mode!r}: expected 'live' or 'replay'")
        self.client_mode = client_mode
        self.environ = os.environ if environ is None else environ
        self.overrides = list(overrides)
        self.config_source = name
        self.config: ExperimentConfig = load_experiment(name, self.overrides, environ=self.environ)
        self.zoo: ModelZoo = load_model_zoo(overrides=self.overrides)
        self.home = home or assay_home()
        self.store = ResponseStore(self.home / "store")
        self.work_dir = self.home / "work" / self.config.name
        self.kind: ExperimentKind = experiment_for(self.config)
        self.kind.zoo = self.zoo  # report hooks price calls with the zoo as overridden for this run
        self._graph: StageGraph | None = None

    # -- paths ------------------------------------------------------------------------------------------
    @property
    def snapshot_dir(self) -> Path:
        """Folder of the input snapshot."""
        return self.work_dir / "snapshot"

    def record_path(self, stage: str) -> Path:
        """File of a data stage's latest record."""
        return self.work_dir / "stages" / f"{stage}.json"

    def plan_path(self, stage: str) -> Path:
        """File of a call stage's current plan."""
        return self.work_dir / "stages" / stage / "plan.jsonl"

    # -- stages and models ------------------------------------------------------------------------------
    @property
    def graph(self) -> StageGraph:
        """The stage graph the experiment's kind declares."""
        if self._graph is None:
            from pipeline.stages import StageGraph

            graph = StageGraph(tuple(self.kind.stages()))
            if self.overrides:
                self._check_same_shape(graph)
            self._graph = graph
        return self._graph

    def _check_same_shape(self, graph: StageGraph) -> None:
        """Dagster's assets and jobs are built from the experiment file: a --set may not add or drop stages."""
        from pipeline.experiments import experiment_for
        from pipeline.stages import StageGraph

        source = self.config_source
        file_kind = experiment_for(load_experiment(source, environ=self.environ))
        file_stages = [stage.name for stage in StageGraph(tuple(file_kind.stages())).ordered()]
        mine = [stage.name for stage in graph.ordered()]
        if mine != file_stages:
            raise ConfigError(
                f"the overrides change the stages of {self.config.name} ({', '.join(file_stages)} -> "
                f"{', '.join(mine)}); stages come from the experiment file: edit it or pass a copy with --config"
            )

    def aliases(self) -> list[str]:
        """The experiment's model aliases; 'auto' = the zoo default if its key is set, else `local`."""
        return [self.resolve_alias(alias) for alias in self.config.models]

    def resolve_alias(self, alias: str) -> str:
        """`alias`, or for 'auto' the zoo default when its key is set, else `local`; unknown ones fail."""
        if alias == AUTO_MODEL:
            default = self.zoo.get(self.zoo.default)
            key_env = default.api_key_env or DEFAULT_KEY_ENV.get(default.provider, "")
            alias = self.zoo.default if self.environ.get(key_env) else "local"
        self.zoo.get(alias)  # unknown alias -> ConfigError listing the known ones
        return alias

    def client(self, budget: Budget | None = None) -> LLMClient:
        """An LLMClient over this context's zoo and store (the offline ReplayClient in 'replay' mode)."""
        if self.client_mode == "replay":
            from pipeline.llm.replay import ReplayClient

            return ReplayClient(self.zoo, self.store, budget=budget, environ=self.environ)
        return LLMClient(self.zoo, self.store, budget=budget, environ=self.environ)
