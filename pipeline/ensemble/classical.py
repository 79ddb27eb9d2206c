"""The classical voter: TF-IDF features + a linear model, calibrated with scikit-learn's CalibratedClassifierCV.

Four variants by default (logistic regression or linear SVM, each with Platt/sigmoid or isotonic calibration).
:func:`select_classical_variant` fits each on the training split and keeps the one with the lowest expected
calibration error on the calibration split: the arbiter trusts these probabilities, so calibration is what
we select on (accuracy barely differs between the variants).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pipeline.data.labelled import LabelledItem, items_hash
from pipeline.ensemble.metrics import expected_calibration_error, label_indices
from pipeline.ensemble.task_config import ClassicalVoterConfig
from pipeline.ensemble.voter import VoterOutput

__all__ = [
    "ClassicalVariant",
    "ClassicalVoter",
    "TrainedClassicalVoter",
    "VariantSelection",
    "select_classical_variant",
]


@dataclass(frozen=True)
class ClassicalVariant:
    """One model + calibration combination."""

    model: Literal["logreg", "linear_svm"]
    calibration: Literal["sigmoid", "isotonic"]

    def __str__(self) -> str:
        return f"tfidf+{self.model}/{self.calibration}"


@dataclass(frozen=True)
class ClassicalVoter:
    """An untrained classical voter of one variant."""

    labels: tuple[str, ...]
    variant: ClassicalVariant
    config: ClassicalVoterConfig = ClassicalVoterConfig()
    name: str = "classical"

    def _pipeline(self) -> Any:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline
        from sklearn.svm import LinearSVC

        features: list[tuple[str, Any]] = [
            ("words", TfidfVectorizer(ngram_range=(1, self.config.ngram_max), sublinear_tf=True, min_df=1)),
        ]
        if self.config.char_ngrams:
            features.append(("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)))
        base: Any
        if self.variant.model == "logreg":
            base = LogisticRegression(C=self.config.c, max_iter=2000)
        else:
            base = LinearSVC(C=self.config.c / 10.0)
        calibrated = CalibratedClassifierCV(base, method=self.variant.calibration, cv=self.config.cv_folds)
        return make_pipeline(FeatureUnion(features), calibrated)

    def fit(self, train: Sequence[LabelledItem]) -> TrainedClassicalVoter:
        """Fit features, model and calibration on ``train``."""
        texts = [item.text for item in train]
        y = label_indices(self.labels, [item.label or "" for item in train])
        pipeline = self._pipeline()
        pipeline.fit(texts, y)
        return TrainedClassicalVoter(self.name, self.labels, items_hash(train), self.variant, pipeline)


@dataclass(frozen=True)
class TrainedClassicalVoter:
    """A fitted classical voter; never abstains."""

    name: str
    labels: tuple[str, ...]
    training_hash: str
    variant: ClassicalVariant
    pipeline: Any
    """The fitted scikit-learn pipeline (FeatureUnion of TF-IDFs -> CalibratedClassifierCV)."""

    def predict_proba(self, texts: Sequence[str]) -> VoterOutput:
        """Calibrated probabilities per label; the explanation gives the variant and the top probability."""
        proba = np.zeros((len(texts), len(self.labels)))
        if texts:
            raw = self.pipeline.predict_proba(list(texts))
            # Columns follow the classes seen in training, which may be a subset of the task's labels.
            for column, cls in enumerate(self.pipeline.classes_):
                proba[:, int(cls)] = raw[:, column]
        best = proba.argmax(axis=1)
        explanations = tuple(f"{self.variant}: {self.labels[b]} {proba[i, b]:.3f}" for i, b in enumerate(best))
        return VoterOutput(self.name, self.labels, proba, np.zeros(len(texts), dtype=bool), explanations)


@dataclass(frozen=True)
class VariantSelection:
    """The chosen variant, fitted, and every variant's ECE on the calibration split."""

    voter: TrainedClassicalVoter
    ece: dict[str, float]


def select_classical_variant(
    labels: Sequence[str],
    train: Sequence[LabelledItem],
    calibration: Sequence[LabelledItem],
    config: ClassicalVoterConfig | None = None,
    name: str = "classical",
) -> VariantSelection:
    """Fit every configured variant on ``train``; keep the one with the lowest ECE on ``calibration``."""
    config = config or ClassicalVoterConfig()
    truth = label_indices(labels, [item.label or "" for item in calibration])
    texts = [item.text for item in calibration]
    best: TrainedClassicalVoter | None = None
    best_ece = float("inf")
    scores: dict[str, float] = {}
    for model in config.models:
        for method in config.calibrations:
            variant = ClassicalVariant(model, method)
            trained = ClassicalVoter(tuple(labels), variant, config, name).fit(train)
            ece = expected_calibration_error(trained.predict_proba(texts).proba, truth)
            scores[str(variant)] = ece
            if ece < best_ece:
                best, best_ece = trained, ece
    if best is None:
        raise ValueError("no classical variant configured: set voters.classical.models and calibrations")
    return VariantSelection(best, scores)
