"""Generic item loaders (inline, csv, jsonl) with limit and reproducible sampling.

An item is one thing the experiment asks a model about: an id, its fields (used by prompt templates) and
an optional gold label. Bad rows are reported with their line number and skipped; the rest load.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import REPO_ROOT, DatasetConfig, utf8_problem
from pipeline.llm.errors import ConfigError


@dataclass(frozen=True)
class Item:
    """One dataset item: id, fields for the prompt, gold label (None if unlabelled)."""

    item_id: str
    fields: Mapping[str, Any]
    gold: str | None = None


@dataclass(frozen=True)
class ItemError:
    """A row that could not be loaded: where, why, and its raw text."""

    row_number: int
    reason: str
    raw: str = ""


@dataclass
class ItemSet:
    """Loaded items plus the rows that were skipped."""

    items: list[Item]
    errors: list[ItemError] = field(default_factory=list)
    source: str = ""


def resolve_path(path: str, root: Path = REPO_ROOT) -> Path:
    """A dataset path: absolute as given, else relative to the repository root."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def load_item_set(config: DatasetConfig, root: Path = REPO_ROOT) -> ItemSet:
    """Load items as `config` says (inline, csv, jsonl), then apply limit and sampling."""
    if config.loader == "inline":
        rows: Iterable[tuple[int, Mapping[str, Any] | str]] = enumerate(config.items, start=1)
        source = "inline items"
    elif config.loader in ("csv", "jsonl"):
        if not config.path:
            raise ConfigError(f"dataset.loader {config.loader!r} needs dataset.path (a file to load)")
        path = resolve_path(config.path, root)
        if not path.exists():
            raise ConfigError(f"dataset.path {str(path)!r} does not exist; give an existing {config.loader} file")
        rows = _csv_rows(path) if config.loader == "csv" else _jsonl_rows(path)
        source = str(path)
    else:
        raise ConfigError(f"dataset.loader {config.loader!r} is not known here; expected inline, csv or jsonl")
    item_set = items_from_rows(rows, config, source)
    return sample_items(item_set, config)


def items_from_rows(rows: Iterable[tuple[int, Mapping[str, Any] | str]], config: DatasetConfig, source: str) -> ItemSet:
    """Turn raw rows into Items; rows missing the id or text go to errors with their line number."""
    items: list[Item] = []
    errors: list[ItemError] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        if isinstance(row, str):  # a line that did not parse
            errors.append(ItemError(number, "not valid JSON", row[:200]))
            continue
        item_id = str(row.get(config.id_field, "") or "").strip()
        text = str(row.get(config.text_field, "") or "").strip()
        if not item_id:
            errors.append(ItemError(number, f"empty {config.id_field!r}", json.dumps(dict(row))[:200]))
            continue
        if not text:
            errors.append(ItemError(number, f"empty {config.text_field!r}", json.dumps(dict(row))[:200]))
            continue
        if item_id in seen:
            errors.append(ItemError(number, f"duplicate id {item_id!r} (first on row {seen[item_id]})"))
            continue
        seen[item_id] = number
        gold = row.get(config.gold_field) if config.gold_field else None
        fields = {key: value for key, value in row.items() if key != config.gold_field}
        fields.setdefault("text", text)
        items.append(Item(item_id, fields, str(gold) if gold not in (None, "") else None))
    return ItemSet(items, errors, source)


def sample_items(item_set: ItemSet, config: DatasetConfig) -> ItemSet:
    """Apply `limit` (first n) then `sample` (n at random with the seed, kept in file order)."""
    items = item_set.items[: config.limit] if config.limit else item_set.items
    if config.sample.n is not None and config.sample.n < len(items):
        chosen = set(random.Random(config.sample.seed).sample(range(len(items)), config.sample.n))
        items = [item for index, item in enumerate(items) if index in chosen]
    return ItemSet(items, item_set.errors, item_set.source)


CSV_FIELD_LIMIT = 16 * 1024 * 1024
"""Largest CSV cell read (16 MiB, ~4 million tokens: more than any model's context). The csv module's
default, 128 KiB, rejects long documents that are fine to send; a cell larger than this is almost always an
unclosed quote that swallowed the rest of the file."""


def raise_csv_field_limit() -> None:
    """Let the csv module read cells up to CSV_FIELD_LIMIT (a process-wide setting of the csv module)."""
    csv.field_size_limit(CSV_FIELD_LIMIT)


def _csv_rows(path: Path) -> Iterable[tuple[int, Mapping[str, Any] | str]]:
    raise_csv_field_limit()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        last_line = 1  # the header's
        try:
            for row in reader:
                yield reader.line_num, row
                last_line = reader.line_num
        except UnicodeDecodeError:
            raise ConfigError(utf8_problem(path)) from None
        except csv.Error as exc:
            hint = (
                f"a cell is over {CSV_FIELD_LIMIT:,} bytes, usually a double quote that is never closed and "
                "swallowed the lines after it: close it (or double it inside a field); for really large "
                "texts use the jsonl loader"
                if "field limit" in str(exc)
                else "fix the row's quoting"
            )
            raise ConfigError(
                f"{path}: the row starting on line {last_line + 1} is not readable CSV ({exc}); {hint}"
            ) from None


def _jsonl_rows(path: Path) -> Iterable[tuple[int, Mapping[str, Any] | str]]:
    with path.open(encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    yield number, line
                    continue
                yield number, value if isinstance(value, dict) else line
        except UnicodeDecodeError:
            raise ConfigError(utf8_problem(path)) from None
