"""A full disk while storing responses: nothing paid for is lost, nothing is paid twice.

The writer process is told to fail every file write after the first N with ENOSPC
(ASSAY_STORE_FAIL_AFTER_WRITES); calls go over real HTTP to the fake server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ModelZoo
from pipeline.llm.client import LLMClient
from pipeline.runner import CallRunner
from pipeline.store import ResponseStore
from pipeline.store_spill import SPILL_ENV
from tests.conftest import FAST_RETRY, msgs
from tests.fakes.openai_server import FakeOpenAIServer

N_CALLS = 40
WRITES_ALLOWED = 12  # trace lines and record files of the first few calls; every later write fails


def test_full_disk_stops_new_calls_keeps_paid_bytes_and_the_next_run_pays_for_nothing_answered(
    zoo: ModelZoo, store: ResponseStore, server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spill = tmp_path / "spill"
    monkeypatch.setenv(SPILL_ENV, str(spill))
    monkeypatch.setenv("ASSAY_STORE_FAIL_AFTER_WRITES", str(WRITES_ALLOWED))  # the writer process inherits it
    # Counted across processes: the disk stays full for this client's own retry at close, as a real one would.
    monkeypatch.setenv("ASSAY_STORE_FAIL_COUNTER", str(tmp_path / "writes"))
    conversations = [msgs(f"full disk call {index}") for index in range(N_CALLS)]
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    specs = [client.spec_for("fake", messages) for messages in conversations]
    runner = CallRunner(client, max_in_flight=4)
    try:
        outcomes = list(runner.run(specs))
    finally:
        client.close()
    summary = runner.summary

    assert summary.stopped_by == "store"
    paid = server.stats()["answered_ok_total"]
    assert paid < N_CALLS  # it stopped sending: no new call after the first failed write...
    assert paid <= len(store.stored_ids()) + summary.errors.get("StoreWriteFailed", 0)
    assert summary.not_started >= N_CALLS - paid - 4  # ...only calls in flight then (4 at most) were sent
    failures = [o.error for o in outcomes if o.error_type == "StoreWriteFailed"]
    assert failures and all("\n" not in error for error in failures)
    assert "No space left on device" in failures[0] and "Free space there" in failures[0]
    assert str(store.root) in failures[0] and "mounted at" in failures[0] and str(spill) in failures[0]
    spilled = {path.stem for path in (spill / "records").glob("*/*.json")}
    stored_before = store.stored_ids()
    assert spilled and not spilled & stored_before
    answered = {
        spec.call_id for spec, messages in zip(specs, conversations, strict=True) if server.answered_ok(messages)
    }
    assert answered == stored_before | spilled  # every paid response is in the store or the spill folder

    # Space freed: the next client stores the kept bytes first, then sends only what was never answered.
    monkeypatch.delenv("ASSAY_STORE_FAIL_AFTER_WRITES")
    monkeypatch.delenv("ASSAY_STORE_FAIL_COUNTER")
    again = LLMClient(zoo, store, retry=FAST_RETRY)
    try:
        assert again.recovered.stored == len(spilled)
        assert answered <= store.stored_ids()
        resumed = CallRunner(again, max_in_flight=4)
        assert all(outcome.ok for outcome in resumed.run(specs))
    finally:
        again.close()
    assert resumed.summary.from_store == len(answered)
    assert all(server.answered_ok(messages) == 1 for messages in conversations)  # nothing paid twice
    assert len(store.stored_ids()) == N_CALLS
    assert not list((spill / "records").glob("*/*.json"))


def test_full_disk_without_a_spill_folder_keeps_bytes_in_memory_and_says_how_to_keep_them(
    zoo: ModelZoo, store: ResponseStore, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SPILL_ENV, raising=False)
    monkeypatch.setenv("ASSAY_STORE_FAIL_AFTER_WRITES", "0")
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    specs = [client.spec_for("fake", msgs(f"no spill {index}")) for index in range(6)]
    runner = CallRunner(client, max_in_flight=1)
    outcomes = list(runner.run(specs))
    assert runner.summary.stopped_by == "store"
    assert server.stats()["answered_ok_total"] == 1  # one in flight: the first call, then nothing
    assert [o.error_type for o in outcomes] == ["StoreWriteFailed"]
    assert "kept in memory" in outcomes[0].error and SPILL_ENV in outcomes[0].error
    assert len(client._writer.kept) == 1
    monkeypatch.delenv("ASSAY_STORE_FAIL_AFTER_WRITES")  # space freed before the run ends: close writes them
    client.close()
    assert store.stored_ids() == {specs[0].call_id}
