"""Experiment kinds: the logic that turns items into calls and answers back into labels.

`classify` is the generic labelled-classification kind; others subclass it. `experiment_for(config)` picks
the kind named in the experiment file.
"""

from __future__ import annotations

from pipeline.config import ExperimentConfig
from pipeline.experiments.base import ClassifyExperiment, ItemAnswer
from pipeline.llm.errors import ConfigError


def _kinds() -> dict[str, type[ClassifyExperiment]]:
    kinds: dict[str, type[ClassifyExperiment]] = {"classify": ClassifyExperiment}
    try:
        from pipeline.experiments.assign_cat import AssignCatExperiment

        kinds["assign_cat"] = AssignCatExperiment
    except ImportError:  # pragma: no cover - assign_cat ships with the project
        pass
    from pipeline.experiments.risk_fairness import RiskFairnessExperiment

    kinds["risk_fairness"] = RiskFairnessExperiment
    return kinds


def experiment_for(config: ExperimentConfig) -> ClassifyExperiment:
    """The experiment object of `config.kind`; an unknown kind lists the known ones."""
    kinds = _kinds()
    if config.kind not in kinds:
        raise ConfigError(
            f"experiment {config.name!r}: unknown kind {config.kind!r}; known: {', '.join(sorted(kinds))}"
        )
    return kinds[config.kind](config)


__all__ = ["ClassifyExperiment", "ItemAnswer", "experiment_for"]
