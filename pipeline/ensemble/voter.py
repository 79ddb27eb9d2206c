"""The interface every ensemble voter shares, and the versioned artifact a trained voter is saved as.

A voter is fitted on labelled items (``fit(train) -> TrainedVoter``); a trained voter answers a batch of texts
with per-label probabilities, an abstain flag per text and a one-line explanation per text
(``predict_proba(texts) -> VoterOutput``). The arbiter only ever sees ``VoterOutput``s, so a new voter kind
needs no change to it.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from pipeline.data.labelled import LabelledItem

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "SafetyAction",
    "TrainedVoter",
    "Voter",
    "VoterArtifact",
    "VoterOutput",
    "load_voter",
    "save_voter",
    "uniform_rows",
]

ARTIFACT_FORMAT_VERSION = 1
"""Version of the :class:`VoterArtifact` layout written by :func:`save_voter`."""

SafetyAction = Literal["force", "escalate"]
"""What a safety rule demands: ``force`` its label (settled), or ``escalate`` (never settled by cheap tiers)."""


@dataclass(frozen=True, eq=False)
class VoterOutput:
    """One voter's answer for a batch of texts.

    ``proba[i]`` is a distribution over ``labels``; when ``abstain[i]`` is true the voter has no opinion on
    text ``i`` and its row is the uniform distribution (so stacking features stay well defined).
    """

    voter: str
    """Name of the voter that answered."""
    labels: tuple[str, ...]
    """Probability-column order (the task's label order)."""
    proba: np.ndarray
    """Shape (n, len(labels)); rows sum to 1."""
    abstain: np.ndarray
    """Shape (n,), bool: the voter has no opinion on that text."""
    explanations: tuple[str, ...]
    """Why, one line per text (e.g. the rule that fired, the top TF-IDF terms)."""
    safety: tuple[SafetyAction | None, ...] = ()
    """Per text: a safety rule's demand, if one fired (rules voter only; empty tuple: none)."""
    safety_labels: tuple[str | None, ...] = ()
    """Per text: the label a forcing safety rule demands."""

    def __post_init__(self) -> None:
        n = len(self.explanations)
        if self.proba.shape != (n, len(self.labels)) or self.abstain.shape != (n,):
            raise ValueError(
                f"voter {self.voter!r}: proba {self.proba.shape}, abstain {self.abstain.shape} and "
                f"{n} explanations disagree; expected ({n}, {len(self.labels)}), ({n},)"
            )

    def __len__(self) -> int:
        return len(self.explanations)

    def predicted(self) -> list[str | None]:
        """Most probable label per text; None where the voter abstains."""
        best = self.proba.argmax(axis=1)
        return [None if self.abstain[i] else self.labels[int(best[i])] for i in range(len(self))]

    def safety_at(self, index: int) -> SafetyAction | None:
        """The safety demand on text ``index`` (None when no safety rule fired)."""
        return self.safety[index] if self.safety else None

    def take(self, indices: Sequence[int]) -> VoterOutput:
        """The rows ``indices`` only."""
        idx = list(indices)
        return VoterOutput(
            voter=self.voter,
            labels=self.labels,
            proba=self.proba[idx],
            abstain=self.abstain[idx],
            explanations=tuple(self.explanations[i] for i in idx),
            safety=tuple(self.safety[i] for i in idx) if self.safety else (),
            safety_labels=tuple(self.safety_labels[i] for i in idx) if self.safety_labels else (),
        )


@runtime_checkable
class TrainedVoter(Protocol):
    """A fitted voter: answers texts, and knows what it was trained on."""

    @property
    def name(self) -> str:
        """Voter name (stacking feature order and explanations use it)."""
        ...

    @property
    def labels(self) -> tuple[str, ...]:
        """Probability-column order."""
        ...

    @property
    def training_hash(self) -> str:
        """:func:`pipeline.data.labelled.items_hash` of the training items ('' for voters that need none)."""
        ...

    def predict_proba(self, texts: Sequence[str]) -> VoterOutput:
        """Per-label probabilities, abstentions and explanations for ``texts``."""
        ...


class Voter(Protocol):
    """An untrained voter: its settings, and how to fit them to labelled items."""

    @property
    def name(self) -> str:
        """Voter name."""
        ...

    def fit(self, train: Sequence[LabelledItem]) -> TrainedVoter:
        """Train on ``train`` and return the fitted voter."""
        ...


@dataclass(frozen=True)
class VoterArtifact:
    """A trained voter as saved on disk, with what is needed to trust it later."""

    voter: Any
    """The trained voter object."""
    name: str
    kind: str
    """Class name of the trained voter."""
    training_hash: str
    format_version: int = ARTIFACT_FORMAT_VERSION
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=dict)
    """Python, numpy and scikit-learn versions that wrote it (unpickling across versions is not guaranteed)."""


def _versions() -> dict[str, str]:
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def save_voter(voter: TrainedVoter, path: str | Path) -> Path:
    """Write ``voter`` as a :class:`VoterArtifact` with joblib (parent folders are created)."""
    import joblib

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    artifact = VoterArtifact(voter, voter.name, type(voter).__name__, voter.training_hash, versions=_versions())
    joblib.dump(artifact, target)
    return target


def load_voter(path: str | Path, expected_training_hash: str | None = None) -> TrainedVoter:
    """Load a voter written by :func:`save_voter`, optionally checking which data it was trained on.

    Raises:
        ValueError: Not an artifact, another format version, or a training hash that differs.
    """
    import joblib

    source = Path(path)
    artifact = joblib.load(source)
    if not isinstance(artifact, VoterArtifact):
        raise ValueError(f"{source} holds a {type(artifact).__name__}, not a VoterArtifact; save it with save_voter()")
    if artifact.format_version != ARTIFACT_FORMAT_VERSION:
        raise ValueError(
            f"{source} has format_version {artifact.format_version}, this code reads {ARTIFACT_FORMAT_VERSION}; "
            f"retrain the voter"
        )
    if expected_training_hash is not None and artifact.training_hash != expected_training_hash:
        raise ValueError(
            f"{source} was trained on data {artifact.training_hash[:12]}, expected {expected_training_hash[:12]}; "
            f"retrain it on the current training split"
        )
    voter: TrainedVoter = artifact.voter
    return voter


def uniform_rows(n: int, k: int) -> np.ndarray:
    """``n`` rows of the uniform distribution over ``k`` labels (an abstaining voter's probabilities)."""
    return np.full((n, k), 1.0 / k)
