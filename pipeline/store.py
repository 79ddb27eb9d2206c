"""ResponseStore: one durable, checksummed JSON record per call, keyed by call_id.

The store is at once the archive (every response kept with its request, usage, cost and timing), the cache
(a stored call_id is never sent again) and the resume mechanism (a crashed run resumes from what is here).
Layout under the root:

    records/<id[:2]>/<id>.json     one StoredResponse, written atomically (temp file, fsync, rename)
    substitutes/<id[:2]>/<id>.json a planned call answered by a fallback model: points at that model's record
    traces/<id[:2]>/<id>.jsonl     every attempt of the call, failed ones included, one JSON line each
    quarantine/                    records whose checksum failed, moved aside for inspection

`put` makes one record durable with two fsyncs (the file, then its folder). The LLM client's responses
are group-committed instead, by a writer process (pipeline/store_writer.py, pipeline/group_commit.py):
the same files, two syncs per group.

Records never contain API keys: requests are stored from `CallSpec.to_record()` (which has no key field),
and error messages and traces pass through `scrub_secrets`. Answers and raw provider responses are kept
exactly as returned (they are the archive); a provider never echoes the caller's key in a response.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.calls import CallSpec, canonical_json, diff_output_fields
from pipeline.group_commit import append_line, fsync_path, write_temp
from pipeline.llm.errors import AssayError
from pipeline.secrets import scrub_secrets as scrub_secrets  # re-exported: callers import it from here
from pipeline.secrets import scrub_with
from pipeline.secrets import secret_env_values as secret_env_values

log = logging.getLogger(__name__)

RECORD_FORMAT_VERSION = 1


def utc_now() -> str:
    """ISO-8601 UTC timestamp with microseconds."""
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class StoredResponse:
    """One answered call as kept on disk (format version RECORD_FORMAT_VERSION).

    Attributes:
        call_id: content hash of the request (see pipeline.calls).
        request: the CallSpec as `to_record()` (no keys).
        text: the answer's text content.
        raw_response: the provider's response body as litellm returned it.
        usage: {'prompt_tokens': int, 'completion_tokens': int}.
        cost_usd: usage x the alias's price.
        latency_s: seconds of the successful attempt.
        started_at / finished_at: ISO UTC times of the whole call (all attempts).
        attempts: attempts made, over all models tried.
        model_used: litellm id that answered (differs from the request's after a fallback).
        alias_used: the zoo alias that answered.
    """

    call_id: str
    request: dict[str, Any]
    text: str
    raw_response: dict[str, Any]
    usage: dict[str, int]
    cost_usd: float
    latency_s: float
    started_at: str
    finished_at: str
    attempts: int
    model_used: str
    alias_used: str
    format_version: int = RECORD_FORMAT_VERSION
    stored_at: str = field(default_factory=utc_now)

    def to_json_dict(self) -> dict[str, Any]:
        """The record with its checksum, ready to write."""
        body = self._body()
        return {**body, "checksum": _checksum(body)}

    def _body(self) -> dict[str, Any]:
        request = self.request
        api_base = request.get("api_base")
        if isinstance(api_base, str):
            # An endpoint may carry a key in its query string (?key=...); the call_id keeps the real one.
            request = {**request, "api_base": _scrubbed_api_base(api_base)}
        return {
            "format_version": self.format_version,
            "call_id": self.call_id,
            "request": request,
            "text": self.text,
            "raw_response": self.raw_response,
            "usage": self.usage,
            "cost_usd": self.cost_usd,
            "latency_s": self.latency_s,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "stored_at": self.stored_at,
            "attempts": self.attempts,
            "model_used": self.model_used,
            "alias_used": self.alias_used,
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> StoredResponse:
        """Parse a record; raises CorruptRecord if the checksum or the shape is wrong."""
        data = dict(data)
        version = data.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > RECORD_FORMAT_VERSION:
            # Checked before the checksum: a newer format may checksum differently, and it is not corrupt.
            raise StoreFormatTooNew("(record)", version)
        checksum = data.pop("checksum", None)
        if checksum != _checksum(data):
            raise CorruptRecord(f"checksum mismatch (stored {checksum!r})")
        if data.get("format_version") != RECORD_FORMAT_VERSION:
            raise CorruptRecord(
                f"format_version {data.get('format_version')!r}; this Assay reads {RECORD_FORMAT_VERSION}"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise CorruptRecord(f"unexpected fields: {exc}") from None

    @property
    def spec(self) -> CallSpec:
        """The request as a CallSpec."""
        return CallSpec.from_record(self.request)


class _RecordCache:
    """Verified records by path and file version, least recently used dropped first (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Path, tuple[tuple[int, int], StoredResponse]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, version: tuple[int, int]) -> StoredResponse | None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(path)
            return entry[1]

    def put(self, path: Path, version: tuple[int, int], record: StoredResponse) -> None:
        with self._lock:
            self._entries[path] = (version, record)
            self._entries.move_to_end(path)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


class CorruptRecord(Exception):
    """A stored record failed its checksum or does not parse; it is treated as a miss."""


class StoreFormatTooNew(AssayError):
    """A stored record was written by a newer Assay (a higher format_version): it is left alone, never reused
    as if corrupt (quarantining it would make this Assay pay for the call again)."""

    def __init__(self, path: str, version: int) -> None:
        super().__init__(
            f"{path}: record format_version {version} was written by a newer Assay; this Assay reads "
            f"format_version {RECORD_FORMAT_VERSION}. Upgrade Assay (pip install -U assay, or git pull) to use "
            "this store; the record was left in place"
        )
        self.path = path
        self.version = version


@functools.lru_cache(maxsize=64)
def _scrubbed_api_base(api_base: str) -> str:
    # Cached: a run has a handful of endpoints and writes thousands of records.
    return scrub_with(api_base, secret_env_values())


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MissExplanation:
    """Why a call was not found: the nearest stored call of the same item and the fields that differ."""

    call_id: str
    found: bool
    nearest_call_id: str | None
    differing_fields: tuple[str, ...]
    candidates: int

    def __str__(self) -> str:
        if self.found:
            return f"call {self.call_id} is stored"
        if self.nearest_call_id is None:
            return f"call {self.call_id}: no stored call for this item ({self.candidates} records looked at)"
        return (
            f"call {self.call_id}: nearest stored call {self.nearest_call_id} differs in "
            f"{', '.join(self.differing_fields)}"
        )


class ResponseStore:
    """Content-addressed, checksummed records of answered calls, plus per-call attempt traces."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.traces_dir = self.root / "traces"
        self.quarantine_dir = self.root / "quarantine"
        self.substitutes_dir = self.root / "substitutes"
        self.corrupt_seen: list[str] = []

    # -- paths ------------------------------------------------------------------------------------------
    def record_path(self, call_id: str) -> Path:
        """Where the record of `call_id` lives."""
        return self.records_dir / call_id[:2] / f"{call_id}.json"

    def trace_path(self, call_id: str) -> Path:
        """Where the attempt trace of `call_id` lives."""
        return self.traces_dir / call_id[:2] / f"{call_id}.jsonl"

    # -- records ----------------------------------------------------------------------------------------
    def put(self, record: StoredResponse) -> Path:
        """Write `record` durably: temp file in the same folder, fsync, atomic rename, fsync the folder."""
        path = self.record_path(record.call_id)
        temp = write_temp(str(path), record_bytes(record))
        try:
            fsync_path(temp)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return path

    def get(self, call_id: str) -> StoredResponse | None:
        """The record of `call_id`, or None if absent or corrupt (a corrupt one is reported and quarantined).

        Raises StoreFormatTooNew for a record written by a newer Assay (it stays where it is).

        The stages of a run read each record several times (status, extraction, evaluation, report); a
        record this process has verified is reused while its file is unchanged (same mtime and size).
        """
        path = self.record_path(call_id)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        cached = _RECORDS.get(path, (stat.st_mtime_ns, stat.st_size))
        if cached is not None:
            return cached
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = StoredResponse.from_json_dict(json.loads(raw))
        except StoreFormatTooNew as exc:
            raise StoreFormatTooNew(str(path), exc.version) from None
        except (CorruptRecord, json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._quarantine(path, call_id, str(exc))
            return None
        _RECORDS.put(path, (stat.st_mtime_ns, stat.st_size), record)
        return record

    def has(self, call_id: str) -> bool:
        """True if a valid record exists (verifies the checksum)."""
        return self.get(call_id) is not None

    def iter_records(self) -> Iterator[StoredResponse]:
        """Every valid record in the store (corrupt ones are reported and skipped)."""
        if not self.records_dir.exists():
            return
        for path in sorted(self.records_dir.glob("*/*.json")):
            record = self.get(path.stem)
            if record is not None:
                yield record

    def stored_ids(self) -> set[str]:
        """call_ids with a record file (not checksum-verified: a cheap listing for status views)."""
        if not self.records_dir.exists():
            return set()
        return {path.stem for path in self.records_dir.glob("*/*.json")}

    # -- substitutions: a fallback model answered a planned call -----------------------------------------
    def substitute_path(self, call_id: str) -> Path:
        """Where the pointer from a planned call to the fallback call that answered it lives."""
        return self.substitutes_dir / call_id[:2] / f"{call_id}.json"

    def put_substitute(self, call_id: str, answered_call_id: str, alias: str) -> None:
        """Record that `answered_call_id` (a fallback model's call, stored under its own id) answered `call_id`.

        The planned call itself stays unstored, so a later `assay run` asks its model again; until then
        (and for `assay resume`) the fallback's answer stands in for it.
        """
        path = self.substitute_path(call_id)
        body = json.dumps({"call_id": call_id, "answered_call_id": answered_call_id, "alias": alias})
        temp = write_temp(str(path), body.encode("utf-8"))
        fsync_path(temp)
        os.replace(temp, path)

    def substituted_ids(self) -> set[str]:
        """Planned calls answered by a fallback (a folder listing)."""
        if not self.substitutes_dir.exists():
            return set()
        return {path.stem for path in self.substitutes_dir.glob("*/*.json")}

    def get_answer(self, call_id: str) -> StoredResponse | None:
        """The record that answers `call_id`: its own, else the fallback's that stood in for it, else None."""
        record = self.get(call_id)
        if record is not None:
            return record
        try:
            pointer = json.loads(self.substitute_path(call_id).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return self.get(str(pointer.get("answered_call_id", "")))

    def answered_ids(self) -> set[str]:
        """Calls with a record of their own or a fallback's answer (listings only)."""
        return self.stored_ids() | self.substituted_ids()

    def _quarantine(self, path: Path, call_id: str, reason: str) -> None:
        log.warning("corrupt response record %s (%s): treated as a miss, moved to quarantine/", path, reason)
        self.corrupt_seen.append(call_id)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / f"{call_id}.{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}.json"
        with contextlib.suppress(FileNotFoundError):  # another reader moved it first
            os.replace(path, target)

    # -- traces -----------------------------------------------------------------------------------------
    def append_trace(self, call_id: str, event: dict[str, Any]) -> None:
        """Append one attempt to the call's trace. Text fields are scrubbed of secrets."""
        append_line(str(self.trace_path(call_id)), self.trace_line(call_id, event, secret_env_values()))

    @staticmethod
    def trace_line(call_id: str, event: dict[str, Any], secrets: list[tuple[str, str]]) -> bytes:
        """One trace line: the event with a timestamp, its text fields scrubbed of `secrets` and key shapes."""
        clean = {key: _scrub_value(value, secrets) for key, value in event.items()}
        return (json.dumps({"call_id": call_id, "at": utc_now(), **clean}, ensure_ascii=False) + "\n").encode("utf-8")

    def read_trace(self, call_id: str) -> list[dict[str, Any]]:
        """All attempts recorded for `call_id`, oldest first."""
        path = self.trace_path(call_id)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # -- diagnostics ------------------------------------------------------------------------------------
    def explain_miss(self, spec: CallSpec) -> MissExplanation:
        """Name the fields in which `spec` differs from the nearest stored call of the same item."""
        if self.has(spec.call_id):
            return MissExplanation(spec.call_id, True, spec.call_id, (), 1)
        best: tuple[int, str, list[str]] | None = None
        candidates = 0
        for record in self.iter_records():
            if record.request.get("item_id") != spec.item_id:
                continue
            candidates += 1
            differing = diff_output_fields(spec, record.request)
            if best is None or len(differing) < best[0]:
                best = (len(differing), record.call_id, differing)
        if best is None:
            return MissExplanation(spec.call_id, False, None, (), candidates)
        return MissExplanation(spec.call_id, False, best[1], tuple(best[2]), candidates)


def _scrub_value(value: Any, secrets: list[tuple[str, str]]) -> Any:
    # Nested too: a provider's error body may arrive as a dict or a list of details.
    if isinstance(value, str):
        return scrub_with(value, secrets)
    if isinstance(value, dict):
        return {key: _scrub_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(item, secrets) for item in value]
    return value


_RECORDS = _RecordCache(capacity=20_000)  # ~5 KB each: at most ~100 MB, and only in processes that read many


def record_bytes(record: StoredResponse) -> bytes:
    """The record as written to disk: compact JSON with its checksum (`jq .` shows it indented).

    Compact because the json module's indenting encoder is pure Python: 40 us a record against 10 us.
    """
    return json.dumps(record.to_json_dict(), ensure_ascii=False).encode("utf-8")


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fsync_path(str(directory))
