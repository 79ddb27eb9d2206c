"""Where paid responses go when the store cannot take them (a full disk), and how they come back.

The spill folder (ASSAY_STORE_SPILL_DIR, best on another disk) mirrors the store's layout:
`records/<id[:2]>/<id>.json` (the exact record bytes, checksummed) and `traces/<id[:2]>/<id>.jsonl`.
`recover_spilled` moves them into the store (records verified first) before a client sends anything,
so a run resumed after space was freed pays for nothing that was already answered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.group_commit import append_line, fsync_path, write_temp
from pipeline.llm.errors import StoreWriteFailed
from pipeline.store import CorruptRecord, ResponseStore, StoredResponse

log = logging.getLogger(__name__)

SPILL_ENV = "ASSAY_STORE_SPILL_DIR"


def spill_dir() -> Path | None:
    """The configured spill folder ($ASSAY_STORE_SPILL_DIR), or None."""
    value = os.environ.get(SPILL_ENV, "").strip()
    return Path(value) if value else None


def spill(root: Path, folder: Path, records: Sequence[tuple[str, bytes]], traces: Sequence[tuple[str, bytes]]) -> None:
    """Copy unwritten record bytes and trace lines (paths under `root`) to `folder`, durably."""
    for path, payload in records:
        target = folder / os.path.relpath(path, root)
        temp = write_temp(str(target), payload)
        fsync_path(temp)
        os.replace(temp, target)
        fsync_path(str(target.parent))
    for path, line in traces:
        append_line(str(folder / os.path.relpath(path, root)), line)


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding `path` (or its nearest existing parent)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def full_disk_message(root: Path, error: str, kept: int, spilled_to: Path | None) -> str:
    """One line: what failed, which file system is full, what to free, where the paid bytes are."""
    try:
        mount = mount_point(root)
        usage = shutil.disk_usage(mount)
        where = f"the file system mounted at {mount} ({usage.free / 1e6:.1f} MB free of {usage.total / 1e9:.1f} GB)"
    except OSError:
        where = f"the file system of {root}"
    kept_text = (
        f"{kept} paid response(s) are kept in {spilled_to} and stored by the next run"
        if spilled_to is not None
        else f"{kept} paid response(s) are kept in memory until this run ends (set {SPILL_ENV} to a folder on "
        "another disk to keep them across runs)"
    )
    return (
        f"cannot store responses under {root} ({error}): {where} is full or failing; "
        "no new calls are sent. "
        "Free space there (old run folders, records no plan needs: pipeline.store_admin.gc), then resume the run. "
        f"{kept_text}"
    )


@dataclass(frozen=True)
class SpillRecovery:
    """What `recover_spilled` did: records moved into the store, already there, unreadable; trace files."""

    stored: int
    already_stored: int
    unreadable: int
    traces: int
    folder: Path | None


def recover_spilled(store: ResponseStore, folder: Path | None = None) -> SpillRecovery:
    """Move spilled records (checksum-verified) and trace lines from `folder` (default: $ASSAY_STORE_SPILL_DIR)
    into `store`. Raises StoreWriteFailed if the store still cannot take them (nothing is deleted then)."""
    folder = folder if folder is not None else spill_dir()
    if folder is None or not folder.is_dir():
        return SpillRecovery(0, 0, 0, 0, folder)
    stored = already = unreadable = traces = 0
    try:
        for path in sorted((folder / "records").glob("*/*.json")):
            try:
                record = StoredResponse.from_json_dict(json.loads(path.read_bytes()))
            except (CorruptRecord, ValueError) as exc:
                log.warning("spilled record %s is unreadable (%s); left where it is", path, exc)
                unreadable += 1
                continue
            if store.record_path(record.call_id).exists() and store.get(record.call_id) is not None:
                already += 1
            else:
                store.put(record)
                stored += 1
            path.unlink()
        for path in sorted((folder / "traces").glob("*/*.jsonl")):
            target = store.trace_path(path.stem)
            append_line(str(target), path.read_bytes())
            path.unlink()
            traces += 1
    except OSError as exc:
        raise StoreWriteFailed(
            full_disk_message(store.root, f"{type(exc).__name__}: {exc}", stored, folder)
            + f" (recovering spilled responses from {folder})",
            kept_in=str(folder),
        ) from None
    for sub in ("records", "traces"):
        for prefix in sorted((folder / sub).glob("*"), reverse=True):
            with contextlib.suppress(OSError):
                prefix.rmdir()
    if stored or already or traces:
        log.info("stored %d spilled responses from %s (%d were already stored)", stored, folder, already)
    return SpillRecovery(stored, already, unreadable, traces, folder)


__all__ = ["SPILL_ENV", "SpillRecovery", "full_disk_message", "mount_point", "recover_spilled", "spill", "spill_dir"]
