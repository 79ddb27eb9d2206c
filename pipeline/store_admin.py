"""Store management: statistics, a full checksum pass, garbage collection that respects plans, export.

Pure functions over a ResponseStore's files (the CLI wraps them). None of them moves a record to quarantine:
`verify_store` only reports, so that checking a store never changes it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.group_commit import fsync_path
from pipeline.store import RECORD_FORMAT_VERSION, CorruptRecord, ResponseStore, StoredResponse, StoreFormatTooNew


@dataclass(frozen=True)
class StoreStats:
    """Counts and sizes of a store (records are parsed, not checksum-verified: see `verify_store`)."""

    records: int
    record_bytes: int
    traces: int
    trace_bytes: int
    quarantined: int
    cost_usd: float
    by_alias: dict[str, int] = field(default_factory=dict)
    oldest: str | None = None
    newest: str | None = None


@dataclass(frozen=True)
class StoreVerdict:
    """The result of `verify_store`: every record file read and its checksum checked."""

    checked: int
    ok: int
    corrupt: tuple[str, ...]
    """'<path>: <reason>' per record that fails its checksum or does not parse."""
    too_new: tuple[str, ...]
    """Paths of records written by a newer Assay (not corrupt; this one cannot read them)."""

    @property
    def clean(self) -> bool:
        """True when every record verified."""
        return not self.corrupt and not self.too_new


@dataclass(frozen=True)
class GcResult:
    """What `gc` deleted (or would delete, with dry_run) and what it kept."""

    deleted: tuple[str, ...]
    kept_needed: int
    kept_recent: int
    bytes_freed: int
    dry_run: bool


@dataclass(frozen=True)
class ExportResult:
    """What `export` copied to its destination store, and which call_ids it could not find (or verify)."""

    exported: tuple[str, ...]
    missing: tuple[str, ...]
    dest: Path


def _record_files(store: ResponseStore) -> Iterator[Path]:
    if store.records_dir.exists():
        yield from sorted(store.records_dir.glob("*/*.json"))


def _read(path: Path) -> StoredResponse:
    return StoredResponse.from_json_dict(json.loads(path.read_bytes()))


def store_stats(store: ResponseStore) -> StoreStats:
    """Counts, sizes, total cost and records per alias of `store`."""
    records = record_bytes = 0
    cost = 0.0
    by_alias: Counter[str] = Counter()
    times: list[str] = []
    for path in _record_files(store):
        records += 1
        record_bytes += path.stat().st_size
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        cost += float(data.get("cost_usd") or 0.0)
        by_alias[str(data.get("alias_used", "?"))] += 1
        if isinstance(data.get("stored_at"), str):
            times.append(data["stored_at"])
    traces = trace_bytes = 0
    if store.traces_dir.exists():
        for path in store.traces_dir.glob("*/*.jsonl"):
            traces += 1
            trace_bytes += path.stat().st_size
    quarantined = sum(1 for _ in store.quarantine_dir.glob("*.json")) if store.quarantine_dir.exists() else 0
    return StoreStats(
        records,
        record_bytes,
        traces,
        trace_bytes,
        quarantined,
        cost,
        dict(sorted(by_alias.items())),
        min(times) if times else None,
        max(times) if times else None,
    )


def verify_store(store: ResponseStore) -> StoreVerdict:
    """Check every record's checksum, shape and name (its call_id must be its file name). Moves nothing."""
    checked = ok = 0
    corrupt: list[str] = []
    too_new: list[str] = []
    for path in _record_files(store):
        checked += 1
        try:
            record = _read(path)
        except StoreFormatTooNew:
            too_new.append(str(path))
            continue
        except (CorruptRecord, ValueError, OSError) as exc:
            corrupt.append(f"{path}: {exc}")
            continue
        if record.call_id != path.stem:
            corrupt.append(f"{path}: holds call_id {record.call_id} (a record renamed or copied by hand)")
            continue
        ok += 1
    return StoreVerdict(checked, ok, tuple(corrupt), tuple(too_new))


def gc(store: ResponseStore, older_than: timedelta | datetime, keep: set[str], *, dry_run: bool = False) -> GcResult:
    """Delete records (and their traces) stored before `older_than` whose call_id is not in `keep`.

    `keep` is every call_id a current plan still needs: those are never deleted, whatever their age. Age is
    the record's `stored_at` (the file's modification time when the record does not parse). A timedelta
    counts back from now. Records written by a newer Assay are never touched.
    """
    cutoff = datetime.now(UTC) - older_than if isinstance(older_than, timedelta) else older_than
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=UTC)
    deleted: list[str] = []
    kept_needed = kept_recent = freed = 0
    for path in _record_files(store):
        call_id = path.stem
        if call_id in keep:
            kept_needed += 1
            continue
        stored_at = _stored_at(path)
        if stored_at is None or stored_at >= cutoff:
            kept_recent += 1
            continue
        trace = store.trace_path(call_id)
        size = path.stat().st_size + (trace.stat().st_size if trace.exists() else 0)
        if not dry_run:
            path.unlink()
            trace.unlink(missing_ok=True)
        deleted.append(call_id)
        freed += size
    if deleted and not dry_run:
        for folder in {store.record_path(call_id).parent for call_id in deleted}:
            fsync_path(str(folder))  # the deletions are durable before gc says they happened
    return GcResult(tuple(deleted), kept_needed, kept_recent, freed, dry_run)


def _stored_at(path: Path) -> datetime | None:
    """When the record was stored; None for a record of a newer format (never collected)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict):
        version = data.get("format_version")
        if isinstance(version, int) and version > RECORD_FORMAT_VERSION:
            return None
        try:
            stamp = datetime.fromisoformat(str(data.get("stored_at")))
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def export(store: ResponseStore, call_ids: Iterable[str], dest: Path | str) -> ExportResult:
    """Copy the verified records of `call_ids` (and their traces) into a store at `dest` (same layout)."""
    target = ResponseStore(dest)
    exported: list[str] = []
    missing: list[str] = []
    for call_id in sorted(set(call_ids)):
        path = store.record_path(call_id)
        try:
            record = _read(path)
        except (OSError, ValueError, CorruptRecord, StoreFormatTooNew):
            missing.append(call_id)
            continue
        if record.call_id != call_id:
            missing.append(call_id)
            continue
        destination = target.record_path(call_id)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temp = destination.with_name(f".{destination.name}.{os.getpid()}.export.tmp")
        shutil.copyfile(path, temp)  # the exact bytes: the checksum stays valid
        fsync_path(str(temp))
        os.replace(temp, destination)
        trace = store.trace_path(call_id)
        if trace.exists():
            target.trace_path(call_id).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trace, target.trace_path(call_id))
        exported.append(call_id)
    for folder in {target.record_path(call_id).parent for call_id in exported}:
        fsync_path(str(folder))
    return ExportResult(tuple(exported), tuple(missing), Path(dest))


__all__ = [
    "ExportResult",
    "GcResult",
    "StoreStats",
    "StoreVerdict",
    "export",
    "gc",
    "store_stats",
    "verify_store",
]
