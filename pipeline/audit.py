"""An append-only, hash-chained audit log per experiment: who did what, when, to which records.

One JSON line per event (format version AUDIT_FORMAT_VERSION):

    {"format_version": 1, "seq": 3, "at": "<ISO UTC>", "user": "ana", "host": "lab-7",
     "event": "calls_stored", "details": {"records": {"<call_id>": "<record checksum>", ...}},
     "prev_hash": "<hash of line 2>", "hash": "<sha256 of this line without 'hash'>"}

Each line's hash covers its content and the previous line's hash, so editing or deleting a line breaks the
chain at that point (`verify_audit` names the line). Given the store, `verify_audit` also checks that every
record a `calls_stored` event logged is still there with the checksum it had. Cutting lines off the end
leaves a valid shorter chain: pin `AuditVerdict.head_hash` somewhere else (a run summary, a commit) to
detect that too. Hand-written: no library in the design does hash-chained logs, and it is ~100 lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.calls import canonical_json
from pipeline.store import ResponseStore, utc_now

AUDIT_FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
"""prev_hash of the first line."""

RUN_STARTED = "run_started"
CONFIG_HASH = "config_hash"
CALLS_STORED = "calls_stored"
REPORT_WRITTEN = "report_written"
RECORD_QUARANTINED = "record_quarantined"
EVENT_TYPES = (RUN_STARTED, CONFIG_HASH, CALLS_STORED, REPORT_WRITTEN, RECORD_QUARANTINED)


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log."""

    seq: int
    at: str
    user: str
    host: str
    event: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str
    format_version: int = AUDIT_FORMAT_VERSION

    def to_json_dict(self) -> dict[str, Any]:
        """The line as written (with its hash)."""
        return {**self._body(), "hash": self.hash}

    def _body(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "seq": self.seq,
            "at": self.at,
            "user": self.user,
            "host": self.host,
            "event": self.event,
            "details": dict(self.details),
            "prev_hash": self.prev_hash,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        """Parse a line (no verification; see `verify_audit`). Raises KeyError/TypeError on a wrong shape."""
        return cls(
            seq=int(data["seq"]),
            at=str(data["at"]),
            user=str(data["user"]),
            host=str(data["host"]),
            event=str(data["event"]),
            details=dict(data["details"]),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
            format_version=int(data["format_version"]),
        )


def entry_hash(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a line without its 'hash' field."""
    return hashlib.sha256(canonical_json({k: v for k, v in body.items() if k != "hash"}).encode("utf-8")).hexdigest()


def audit_log_path(root: Path, experiment: str) -> Path:
    """Where experiment `experiment`'s audit log lives under Assay's state folder `root`."""
    return root / "audit" / f"{experiment}.jsonl"


def _who() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = str(os.getuid())
    return user, socket.gethostname()


def append_audit(path: Path, event: str, details: Mapping[str, Any] | None = None) -> AuditEntry:
    """Append one event to the log at `path` (created if absent), durably; returns the entry written.

    Concurrent appenders (two runs of one experiment) are serialised by an exclusive lock on the file, so
    the chain stays linear.
    """
    if event not in EVENT_TYPES:
        raise ValueError(f"audit event {event!r} is unknown; expected one of {', '.join(EVENT_TYPES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    user, host = _who()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd)
        prev = AuditEntry.from_json_dict(json.loads(last)) if last else None
        body = {
            "format_version": AUDIT_FORMAT_VERSION,
            "seq": prev.seq + 1 if prev else 1,
            "at": utc_now(),
            "user": user,
            "host": host,
            "event": event,
            "details": dict(details or {}),
            "prev_hash": prev.hash if prev else GENESIS_HASH,
        }
        entry = AuditEntry.from_json_dict({**body, "hash": entry_hash(body)})
        line = (json.dumps(entry.to_json_dict(), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        os.write(fd, line)
        os.fsync(fd)
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return entry


def calls_stored_details(store: ResponseStore, call_ids: list[str]) -> dict[str, Any]:
    """Details of a `calls_stored` event: each call_id with its record's checksum (absent ones left out)."""
    records: dict[str, str] = {}
    for call_id in call_ids:
        checksum = _record_checksum(store, call_id)
        if checksum is not None:
            records[call_id] = checksum
    return {"records": records}


def _record_checksum(store: ResponseStore, call_id: str) -> str | None:
    # Recomputed from the content, not read from its 'checksum' field: an edit that left the field alone
    # is caught as well as one that recomputed it.
    try:
        data = json.loads(store.record_path(call_id).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    body = {key: value for key, value in data.items() if key != "checksum"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _last_line(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    if size == 0:
        return b""
    chunk = 4096
    data = b""
    position = size
    while position > 0:
        step = min(chunk, position)
        position -= step
        data = os.pread(fd, step, position) + data
        if data.rstrip(b"\n").count(b"\n") >= 1:
            break
    return data.rstrip(b"\n").rsplit(b"\n", 1)[-1]


@dataclass(frozen=True)
class AuditVerdict:
    """The result of `verify_audit`.

    Attributes:
        ok: no problem found.
        entries: lines read.
        problems: one line per problem, naming the log line (1-based) or the record.
        head_hash: hash of the last valid line (pin it elsewhere to detect lines cut off the end).
    """

    ok: bool
    entries: int
    problems: tuple[str, ...]
    head_hash: str


def verify_audit(path: Path, store: ResponseStore | None = None) -> AuditVerdict:
    """Check the chain of the log at `path`; with `store`, also every record a `calls_stored` event logged.

    A record that was quarantined (logged as such later) may be missing; any other logged record must exist
    with the checksum it had when it was logged.
    """
    problems: list[str] = []
    prev_hash = GENESIS_HASH
    expected_seq = 1
    logged: dict[str, tuple[int, str]] = {}  # call_id -> (line, checksum)
    quarantined: set[str] = set()
    entries = 0
    lines = path.read_bytes().splitlines() if path.exists() else []
    for number, raw in enumerate(lines, start=1):
        entries += 1
        try:
            data = json.loads(raw)
            entry = AuditEntry.from_json_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{path} line {number}: not a valid audit entry ({exc}); the log was edited")
            break
        if entry_hash(data) != entry.hash:
            problems.append(f"{path} line {number}: its content does not match its hash; the line was edited")
            break
        if entry.prev_hash != prev_hash:
            problems.append(
                f"{path} line {number}: prev_hash does not match line {number - 1}'s hash; "
                "a line before it was edited, deleted or inserted"
            )
            break
        if entry.seq != expected_seq:
            problems.append(f"{path} line {number}: seq {entry.seq}, expected {expected_seq}; lines were deleted")
            break
        prev_hash, expected_seq = entry.hash, expected_seq + 1
        if entry.event == CALLS_STORED:
            for call_id, checksum in dict(entry.details.get("records", {})).items():
                logged[call_id] = (number, str(checksum))
        elif entry.event == RECORD_QUARANTINED:
            quarantined.add(str(entry.details.get("call_id", "")))
    if store is not None:
        for call_id, (number, checksum) in sorted(logged.items()):
            if call_id in quarantined:
                continue
            current = _record_checksum(store, call_id)
            if current is None:
                problems.append(f"record {call_id} (logged stored on line {number}) was deleted from {store.root}")
            elif current != checksum:
                problems.append(f"record {call_id} (logged stored on line {number}) was altered since it was logged")
    return AuditVerdict(not problems, entries, tuple(problems), prev_hash)


__all__ = [
    "AUDIT_FORMAT_VERSION",
    "CALLS_STORED",
    "CONFIG_HASH",
    "EVENT_TYPES",
    "RECORD_QUARANTINED",
    "REPORT_WRITTEN",
    "RUN_STARTED",
    "AuditEntry",
    "AuditVerdict",
    "append_audit",
    "audit_log_path",
    "calls_stored_details",
    "entry_hash",
    "verify_audit",
]
