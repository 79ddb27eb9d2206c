"""Gold sets and task specs: what an experiment is supposed to do, and the answers it should give.

Each experiment may ship `datasets/<experiment>/task.md` (the task in prose: what a good answer is, for people
and for judge rubrics) and `datasets/<experiment>/gold.jsonl`, one item per line:

    {"id": "h1", "input": "The striker scored twice...", "expected": "sports", "tags": ["short"]}

`input` is a string or an object of fields; `expected` is any JSON value (a label, a number, an object).
A bad line is a one-line ConfigError naming the file, the line number, what is wrong and the fix.

`evaluate_answers` scores answers against the gold set: accuracy with a Wilson interval (via
`pipeline.stats.metrics.accuracy_with_ci`) and, where every expected value is a number, the mean absolute
error with a bootstrap interval (`pipeline.stats.bootstrap.bootstrap_ci`), overall and per tag.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.config import REPO_ROOT
from pipeline.evaluation.answers import is_number, normalize_answer
from pipeline.evaluation.records import Record
from pipeline.llm.errors import ConfigError
from pipeline.stats.bootstrap import BootstrapInterval, bootstrap_ci
from pipeline.stats.metrics import accuracy_with_ci
from pipeline.stats.proportions import Interval

__all__ = [
    "ALL_ITEMS",
    "GoldEvaluation",
    "GoldItem",
    "GoldSet",
    "GroupScores",
    "TaskSpec",
    "dataset_dir",
    "evaluate_answers",
    "load_gold_jsonl",
    "load_gold_set",
    "load_task_spec",
    "write_gold_jsonl",
]

DEFAULT_DATASETS_DIR = REPO_ROOT / "datasets"
ALL_ITEMS = "(all)"
"""Group name of the overall scores (a tag may not use it)."""
_FIELDS = ("id", "input", "expected", "tags")


@dataclass(frozen=True)
class GoldItem:
    """One gold item: an input and the answer expected for it."""

    id: str
    """Unique within the gold set; answers are matched to items by it."""
    input: str | dict[str, Any]
    """The text, or the fields, the prompt is rendered from."""
    expected: Any
    """The correct answer (a label, a number, any JSON value)."""
    tags: tuple[str, ...] = ()
    """Groups the item belongs to; scores are also reported per tag."""

    def to_json_line(self) -> str:
        """The item as one line of gold.jsonl."""
        return json.dumps(
            {"id": self.id, "input": self.input, "expected": self.expected, "tags": list(self.tags)},
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class TaskSpec:
    """The task of an experiment in prose (task.md)."""

    experiment: str
    text: str
    """The markdown text as written."""
    path: Path

    @property
    def title(self) -> str:
        """The first markdown heading, else the first non-empty line."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        for line in lines:
            if line.startswith("#"):
                return line.lstrip("#").strip()
        return lines[0] if lines else ""


@dataclass(frozen=True)
class GoldSet:
    """An experiment's task spec (if any) and gold items."""

    experiment: str
    items: tuple[GoldItem, ...]
    task: TaskSpec | None

    def tags(self) -> list[str]:
        """All tags, sorted."""
        return sorted({tag for item in self.items for tag in item.tags})


def dataset_dir(experiment: str, datasets_dir: Path | None = None) -> Path:
    """`datasets/<experiment>/`: where task.md, gold.jsonl and prompt_changelog.yaml live."""
    return (datasets_dir or DEFAULT_DATASETS_DIR) / experiment


def load_task_spec(path: Path, experiment: str = "") -> TaskSpec:
    """Read task.md; a missing or empty file is a ConfigError saying what to write."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; write the task in markdown there (what the input is, what a correct "
            "answer is, how answers are judged)"
        ) from None
    if not text.strip():
        raise ConfigError(f"{path}: the task spec is empty; describe the task and what a correct answer is")
    return TaskSpec(experiment=experiment or path.parent.name, text=text, path=path)


def _item_from_line(path: Path, number: int, line: str) -> GoldItem:
    where = f"{path}:{number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object with keys {', '.join(_FIELDS)}; found {line.strip()[:60]}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(_FIELDS)} (check its spelling)"
        )
    for key in ("id", "input", "expected"):
        if key not in data:
            raise ConfigError(f"{where}: key {key!r} is missing; every line needs id, input and expected")
    item_id = data["id"]
    if data["expected"] is None:
        raise ConfigError(f"{where}: expected is null (item {item_id}); give the correct answer, or drop the item")
    if isinstance(item_id, bool) or not isinstance(item_id, str | int) or str(item_id).strip() == "":
        raise ConfigError(f"{where}: id must be a non-empty string (or an integer); found {item_id!r}")
    item_input = data["input"]
    if not isinstance(item_input, str | dict) or item_input in ("", {}):
        raise ConfigError(
            f"{where}: input must be a non-empty string or an object of fields; found {item_input!r} (item {item_id})"
        )
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag.strip() for tag in tags):
        raise ConfigError(f'{where}: tags must be a list of non-empty strings, e.g. ["short"]; found {tags!r}')
    if ALL_ITEMS in tags:
        raise ConfigError(f"{where}: the tag {ALL_ITEMS!r} is reserved for the overall scores; rename it")
    return GoldItem(id=str(item_id), input=item_input, expected=data["expected"], tags=tuple(dict.fromkeys(tags)))


def load_gold_jsonl(path: Path) -> tuple[GoldItem, ...]:
    """Read gold.jsonl (blank lines skipped); the first bad line is a ConfigError with its line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; write one JSON object per line: "
            '{"id": ..., "input": ..., "expected": ..., "tags": [...]}'
        ) from None
    items: list[GoldItem] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = _item_from_line(path, number, line)
        if item.id in first_line:
            raise ConfigError(
                f"{path}:{number}: duplicate id {item.id!r} (first on line {first_line[item.id]}); give every item "
                "its own id"
            )
        first_line[item.id] = number
        items.append(item)
    if not items:
        raise ConfigError(f"{path}: the gold set is empty; add at least one item")
    return tuple(items)


