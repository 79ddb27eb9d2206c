"""ResponseStore: durable, checksummed records; corrupt ones are quarantined and re-sent; traces; explain_miss."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest

from pipeline.calls import CallSpec
from pipeline.llm.client import LLMClient
from pipeline.store import RECORD_FORMAT_VERSION, ResponseStore, StoredResponse, StoreFormatTooNew
from tests.conftest import msgs, run
from tests.fakes.openai_server import FakeOpenAIServer


def make_spec(text: str = "Classify: red apple", **changes: object) -> CallSpec:
    spec = CallSpec(alias="fake", model="openai/fake-model", version="1", messages=tuple(msgs(text)), item_id="i1")
    return dataclasses.replace(spec, **changes) if changes else spec


def make_record(spec: CallSpec, text: str = "fruit") -> StoredResponse:
    return StoredResponse(
        call_id=spec.call_id,
        request=spec.to_record(),
        text=text,
        raw_response={"id": "chatcmpl-1", "choices": [{"message": {"content": text}}], "ünïcode": "✓"},
        usage={"prompt_tokens": 12, "completion_tokens": 3},
        cost_usd=1.8e-05,
        latency_s=0.0123,
        started_at="2024-01-01T00:00:00+00:00",
        finished_at="2024-01-01T00:00:01+00:00",
        attempts=2,
        model_used="openai/fake-model",
        alias_used="fake",
    )


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.endswith(".tmp")]


def test_round_trip(store: ResponseStore) -> None:
    spec = make_spec()
    record = make_record(spec)
    path = store.put(record)
    assert path == store.record_path(spec.call_id)
    assert store.get(spec.call_id) == record
    assert store.has(spec.call_id)
    assert store.get(spec.call_id).spec == spec  # type: ignore[union-attr]
    assert store.stored_ids() == {spec.call_id}
    assert [r.call_id for r in store.iter_records()] == [spec.call_id]
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk["format_version"] == RECORD_FORMAT_VERSION
    assert on_disk["checksum"]
    assert StoredResponse.from_json_dict(record.to_json_dict()) == record


def test_missing_record_is_none(store: ResponseStore) -> None:
    assert store.get("0" * 32) is None
    assert not store.has("0" * 32)
    assert store.stored_ids() == set()
    assert list(store.iter_records()) == []


def test_put_overwrites_atomically_and_leaves_no_temp_files(store: ResponseStore) -> None:
    spec = make_spec()
    for index in range(5):
        store.put(make_record(spec, text=f"answer {index}"))
    assert store.get(spec.call_id).text == "answer 4"  # type: ignore[union-attr]
    assert temp_files(store.root) == []
    assert [p.name for p in store.record_path(spec.call_id).parent.iterdir()] == [f"{spec.call_id}.json"]


def test_failed_write_keeps_the_old_record_and_no_temp_file(
    store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec()
    store.put(make_record(spec, text="old"))

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.put(make_record(spec, text="new"))
    monkeypatch.undo()
    assert store.get(spec.call_id).text == "old"  # type: ignore[union-attr]
    assert temp_files(store.root) == []


def flip_a_byte(path: Path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    index = data.index(needle)
    data[index] ^= 0x01  # e.g. 'f' -> 'g': still valid JSON, wrong checksum
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("needle", [b"fruit", b"cost_usd", b"{"], ids=["value", "key", "structure"])
def test_corrupt_record_is_a_quarantined_and_reported_miss(
    store: ResponseStore, caplog: pytest.LogCaptureFixture, needle: bytes
) -> None:
    spec = make_spec()
    path = store.put(make_record(spec))
    flip_a_byte(path, needle)
    with caplog.at_level(logging.WARNING, logger="pipeline.store"):
        assert store.get(spec.call_id) is None
    assert not path.exists()
    quarantined = list(store.quarantine_dir.iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith(spec.call_id)
    assert store.corrupt_seen == [spec.call_id]
    assert any("corrupt response record" in r.getMessage() and spec.call_id in r.getMessage() for r in caplog.records)
    assert store.get(spec.call_id) is None  # now simply absent; no second report
    assert store.corrupt_seen == [spec.call_id]


def test_record_of_an_older_format_version_is_a_miss(store: ResponseStore) -> None:
    spec = make_spec()
    record = dataclasses.replace(make_record(spec), format_version=RECORD_FORMAT_VERSION - 1)
    store.put(record)  # a correct checksum, but a format this code does not read
    assert store.get(spec.call_id) is None
    assert store.corrupt_seen == [spec.call_id]


def test_record_of_a_newer_format_version_is_refused_in_place_and_never_paid_again(
    client: LLMClient, store: ResponseStore, server: FakeOpenAIServer
) -> None:
    messages = msgs("written by a newer assay")
    spec = client.spec_for("fake", messages)
    newer = dataclasses.replace(make_record(spec), format_version=RECORD_FORMAT_VERSION + 1)
    path = store.put(newer)
    content = path.read_bytes()
    with pytest.raises(StoreFormatTooNew) as info:
        store.get(spec.call_id)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert f"format_version {RECORD_FORMAT_VERSION + 1}" in message
    assert f"reads format_version {RECORD_FORMAT_VERSION}" in message and "Upgrade Assay" in message
    with pytest.raises(StoreFormatTooNew):
        run(client.complete(spec))  # refused: not treated as a miss, so not sent again
    assert server.count(messages) == 0
    assert path.read_bytes() == content  # never moved, never rewritten
    assert not store.quarantine_dir.exists() and store.corrupt_seen == []


def test_corrupt_record_is_sent_again_by_the_client(
    client: LLMClient, store: ResponseStore, server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    messages = msgs("corrupt me")
    spec = client.spec_for("fake", messages)
    first = run(client.complete(spec))
    flip_a_byte(store.record_path(spec.call_id), first.text.encode())
    with caplog.at_level(logging.WARNING, logger="pipeline.store"):
        again = run(client.complete(spec))
    assert not again.from_store
    assert again.text == first.text
    assert server.count(messages) == 2
    assert store.corrupt_seen == [spec.call_id]
    assert store.get(spec.call_id) is not None  # the fresh answer is stored
    assert len(list(store.quarantine_dir.iterdir())) == 1


def test_trace_has_a_line_for_every_attempt(client: LLMClient, store: ResponseStore, server: FakeOpenAIServer) -> None:
    messages = msgs("flaky twice")
    server.inject("500", times=1, match="flaky twice")
    server.inject("503", times=1, match="flaky twice")
    result = run(client.complete(client.spec_for("fake", messages)))
    trace = store.read_trace(result.call_id)
    assert [(e["attempt"], e["outcome"], e.get("status_code")) for e in trace] == [
        (1, "error", 500),
        (2, "error", 503),
        (3, "ok", None),
    ]
    assert all(e["call_id"] == result.call_id and e["alias"] == "fake" and e["at"] for e in trace)
    assert result.attempts == 3 == server.count(messages)


def test_trace_unit(store: ResponseStore) -> None:
    assert store.read_trace("f" * 32) == []
    store.append_trace("f" * 32, {"event": "attempt", "attempt": 1})
    store.append_trace("f" * 32, {"event": "attempt", "attempt": 2})
    assert [e["attempt"] for e in store.read_trace("f" * 32)] == [1, 2]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"temperature": 0.7}, ("temperature",)),
        ({"seed": 3, "max_tokens": 100}, ("max_tokens", "seed")),
        ({"version": "2"}, ("version",)),
        ({"messages": tuple(msgs("Classify: green apple"))}, ("messages",)),
        ({"repeat": 2}, ("repeat",)),
    ],
)
def test_explain_miss_names_the_differing_fields(
    store: ResponseStore, changes: dict[str, object], expected: tuple[str, ...]
) -> None:
    stored = make_spec()
    store.put(make_record(stored))
    store.put(make_record(make_spec("Classify: pear", item_id="other-item")))  # another item: not compared
    wanted = dataclasses.replace(stored, **changes)
    explanation = store.explain_miss(wanted)
    assert not explanation.found
    assert explanation.nearest_call_id == stored.call_id
    assert explanation.differing_fields == expected
    assert explanation.candidates == 1
    assert ", ".join(expected) in str(explanation)


def test_explain_miss_when_found_or_nothing_to_compare(store: ResponseStore) -> None:
    spec = make_spec()
    assert store.explain_miss(spec).nearest_call_id is None
    assert "no stored call for this item" in str(store.explain_miss(spec))
    store.put(make_record(spec))
    assert store.explain_miss(spec).found


def test_a_record_read_again_after_it_changed_is_read_from_disk(store: ResponseStore) -> None:
    spec = make_spec()
    store.put(make_record(spec, text="first"))
    assert store.get(spec.call_id).text == "first"  # type: ignore[union-attr]  # now cached
    store.put(make_record(spec, text="second answer"))  # a new file (rename): another version
    assert store.get(spec.call_id).text == "second answer"  # type: ignore[union-attr]
    path = store.record_path(spec.call_id)
    path.write_text(path.read_text(encoding="utf-8").replace("second answer", "tampered"), encoding="utf-8")
    assert store.get(spec.call_id) is None  # the change is seen and the checksum catches it
    path.unlink(missing_ok=True)
    assert store.get(spec.call_id) is None


def test_cached_records_cannot_be_changed_in_place(store: ResponseStore) -> None:
    spec = make_spec()
    store.put(make_record(spec))
    record = store.get(spec.call_id)
    assert record is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.text = "changed"  # type: ignore[misc]
