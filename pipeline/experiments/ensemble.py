"""The `ensemble` kind: cheap voters decide most items, the LLM is asked only about the rest (issue #11).

    source_splits -> rules_voter | classical_voter | weak_supervision_voter [| lora_voter]
        -> arbiter_first_pass -> llm_voter (calls: the unsettled test items only) -> arbiter
        -> metrics, review_queue -> report

Unlike the classify family there is no prompt per item: the LLM voter's call stage is planned from the
arbiter's first pass, so its calls are partitions like any other (stored, resumable, budgeted) and there are
exactly as many as the cheap tiers left unsettled. Everything about the task (labels, voters, slices, data)
comes from `configs/tasks/<task>/`; the experiment file names the task in its `ensemble:` section.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.calls import CallSpec
from pipeline.config import REPO_ROOT, EnsembleSection, ExperimentConfig, ModelZoo
from pipeline.ensemble.llm_voter import FewShotExample, llm_answer_schema, llm_voter_messages
from pipeline.ensemble.task_config import TaskConfig, load_task_config
from pipeline.llm.errors import ConfigError
from pipeline.prompts import PromptSet, render

if TYPE_CHECKING:
    from pipeline.stages import Stage

__all__ = ["EnsembleExperiment"]


class EnsembleExperiment:
    """A classification ensemble over one task folder: declares the stages, builds the LLM voter's messages."""

    kind = "ensemble"

    def __init__(self, config: ExperimentConfig) -> None:
        if config.ensemble is None:
            raise ConfigError(
                f"experiment {config.name!r}: kind 'ensemble' needs an `ensemble:` section; add "
                "`ensemble: {task: <folder under configs/tasks/>}`"
            )
        if len(config.models) != 1:
            raise ConfigError(
                f"experiment {config.name!r}: the ensemble's LLM voter asks one model, got models {config.models}; "
                "give one (e.g. --model local)"
            )
        if config.run.items_per_prompt != 1:
            raise ConfigError(
                f"experiment {config.name!r}: run.items_per_prompt={config.run.items_per_prompt}, but the LLM voter "
                "asks about one item per call; set it to 1"
            )
        self.config = config
        self.section: EnsembleSection = config.ensemble
        self.task: TaskConfig = load_task_config(_task_source(config.ensemble.task))
        self.prompts = PromptSet.from_config(config.prompts)
        self.zoo: ModelZoo | None = None

    def stages(self) -> list[Stage]:
        """The stage graph (see the module docstring)."""
        from pipeline.experiments.ensemble_stages import EnsembleStages

        return EnsembleStages(self).declare()

    def expected_calls(self, aliases: Sequence[str]) -> int:
        """Roughly the test split times the share the cheap tiers are expected to leave (1 - coverage goal)."""
        if not self.task.voters.llm.enabled:
            return 0
        from pipeline.ensemble.build import load_task_items

        items = len(load_task_items(self.task))
        if self.max_items is not None:
            items = min(items, self.max_items)
        test_share = 1 - self.task.data.train_fraction - self.task.data.calibration_fraction
        return round(items * test_share * (1 - self.task.conformal.coverage_goal)) * len(aliases)

    @property
    def max_items(self) -> int | None:
        """Subsample size: `ensemble.max_items`, else `dataset.limit` (`--limit`), else all items."""
        return self.section.max_items or self.config.dataset.limit

    # -- the LLM voter's prompt ---------------------------------------------------------------------------
    def few_shot(self, train: Sequence[Any]) -> list[FewShotExample]:
        """`voters.llm.few_shot` short training examples, balanced over labels, chosen with the task's seed."""
        wanted = self.task.voters.llm.few_shot
        rng = random.Random(self.task.data.seed)
        pools: dict[str, list[Any]] = {}
        for label in self.task.label_names:
            pool = sorted((i for i in train if i.label == label and len(i.text) <= 160), key=lambda i: i.item_id)
            rng.shuffle(pool)
            pools[label] = pool
        examples: list[FewShotExample] = []
        while len(examples) < wanted and any(pools.values()):
            for label in self.task.label_names:
                if pools[label] and len(examples) < wanted:
                    item = pools[label].pop()
                    examples.append(FewShotExample(item.text, label))
        return examples

    def llm_messages(self, text: str, few_shot: Sequence[FewShotExample]) -> list[dict[str, str]]:
        """The LLM voter's messages: `prompts.user` is each user turn; a non-empty `prompts.system` replaces the
        built-in system message (rendered with {labels} and {task})."""
        labels = self.task.label_names
        messages = llm_voter_messages(
            text,
            labels,
            few_shot,
            self.task.description,
            {label.name: label.description for label in self.task.labels},
            user_template=self.config.prompts.user,
        )
        if self.config.prompts.system:
            fields = {"labels": ", ".join(labels), "task": self.task.description}
            messages[0] = {"role": "system", "content": render(self.config.prompts.system, fields, "system")}
        return messages

    def llm_spec(
        self, item_id: str, text: str, few_shot: Sequence[FewShotExample], alias: str, zoo: ModelZoo
    ) -> CallSpec:
        """The LLM voter's call about one item (the plan's, and the LLM-only baseline's in benchmarks)."""
        model = zoo.get(alias)
        params = self.config.params
        return CallSpec(
            alias=alias,
            model=model.model,
            version=model.version,
            api_base=model.api_base,
            messages=tuple(self.llm_messages(text, few_shot)),
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            response_format=self.response_format(),
            seed=params.seed,
            repeat=0,
            item_id=item_id,
            purpose="llm_voter",
        )

    def response_format(self) -> dict[str, Any] | None:
        """The answer schema as response_format (constrained decoding), unless `output.constrained` is off."""
        if not self.config.output.constrained:
            return None
        schema = llm_answer_schema(self.task.label_names)
        return {"type": "json_schema", "json_schema": {"name": "llm_vote", "schema": schema}}


def _task_source(task: str) -> str | Path:
    """A task name (folder under configs/tasks/), or a folder/file path relative to the repository root."""
    candidate = Path(task)
    if not candidate.is_absolute() and (REPO_ROOT / candidate).exists() and len(candidate.parts) > 1:
        return REPO_ROOT / candidate
    return task
