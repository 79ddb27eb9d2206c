"""From runs to the inputs of model comparison and canary drift: what to run (the gold set as the items) and
what each run answered (one outcome per gold item).

`assay compare-models` runs an experiment once per model on its gold set (`datasets/<experiment>/gold.jsonl`,
written out as the run's items) or, without one, on the experiment's own items that carry a gold label; then
`item_outcomes` turns each run's answers into `ItemOutcome`s for `compare_models`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ExperimentConfig
from pipeline.evaluation.answers import answers_match
from pipeline.evaluation.compare_models import ItemOutcome
from pipeline.evaluation.gold import dataset_dir, load_gold_set
from pipeline.records import AnswerRecord
from pipeline.store import ResponseStore

GOLD_ITEMS_FILE = "gold_items.jsonl"
FILE_LOADERS = ("inline", "csv", "jsonl")
"""Loaders whose items a gold set can replace (a kind with its own loader keeps its items)."""


@dataclass(frozen=True)
class GoldInput:
    """What to run a model on: `--set` overrides that make the gold set the items, and the expected answers."""

    overrides: list[str] = field(default_factory=list)
    gold: dict[str, Any] | None = None
    """item id -> expected answer; None = the run's own items' gold labels (read from its snapshot)."""
    source: str = "the experiment's items with a gold label"


def gold_input(config: ExperimentConfig, work_dir: Path, datasets_dir: Path | None = None) -> GoldInput:
    """The experiment's gold set as a JSONL of items under `work_dir`, or its own items when it has none."""
    path = dataset_dir(config.name, datasets_dir) / "gold.jsonl"
    if not path.exists() or config.dataset.loader not in FILE_LOADERS:
        return GoldInput()
    gold_set = load_gold_set(config.name, datasets_dir)
    text_field = config.dataset.text_field
    rows = []
    for item in gold_set.items:
        fields = dict(item.input) if isinstance(item.input, dict) else {text_field: item.input}
        if text_field not in fields:
            fields[text_field] = " ".join(str(value) for value in fields.values())
        rows.append({"id": item.id, **fields})
    items_file = work_dir / GOLD_ITEMS_FILE
    items_file.parent.mkdir(parents=True, exist_ok=True)
    items_file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    overrides = [
        f"dataset.path={items_file}",
        "dataset.loader=jsonl",
        "dataset.items=[]",
        "dataset.id_field=id",
        "dataset.gold_field=null",
        "dataset.limit=null",
        "dataset.sample.n=null",
    ]
    return GoldInput(overrides, {item.id: item.expected for item in gold_set.items}, str(path))


def item_outcomes(rows: Sequence[AnswerRecord], gold: Mapping[str, Any], store: ResponseStore) -> list[ItemOutcome]:
    """One outcome per gold item from a run's answers (repeat 0): correct or not, its share of the call's cost.

    A gold item without a valid answer counts as wrong (correct None). An expected object is compared with the
    whole answer, anything else with the label.
    """
    first = {row.item_id: row for row in rows if row.repeat == 0}
    sharing = Counter(row.call_id for row in first.values())
    outcomes = []
    for item_id, expected in sorted(gold.items()):
        row = first.get(item_id)
        if row is None or row.status != "ok":
            outcomes.append(ItemOutcome(item_id, None))
            continue
        given = row.answer if isinstance(expected, dict) else row.label
        record = store.get_answer(row.call_id)
        share = sharing[row.call_id] or 1
        outcomes.append(
            ItemOutcome(
                item_id,
                answers_match(expected, given),
                cost_usd=(record.cost_usd / share) if record is not None else 0.0,
                latency_s=record.latency_s if record is not None else 0.0,
            )
        )
    return outcomes


def answers_by_item(rows: Sequence[AnswerRecord]) -> dict[str, Any]:
    """item id -> the label of its lowest repeat (None when invalid or missing): what canary drift compares.

    The lowest, not repeat 0: a canary run's repeats start at its `params.repeat_offset`.
    """
    several = len({row.requested_alias or row.alias for row in rows}) > 1
    first: dict[str, AnswerRecord] = {}
    for row in rows:
        # With several models an item has one answer per model: `<item>@<alias>` keeps them apart.
        key = f"{row.item_id}@{row.requested_alias or row.alias}" if several else row.item_id
        if key not in first or row.repeat < first[key].repeat:
            first[key] = row
    return {key: row.label if row.status == "ok" else None for key, row in first.items()}
