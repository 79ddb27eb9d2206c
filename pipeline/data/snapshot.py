"""Input snapshots: the exact items of a run, frozen as Parquet with a sha256 beside it."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.data.loaders import Item, ItemSet


@dataclass(frozen=True)
class Snapshot:
    """Where a snapshot was written and what it holds."""

    path: Path
    sha256: str
    rows: int
    errors: int


def write_snapshot(item_set: ItemSet, directory: Path) -> Snapshot:
    """Write items.parquet (+ .sha256) and load_errors.jsonl atomically into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "item_id": [item.item_id for item in item_set.items],
            "fields": [json.dumps(dict(item.fields), sort_keys=True, ensure_ascii=False) for item in item_set.items],
            "gold": [item.gold for item in item_set.items],
        }
    )
    path = directory / "items.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (directory / "items.parquet.sha256").write_text(f"{digest}  items.parquet\n")
    with (directory / "load_errors.jsonl").open("w", encoding="utf-8") as handle:
        for error in item_set.errors:
            handle.write(json.dumps(error.__dict__, ensure_ascii=False) + "\n")
    return Snapshot(path, digest, len(item_set.items), len(item_set.errors))


def read_snapshot(directory: Path) -> list[Item]:
    """Items of a snapshot, after checking its sha256 (a mismatch means the file changed under us)."""
    path = directory / "items.parquet"
    expected = (directory / "items.parquet.sha256").read_text().split()[0]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise ValueError(f"{path}: sha256 {actual} does not match {expected}; re-materialize source_snapshot")
    frame = pd.read_parquet(path)
    return [
        Item(row.item_id, json.loads(row.fields), row.gold if isinstance(row.gold, str) else None)
        for row in frame.itertuples(index=False)
    ]
