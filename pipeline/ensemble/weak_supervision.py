"""The weak-supervision voter: Snorkel's LabelModel over labeling functions (the rules plus keyword functions).

Each labeling function (LF) votes one label or abstains. The LabelModel (Ratner et al. 2019) learns each LF's
accuracy from their agreements and disagreements on the training texts, without gold labels, and turns the
votes into probabilities. An item no LF votes on gets no opinion (the voter abstains) rather than the prior.
Snorkel's ``LFAnalysis`` summarises the functions (coverage, overlaps, conflicts, empirical accuracy), returned
as :class:`LabelingFunctionStats` for the report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.data.labelled import LabelledItem, items_hash
from pipeline.ensemble.metrics import label_indices
from pipeline.ensemble.rules import RuleSet
from pipeline.ensemble.task_config import WeakSupervisionConfig
from pipeline.ensemble.voter import VoterOutput, uniform_rows

__all__ = [
    "LabelingFunction",
    "LabelingFunctionStats",
    "TrainedWeakSupervisionVoter",
    "WeakSupervisionAnalysis",
    "WeakSupervisionVoter",
    "analyse_labeling_functions",
    "build_labeling_functions",
    "label_matrix",
]

ABSTAIN = -1


@dataclass(frozen=True)
class LabelingFunction:
    """A regex that votes ``label`` when it matches (a rule, or a keyword as a whole word)."""

    name: str
    regex: re.Pattern[str]
    label: str


def build_labeling_functions(
    rule_set: RuleSet | None, keywords: Mapping[str, Sequence[str]]
) -> tuple[LabelingFunction, ...]:
    """One LF per rule (``rule:<name>``) and per keyword (``kw:<label>:<keyword>``)."""
    lfs = [LabelingFunction(f"rule:{r.name}", r.regex, r.label) for r in (rule_set.rules if rule_set else ())]
    for label, words in keywords.items():
        for word in words:
            lfs.append(
                LabelingFunction(f"kw:{label}:{word}", re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE), label)
            )
    return tuple(lfs)


def label_matrix(lfs: Sequence[LabelingFunction], labels: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Shape (n, len(lfs)): each LF's label index on each text, -1 (Snorkel's ABSTAIN) where it is silent."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.full((len(texts), len(lfs)), ABSTAIN, dtype=np.int64)
    for j, lf in enumerate(lfs):
        for i, text in enumerate(texts):
            if lf.regex.search(text):
                out[i, j] = index[lf.label]
    return out


@dataclass(frozen=True)
class LabelingFunctionStats:
    """Snorkel's LFAnalysis row for one labeling function."""

    name: str
    label: str
    coverage: float
    """Share of items it votes on."""
    overlaps: float
    """Share of items it votes on together with another LF."""
    conflicts: float
    """Share of items where another LF votes a different label."""
    empirical_accuracy: float | None
    """Share of its votes that match gold (None when no gold was given or it never voted)."""


@dataclass(frozen=True)
class WeakSupervisionAnalysis:
    """Per-function statistics and the share of items at least one function votes on."""

    functions: tuple[LabelingFunctionStats, ...]
    total_coverage: float
    n: int


def analyse_labeling_functions(
    lfs: Sequence[LabelingFunction], labels: Sequence[str], items: Sequence[LabelledItem]
) -> WeakSupervisionAnalysis:
    """Run Snorkel's ``LFAnalysis`` on ``items`` (with gold labels for empirical accuracy when all have one)."""
    from snorkel.labeling import LFAnalysis

    matrix = label_matrix(lfs, labels, [item.text for item in items])
    gold = None
    if all(item.label is not None for item in items):
        gold = label_indices(labels, [item.label or "" for item in items])
    summary = LFAnalysis(L=matrix).lf_summary(Y=gold)
    stats: list[LabelingFunctionStats] = []
    for j, lf in enumerate(lfs):
        row = summary.iloc[j]
        accuracy = None
        if gold is not None and "Emp. Acc." in summary.columns and row["Coverage"] > 0:
            accuracy = float(row["Emp. Acc."])
        stats.append(
            LabelingFunctionStats(
                lf.name, lf.label, float(row["Coverage"]), float(row["Overlaps"]), float(row["Conflicts"]), accuracy
            )
        )
    total = float((matrix != ABSTAIN).any(axis=1).mean()) if len(items) else 0.0
    return WeakSupervisionAnalysis(tuple(stats), total, len(items))


@dataclass(frozen=True)
class WeakSupervisionVoter:
    """An untrained LabelModel voter over fixed labeling functions."""

    labels: tuple[str, ...]
    lfs: tuple[LabelingFunction, ...]
    config: WeakSupervisionConfig = WeakSupervisionConfig()
    name: str = "weak_supervision"

    def fit(self, train: Sequence[LabelledItem]) -> TrainedWeakSupervisionVoter:
        """Fit the LabelModel on the training texts' LF votes (gold labels are not used)."""
        from snorkel.labeling.model import LabelModel

        if len(self.lfs) < 3:
            # Snorkel's LabelModel cannot identify LF accuracies from fewer than three functions.
            raise ValueError(
                f"weak supervision needs at least 3 labeling functions, got {len(self.lfs)} "
                f"({[lf.name for lf in self.lfs]}); add rules or voters.weak_supervision.keywords"
            )
        matrix = label_matrix(self.lfs, self.labels, [item.text for item in train])
        model = LabelModel(cardinality=len(self.labels), verbose=False, device="cpu")
        model.fit(L_train=matrix, n_epochs=self.config.epochs, seed=self.config.seed, progress_bar=False)
        return TrainedWeakSupervisionVoter(self.name, self.labels, items_hash(train), self.lfs, model)


@dataclass(frozen=True)
class TrainedWeakSupervisionVoter:
    """A fitted LabelModel; abstains on texts no labeling function votes on."""

    name: str
    labels: tuple[str, ...]
    training_hash: str
    lfs: tuple[LabelingFunction, ...]
    model: Any
    """snorkel.labeling.model.LabelModel"""

    def predict_proba(self, texts: Sequence[str]) -> VoterOutput:
        """LabelModel probabilities; the explanation lists the functions that voted."""
        k = len(self.labels)
        proba = uniform_rows(len(texts), k)
        matrix = label_matrix(self.lfs, self.labels, texts)
        voted = (matrix != ABSTAIN).any(axis=1) if len(texts) else np.zeros(0, dtype=bool)
        if voted.any():
            proba[voted] = self.model.predict_proba(matrix[voted])
        explanations = []
        for i in range(len(texts)):
            fired = [self.lfs[j].name for j in np.flatnonzero(matrix[i] != ABSTAIN)]
            explanations.append(f"label model over {', '.join(fired[:5])}" if fired else "no labeling function voted")
        return VoterOutput(self.name, self.labels, proba, ~voted, tuple(explanations))
