"""The hash-chained audit log: round trip, and detection of edited, deleted or inserted lines and records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.audit import (
    CALLS_STORED,
    CONFIG_HASH,
    GENESIS_HASH,
    RECORD_QUARANTINED,
    REPORT_WRITTEN,
    RUN_STARTED,
    AuditEntry,
    append_audit,
    audit_log_path,
    calls_stored_details,
    verify_audit,
)
from pipeline.store import ResponseStore
from tests.test_store import make_record, make_spec


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Path, ResponseStore, list[str]]:
    """A store with three records and an audit log of one run that stored them."""
    store = ResponseStore(tmp_path / "store")
    call_ids = []
    for index in range(3):
        record = make_record(make_spec(f"audited {index}"))
        store.put(record)
        call_ids.append(record.call_id)
    path = audit_log_path(tmp_path, "exp")
    append_audit(path, RUN_STARTED, {"run_id": "r1"})
    append_audit(path, CONFIG_HASH, {"sha256": "ab" * 32})
    append_audit(path, CALLS_STORED, calls_stored_details(store, call_ids))
    append_audit(path, REPORT_WRITTEN, {"path": "runs/exp/r1/report.md"})
    return path, store, call_ids


def test_a_clean_log_verifies_and_round_trips(logged: tuple[Path, ResponseStore, list[str]]) -> None:
    path, store, _ = logged
    verdict = verify_audit(path, store)
    assert verdict.ok and verdict.entries == 4 and verdict.problems == ()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    entries = [AuditEntry.from_json_dict(line) for line in lines]
    assert [entry.to_json_dict() for entry in entries] == lines  # round trip
    assert entries[0].prev_hash == GENESIS_HASH and entries[1].prev_hash == entries[0].hash
    assert verdict.head_hash == entries[-1].hash
    assert entries[0].user and entries[0].host and entries[0].format_version == 1
    with pytest.raises(ValueError, match="unknown"):
        append_audit(path, "made_up_event")


def test_an_edited_line_is_detected(logged: tuple[Path, ResponseStore, list[str]]) -> None:
    path, _, _ = logged
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"ab', '"cd', 1)
    path.write_text("\n".join(lines) + "\n")
    verdict = verify_audit(path)
    assert not verdict.ok and "line 2" in verdict.problems[0] and "edited" in verdict.problems[0]


def test_a_deleted_line_is_detected(logged: tuple[Path, ResponseStore, list[str]]) -> None:
    path, _, _ = logged
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    verdict = verify_audit(path)
    assert not verdict.ok and "line 2" in verdict.problems[0]


def test_a_record_deleted_or_altered_after_it_was_logged_is_detected(
    logged: tuple[Path, ResponseStore, list[str]],
) -> None:
    path, store, call_ids = logged
    store.record_path(call_ids[0]).unlink()
    altered = store.record_path(call_ids[1])
    altered.write_bytes(altered.read_bytes().replace(b'"fruit"', b'"fruiT"', 1))  # checksum left alone
    verdict = verify_audit(path, store)
    assert not verdict.ok and len(verdict.problems) == 2
    assert any(call_ids[0] in problem and "deleted" in problem for problem in verdict.problems)
    assert any(call_ids[1] in problem and "altered" in problem for problem in verdict.problems)
    assert verify_audit(path).ok  # the chain itself is intact


def test_a_quarantined_record_may_be_missing(logged: tuple[Path, ResponseStore, list[str]]) -> None:
    path, store, call_ids = logged
    store.record_path(call_ids[2]).unlink()
    append_audit(path, RECORD_QUARANTINED, {"call_id": call_ids[2], "reason": "checksum mismatch"})
    assert verify_audit(path, store).ok
