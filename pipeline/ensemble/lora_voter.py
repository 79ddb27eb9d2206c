"""The LoRA voter: :mod:`pipeline.ensemble.lora`'s MiniLM classifier behind the common voter interface.

Fine-tuning on a CPU is slow (about 0.3 s per batch of 16 on two cores), so the voter trains on at most
``max_items`` items (a seeded, stratified subsample) for ``epochs`` passes. Pickling a trained voter (for
:func:`pipeline.ensemble.voter.save_voter`) stores the adapter files' bytes, not the torch objects, so an
artifact loads on any device with the same base model installed.
"""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.labelled import LabelledItem, items_hash
from pipeline.ensemble.lora import LoraClassifier, LoraTrainingConfig, train_lora_classifier
from pipeline.ensemble.task_config import LoraVoterConfig
from pipeline.ensemble.voter import VoterOutput

__all__ = ["LoraVoter", "TrainedLoraVoter", "stratified_subsample"]


def stratified_subsample(items: Sequence[LabelledItem], max_items: int | None, seed: int) -> list[LabelledItem]:
    """At most ``max_items`` items, each label keeping its share (at least one each); all items when None."""
    if max_items is None or len(items) <= max_items:
        return list(items)
    by_label: dict[str | None, list[LabelledItem]] = defaultdict(list)
    for item in items:
        by_label[item.label].append(item)
    rng = random.Random(seed)
    chosen: list[LabelledItem] = []
    for label in sorted(by_label, key=str):
        group = by_label[label]
        take = max(1, round(max_items * len(group) / len(items)))
        chosen.extend(rng.sample(group, min(take, len(group))))
    rng.shuffle(chosen)
    return chosen[:max_items]


@dataclass(frozen=True)
class LoraVoter:
    """An untrained LoRA voter."""

    labels: tuple[str, ...]
    config: LoraVoterConfig = LoraVoterConfig()
    name: str = "lora"

    def training_config(self) -> LoraTrainingConfig:
        """The trainer's config built from the task's voter settings."""
        return LoraTrainingConfig(
            base_model=self.config.base_model,
            epochs=self.config.epochs,
            batch_size=self.config.batch_size,
            max_length=self.config.max_length,
            seed=self.config.seed,
        )

    def fit(self, train: Sequence[LabelledItem]) -> TrainedLoraVoter:
        """Fine-tune on a capped stratified subsample of ``train``."""
        sample = stratified_subsample(train, self.config.max_items, self.config.seed)
        classifier = train_lora_classifier(
            [item.text for item in sample], [item.label or "" for item in sample], self.training_config()
        )
        return TrainedLoraVoter(self.name, self.labels, items_hash(sample), classifier)


@dataclass(eq=False)
class TrainedLoraVoter:
    """A fine-tuned LoRA classifier; never abstains."""

    name: str
    labels: tuple[str, ...]
    training_hash: str
    classifier: LoraClassifier
    _columns: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        missing = [label for label in self.classifier.labels if label not in self.labels]
        if missing:
            raise ValueError(f"LoRA classifier knows labels {missing} that the task {list(self.labels)} lacks")
        self._columns = [self.labels.index(label) for label in self.classifier.labels]

    def predict_proba(self, texts: Sequence[str]) -> VoterOutput:
        """Softmax probabilities, reordered to the task's label order."""
        proba = np.zeros((len(texts), len(self.labels)))
        if texts:
            proba[:, self._columns] = self.classifier.predict_proba(list(texts))
        best = proba.argmax(axis=1)
        explanations = tuple(
            f"lora({self.classifier.config.base_model}): {self.labels[b]} {proba[i, b]:.3f}" for i, b in enumerate(best)
        )
        return VoterOutput(self.name, self.labels, proba, np.zeros(len(texts), dtype=bool), explanations)

    def __getstate__(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            self.classifier.save(tmp)
            files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
        return {"name": self.name, "labels": self.labels, "training_hash": self.training_hash, "files": files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in state["files"].items():
                (Path(tmp) / name).write_bytes(data)
            classifier = LoraClassifier.load(tmp, device="cpu")
        self.name, self.labels, self.training_hash = state["name"], state["labels"], state["training_hash"]
        self.classifier = classifier
        self.__post_init__()