def write_gold_jsonl(path: Path, items: Sequence[GoldItem]) -> None:
    """Write items as gold.jsonl (what `load_gold_jsonl` reads back)."""
    path.write_text("".join(item.to_json_line() + "\n" for item in items), encoding="utf-8")


def load_gold_set(experiment: str, datasets_dir: Path | None = None) -> GoldSet:
    """The gold set of `experiment` from `datasets/<experiment>/` (task.md is optional, gold.jsonl is not)."""
    folder = dataset_dir(experiment, datasets_dir)
    task_path = folder / "task.md"
    task = load_task_spec(task_path, experiment) if task_path.exists() else None
    return GoldSet(experiment=experiment, items=load_gold_jsonl(folder / "gold.jsonl"), task=task)


class GroupScores(Record):
    """Scores of one group of gold items (all of them, or one tag)."""

    format_version: Literal[1] = 1
    group: str
    """`(all)` or the tag."""
    n: int
    """Gold items in the group."""
    answered: int
    """Items with a (non-None) answer; the others count as wrong."""
    correct: int
    accuracy: Interval
    """Correct / n with a Wilson interval."""
    mae: BootstrapInterval | None = None
    """Mean absolute error over the numerically answered items with a percentile bootstrap interval; None when
    an expected value is not a number or fewer than 2 items have a numeric answer."""


class GoldEvaluation(Record):
    """Answers scored against a gold set, overall and per tag."""

    format_version: Literal[1] = 1
    overall: GroupScores
    per_tag: tuple[GroupScores, ...]
    unknown_answer_ids: tuple[str, ...] = ()
    """Answer ids that are not in the gold set (ignored in the scores; usually a sign of a wrong gold file)."""


def _group_scores(
    group: str,
    items: Sequence[GoldItem],
    answers: Mapping[str, Any],
    normalize: Callable[[Any], Any],
    confidence: float,
    n_resamples: int,
    seed: int,
) -> GroupScores:
    expected = [normalize(item.expected) for item in items]
    given = [answers.get(item.id) for item in items]
    predicted = [None if answer is None else normalize(answer) for answer in given]
    # Normalised first, then the shared Wilson accuracy: "Sports " and "sports" are one label.
    accuracy = accuracy_with_ci(expected, predicted, confidence=confidence)
    mae = None
    if all(is_number(item.expected) for item in items):
        errors = [
            abs(float(item.expected) - float(answer))
            for item, answer in zip(items, given, strict=True)
            if is_number(answer)
        ]
        if len(errors) >= 2:
            mae = bootstrap_ci(np.asarray(errors), np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return GroupScores(
        group=group,
        n=len(items),
        answered=sum(answer is not None for answer in given),
        correct=sum(p is not None and p == e for e, p in zip(expected, predicted, strict=True)),
        accuracy=accuracy,
        mae=mae,
    )


def evaluate_answers(
    gold: Sequence[GoldItem],
    answers: Mapping[str, Any],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    normalize: Callable[[Any], Any] = normalize_answer,
) -> GoldEvaluation:
    """Score `answers` (item id -> answer; None or absent = no valid answer) against `gold`, overall and per tag.

    Accuracy compares `normalize(expected)` with `normalize(answer)` (default: strings stripped and
    case-folded, numbers as floats). MAE is reported for a group whose expected values are all numbers.
    """
    if not gold:
        raise ValueError("the gold set is empty: nothing to score. Load a gold.jsonl with at least one item.")
    known = {item.id for item in gold}
    tags = sorted({tag for item in gold for tag in item.tags})
    per_tag = tuple(
        _group_scores(
            tag, [item for item in gold if tag in item.tags], answers, normalize, confidence, n_resamples, seed
        )
        for tag in tags
    )
    return GoldEvaluation(
        overall=_group_scores(ALL_ITEMS, list(gold), answers, normalize, confidence, n_resamples, seed),
        per_tag=per_tag,
        unknown_answer_ids=tuple(sorted(str(key) for key in answers if key not in known)),
    )
