"""Store management: stats, a full checksum pass, gc that keeps what plans need, export."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import timedelta
from pathlib import Path

from pipeline.store import RECORD_FORMAT_VERSION, ResponseStore
from pipeline.store_admin import export, gc, store_stats, verify_store
from tests.test_store import make_record, make_spec


def _fill(store: ResponseStore, n: int, *, days_old: float = 0.0) -> list[str]:
    ids = []
    for index in range(n):
        record = make_record(make_spec(f"admin {days_old} {index}"))
        if days_old:
            stamp = time.time() - days_old * 86400
            record = dataclasses.replace(record, stored_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(stamp)))
        store.put(record)
        store.append_trace(record.call_id, {"event": "attempt", "outcome": "ok"})
        ids.append(record.call_id)
    return ids


def test_stats_count_records_traces_and_cost(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "store")
    _fill(store, 3)
    stats = store_stats(store)
    assert (stats.records, stats.traces, stats.quarantined) == (3, 3, 0)
    assert stats.record_bytes > 0 and stats.by_alias == {"fake": 3}
    assert stats.cost_usd == sum(r.cost_usd for r in store.iter_records())


def test_verify_finds_every_tampered_record_and_moves_nothing(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "store")
    ids = _fill(store, 4)
    flipped = store.record_path(ids[0])
    flipped.write_bytes(flipped.read_bytes().replace(b'"fruit"', b'"fruiT"', 1))
    renamed = store.record_path(ids[1])
    os.replace(renamed, renamed.with_name("ab" + renamed.name[2:]))
    newer = make_record(make_spec("from the future"))
    store.put(dataclasses.replace(newer, format_version=RECORD_FORMAT_VERSION + 1))
    verdict = verify_store(store)
    assert verdict.checked == 5 and verdict.ok == 2 and not verdict.clean
    assert (
        len(verdict.corrupt) == 2
        and "checksum" in " ".join(verdict.corrupt)
        and "holds call_id" in " ".join(verdict.corrupt)
    )
    assert verdict.too_new == (str(store.record_path(newer.call_id)),)
    assert flipped.exists() and not store.quarantine_dir.exists()  # verification changes nothing


def test_gc_deletes_old_records_but_never_one_a_plan_needs(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "store")
    old = _fill(store, 4, days_old=40)
    recent = _fill(store, 2)
    needed = {old[0], old[1]}
    dry = gc(store, timedelta(days=30), keep=needed, dry_run=True)
    assert set(dry.deleted) == set(old[2:]) and len(store.stored_ids()) == 6
    result = gc(store, timedelta(days=30), keep=needed)
    assert set(result.deleted) == set(old[2:]) and result.bytes_freed > 0
    assert (result.kept_needed, result.kept_recent) == (2, 2)
    assert store.stored_ids() == needed | set(recent)
    assert not store.trace_path(old[2]).exists() and store.trace_path(old[0]).exists()
    assert gc(store, timedelta(days=0), keep=store.stored_ids()).deleted == ()  # everything needed: nothing goes


def test_export_copies_verified_records_with_traces(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "store")
    ids = _fill(store, 3)
    bad = store.record_path(ids[2])
    bad.write_bytes(bad.read_bytes().replace(b'"fruit"', b'"fruiT"', 1))
    result = export(store, [ids[0], ids[1], ids[2], "0" * 32], tmp_path / "out")
    assert set(result.exported) == {ids[0], ids[1]} and set(result.missing) == {ids[2], "0" * 32}
    copy = ResponseStore(tmp_path / "out")
    assert copy.get(ids[0]) == store.get(ids[0])
    assert copy.read_trace(ids[1]) == store.read_trace(ids[1])
    assert verify_store(copy).clean
