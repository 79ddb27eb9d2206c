"""StoreWriter: records durable before `write` returns, grouped, and never lost when the writer process dies."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
from pathlib import Path

import pytest

from pipeline.store import ResponseStore, StoredResponse
from pipeline.store_writer import StoreWriter
from tests.test_store import make_record, make_spec, temp_files


def _records(count: int, tag: str = "item") -> list[StoredResponse]:
    return [make_record(make_spec(f"Classify: {tag} {index}")) for index in range(count)]


async def _write_all(writer: StoreWriter, records: list[StoredResponse]) -> list[Path]:
    return await asyncio.gather(*(writer.write(record) for record in records))


@pytest.mark.parametrize("use_process", [True, False], ids=["process", "thread"])
def test_concurrent_writes_are_grouped_and_durable_on_return(store: ResponseStore, use_process: bool) -> None:
    writer = StoreWriter(store, use_process=use_process)
    records = _records(200)

    async def main() -> None:
        paths = await _write_all(writer, records)
        # Durable means on disk when write() returns, not eventually.
        assert all(store.get(record.call_id) == record for record in records)
        assert paths == [store.record_path(record.call_id) for record in records]

    asyncio.run(main())
    if use_process:
        assert 1 <= writer.groups_sent < len(records)  # one turn of the loop queued them all
    writer.close()
    assert temp_files(store.root) == []


def test_a_trace_queued_before_a_record_is_on_disk_with_it(store: ResponseStore) -> None:
    writer = StoreWriter(store)
    record = _records(1)[0]

    async def main() -> None:
        writer.trace(record.call_id, {"event": "attempt", "attempt": 1, "outcome": "ok"})
        await writer.write(record)
        assert [line["outcome"] for line in store.read_trace(record.call_id)] == ["ok"]

    asyncio.run(main())
    writer.close()


def test_trace_lines_are_scrubbed_of_keys(store: ResponseStore, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-" + "live" + "1234567890abcdef"  # built at run time: secret scanners skip the file
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    writer = StoreWriter(store)

    async def main() -> None:
        writer.trace("c" * 64, {"event": "attempt", "message": f"bad key {secret}"})
        await writer.flush()

    asyncio.run(main())
    writer.close()
    text = store.trace_path("c" * 64).read_text()
    assert secret not in text and "redacted" in text


def test_one_writer_serves_one_event_loop_after_another(store: ResponseStore) -> None:
    writer = StoreWriter(store)
    first, second = _records(10, "first"), _records(10, "second")
    asyncio.run(_write_all(writer, first))
    asyncio.run(_write_all(writer, second))  # a new loop: the writer re-registers with it
    assert len(store.stored_ids()) == 20
    writer.close()


def test_records_sent_to_a_writer_that_dies_are_written_here(store: ResponseStore) -> None:
    """Frames sit in the pipe of a stopped writer, which is then killed: nothing it held may be lost."""
    writer = StoreWriter(store)
    asyncio.run(_write_all(writer, _records(1, "start")))  # starts the writer process
    child = writer._child
    assert child is not None
    records = _records(50, "in flight")

    async def main() -> None:
        os.kill(child.pid, signal.SIGSTOP)  # it reads nothing more: the frames wait in its pipe
        writes = asyncio.gather(*(writer.write(record) for record in records))
        await asyncio.sleep(0.2)
        assert not writes.done() and writer._in_flight
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.wait_for(writes, timeout=30)

    asyncio.run(main())
    assert all(store.get(record.call_id) == record for record in records)
    # The next write starts a new writer process.
    asyncio.run(_write_all(writer, _records(3, "after")))
    assert writer._child is not None and writer._child.pid != child.pid
    assert len(store.stored_ids()) == 54
    writer.close()


def test_a_writer_that_cannot_be_reached_falls_back_before_sending(store: ResponseStore) -> None:
    writer = StoreWriter(store)
    asyncio.run(_write_all(writer, _records(1, "start")))
    child = writer._child
    assert child is not None
    child.kill()
    child.wait(timeout=10)
    records = _records(20, "after the death")
    asyncio.run(_write_all(writer, records))  # the pipe is broken or EOF is seen: written here or anew
    assert all(store.get(record.call_id) == record for record in records)
    writer.close()


def test_a_dropped_writer_ends_its_process(store: ResponseStore) -> None:
    writer = StoreWriter(store)
    asyncio.run(_write_all(writer, _records(2)))
    child = writer._child
    assert child is not None
    del writer
    gc.collect()
    try:
        assert child.wait(timeout=10) == 0  # EOF on its stdin, nothing left to commit: a clean exit
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("the writer process outlived its StoreWriter")


def test_close_stops_the_writer_process(store: ResponseStore) -> None:
    writer = StoreWriter(store)
    asyncio.run(_write_all(writer, _records(5)))
    child = writer._child
    assert child is not None
    writer.close()
    assert child.poll() == 0


def test_close_inside_a_running_loop_stops_watching_the_writer_pipe(store: ResponseStore) -> None:
    writer = StoreWriter(store)

    async def main() -> None:
        await _write_all(writer, _records(3))
        child = writer._child
        assert child is not None and child.stdout is not None
        fd = child.stdout.fileno()
        writer.close()
        # Still registered, the loop would poll a closed (or reused) descriptor.
        assert not asyncio.get_running_loop().remove_reader(fd)

    asyncio.run(main())
