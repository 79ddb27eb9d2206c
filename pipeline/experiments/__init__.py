"""Experiment kinds: the logic that turns items into calls and answers back into labels.

`classify` is the generic labelled-classification kind; assign_cat subclasses it; `ensemble` (cheap voters, an
arbiter, LLM calls for the unsettled items only) is its own class. Every kind satisfies `ExperimentKind`;
`experiment_for(config)` picks the kind named in the experiment file.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import ExperimentConfig
from pipeline.experiments.base import ClassifyExperiment, ItemAnswer
from pipeline.experiments.kind import ExperimentKind
from pipeline.llm.errors import ConfigError


def _kinds() -> dict[str, Callable[[ExperimentConfig], ExperimentKind]]:
    # Imported here: a kind's module may load heavy libraries (scikit-learn, scipy) that only it needs.
    from pipeline.experiments.assign_cat import AssignCatExperiment
    from pipeline.experiments.ensemble import EnsembleExperiment
    from pipeline.experiments.risk_fairness import RiskFairnessExperiment

    return {
        "classify": ClassifyExperiment,
        "assign_cat": AssignCatExperiment,
        "risk_fairness": RiskFairnessExperiment,
        "ensemble": EnsembleExperiment,
    }


def experiment_for(config: ExperimentConfig) -> ExperimentKind:
    """The experiment object of `config.kind`; an unknown kind lists the known ones."""
    kinds = _kinds()
    if config.kind not in kinds:
        raise ConfigError(
            f"experiment {config.name!r}: unknown kind {config.kind!r}; known: {', '.join(sorted(kinds))}"
        )
    return kinds[config.kind](config)


__all__ = ["ClassifyExperiment", "ExperimentKind", "ItemAnswer", "experiment_for"]
