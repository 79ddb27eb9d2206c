"""StoreWriter: the client's responses made durable in groups, by a writer process, before `complete` returns.

Why a process: on two cores the calls are CPU-bound on one GIL (litellm spends ~3.7 ms of CPU per call,
partly in its own threads). Writing each record from the event loop or from threads costs more than its
system calls: every one of them releases the GIL, and taking it back behind litellm's threads costs up to
the 5 ms switch interval. Measured in benchmarks/throughput.py: per-record fsyncs from 32 threads gave
0.70-0.78x bare litellm; one committing thread starved for the GIL (p50 1.7 s to durable); the loop writing
the files itself cost ~250 us of its time per record. The writer process (pipeline/group_commit.py, only
the standard library) has its own GIL: the loop hands it each group as one pipe write and reads one
acknowledgement per group through its selector, with no thread of ours in this process at all.

Groups form by themselves: records queued in one turn of the event loop are sent as one frame, and the
writer commits every frame already in its pipe together (two syncs for all). A record's future resolves
when its group is durable. If the writer dies or cannot start, the records it had not acknowledged are
written here instead (the bytes are kept until acknowledged), so a response is never lost to it.
ASSAY_STORE_WRITER=thread commits in a thread of this process instead (no child process).

A write that fails (ENOSPC: a full disk) does not lose the paid response: its bytes are kept in memory and,
when ASSAY_STORE_SPILL_DIR names a folder (best on another disk), copied there at once; the record's
`write` raises StoreWriteFailed naming the full file system and what to free. `close` tries the kept bytes
once more; the next LLMClient stores spilled ones before anything else (pipeline/store_spill.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import subprocess
import sys
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import group_commit
from pipeline.group_commit import FrameReader, commit, encode_frame
from pipeline.llm.errors import StoreWriteFailed
from pipeline.store import ResponseStore, StoredResponse, record_bytes, secret_env_values
from pipeline.store_spill import full_disk_message, spill, spill_dir

log = logging.getLogger(__name__)

PIPE_BYTES = 1 << 20
"""Pipe capacity asked for (Linux's default ceiling for unprivileged processes): ~600 records fit, so the
loop's write into it practically never waits for the writer to finish a commit."""


@dataclass(frozen=True)
class _Entry:
    path: str
    payload: bytes
    future: asyncio.Future[Path]


class StoreWriter:
    """Writes records for the coroutines of one event loop at a time (see module doc)."""

    def __init__(self, store: ResponseStore, *, use_process: bool | None = None) -> None:
        self.store = store
        if use_process is None:
            use_process = os.environ.get("ASSAY_STORE_WRITER", "process") != "thread"
        self.use_process = use_process
        self.groups_sent = 0
        self.durable_listener: Callable[[list[str], float], None] | None = None
        """Called with each acknowledged group's record paths and the time.monotonic() its commit ended."""
        self._child: subprocess.Popen[bytes] | None = None
        self._acks: FrameReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop reading the writer's acknowledgements
        self._pending: list[_Entry] = []
        self._pending_traces: list[tuple[str, dict[str, Any]]] = []
        # Sent or being committed, by group id: kept until acknowledged, so a dead writer loses nothing.
        self._in_flight: dict[int, tuple[list[_Entry], list[tuple[str, bytes]]]] = {}
        self._send_scheduled = False
        self._group_ids = itertools.count()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._thread: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.kept: dict[str, bytes] = {}
        """Record bytes that could not be written, by record path (kept until written or spilled)."""
        self.kept_traces: list[tuple[str, bytes]] = []
        """Trace lines that could not be written, in order."""
        self.spilled_to: Path | None = None

    # -- public ---------------------------------------------------------------------------------------
    async def write(self, record: StoredResponse) -> Path:
        """Return once `record` is durable; raises OSError if it could not be written."""
        loop = asyncio.get_running_loop()
        entry = _Entry(str(self.store.record_path(record.call_id)), record_bytes(record), loop.create_future())
        if self._loop is not None and self._loop is not loop and not self._loop.is_closed() and self._busy():
            # Another loop is using the writer right now (rare): commit this one on its own, in a thread.
            self._commit_here(loop, [entry], [])
        else:
            self._attach(loop)
            self._pending.append(entry)
            self._schedule_send(loop)
        return await entry.future

    def trace(self, call_id: str, event: dict[str, Any]) -> None:
        """Queue a trace event; it is written with the next group, ahead of that group's records.

        Must be called on the event loop. For events that must be on disk at once (failed attempts), use
        `ResponseStore.append_trace`.
        """
        loop = asyncio.get_running_loop()
        self._attach(loop)
        self._pending_traces.append((call_id, event))
        self._schedule_send(loop)

    async def flush(self) -> None:
        """Return once everything queued so far has been committed (or has failed)."""
        if not self._busy():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        """Let the writer finish what it has and stop it. Call once no write is outstanding.

        Bytes kept after a failed write are tried once more here (space may have been freed meanwhile);
        what still fails stays in the spill folder, or is reported lost when there is none.
        """
        self._detach()  # while self._child is set: it names the pipe to stop watching
        child, self._child = self._child, None
        if child is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()  # type: ignore[union-attr]  # EOF: commit what was read, then exit
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            with contextlib.suppress(OSError):
                child.stdout.close()  # type: ignore[union-attr]
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        self._retry_kept()

    def _retry_kept(self) -> None:
        if not self.kept and not self.kept_traces:
            return
        records, traces = list(self.kept.items()), list(self.kept_traces)
        outcome = commit(str(self.store.root), records, traces)
        written = [path for (path, _), error in zip(records, outcome.record_errors, strict=True) if error is None]
        written_traces = [path for (path, _), error in zip(traces, outcome.trace_errors, strict=True) if not error]
        for path in written:
            del self.kept[path]
        self.kept_traces = [trace for trace, error in zip(traces, outcome.trace_errors, strict=True) if error]
        if self.spilled_to is not None:
            # Stored after all: the spilled copies must not be appended (traces) or counted again next run.
            for path in [*written, *({*written_traces} - {trace_path for trace_path, _ in self.kept_traces})]:
                with contextlib.suppress(OSError):
                    (self.spilled_to / os.path.relpath(path, self.store.root)).unlink()
        if self.kept and self.spilled_to is None:
            log.error(
                "%d paid responses could not be stored under %s and are lost with this process: set "
                "ASSAY_STORE_SPILL_DIR to a folder on another disk to keep them next time",
                len(self.kept),
                self.store.root,
            )

    # -- sending --------------------------------------------------------------------------------------
    def _busy(self) -> bool:
        return bool(self._pending or self._pending_traces or self._in_flight)

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        self._detach()
        self._loop = loop
        if self._child is not None and self._child.poll() is None:
            loop.add_reader(self._child.stdout.fileno(), self._on_acks)  # type: ignore[union-attr]

    def _detach(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed() and self._child is not None and self._child.stdout:
            with contextlib.suppress(Exception):
                loop.remove_reader(self._child.stdout.fileno())

    def _schedule_send(self, loop: asyncio.AbstractEventLoop) -> None:
        # Everything queued in this turn of the loop goes out as one frame.
        if not self._send_scheduled:
            self._send_scheduled = True
            loop.call_soon(self._send)

    def _send(self) -> None:
        self._send_scheduled = False
        entries, self._pending = self._pending, []
        events, self._pending_traces = self._pending_traces, []
        if not entries and not events:
            return
        secrets = secret_env_values() if events else []
        traces = [
            (str(self.store.trace_path(call_id)), ResponseStore.trace_line(call_id, event, secrets))
            for call_id, event in events
        ]
        loop = self._loop
        assert loop is not None
        child = self._writer_process(loop)
        if child is None:
            self._commit_here(loop, entries, traces)
            return
        group_id = next(self._group_ids)
        self._in_flight[group_id] = (entries, traces)
        self.groups_sent += 1
        frame = encode_frame((group_id, [(entry.path, entry.payload) for entry in entries], traces))
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(child.stdin.fileno(), view) :]  # type: ignore[union-attr]
        except OSError as exc:
            log.warning("store writer process is gone (%s); writing its records here", exc)
            self._fail_over(loop)

    def _writer_process(self, loop: asyncio.AbstractEventLoop) -> subprocess.Popen[bytes] | None:
        if not self.use_process:
            return None
        if self._child is not None and self._child.poll() is None:
            return self._child
        self.store.root.mkdir(parents=True, exist_ok=True)  # the writer syncs the file system of the root
        try:
            child = subprocess.Popen(
                [sys.executable, group_commit.__file__, str(self.store.root)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as exc:
            log.warning("cannot start the store writer process (%s); committing in a thread", exc)
            self.use_process = False
            return None
        assert child.stdin is not None and child.stdout is not None
        for fd in (child.stdin.fileno(), child.stdout.fileno()):
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(child.stdout.fileno(), False)
        # A writer dropped without close() (a client garbage-collected) still ends its process: EOF on stdin.
        weakref.finalize(self, _close_quietly, child.stdin)
        self._child = child
        self._acks = FrameReader(child.stdout.fileno())
        loop.add_reader(child.stdout.fileno(), self._on_acks)
        return child

    # -- acknowledgements -----------------------------------------------------------------------------
    def _on_acks(self) -> None:
        acks, loop = self._acks, self._loop
        assert acks is not None and loop is not None
        while True:
            try:
                chunk = os.read(acks.fd, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._drain_acks(acks)
                if self._in_flight:
                    log.warning("store writer exited (code %s); writing its records here", self._exit_code())
                self._fail_over(loop)
                return
            acks.buffer += chunk
        self._drain_acks(acks)

    def _drain_acks(self, acks: FrameReader) -> None:
        while (frame := acks.take()) is not None:
            group_id, errors, committed_at, trace_errors = frame
            entries, traces = self._in_flight.pop(group_id)
            if self.durable_listener is not None:
                self.durable_listener(
                    [entry.path for entry, error in zip(entries, errors, strict=True) if error is None], committed_at
                )
            self._settle_group(entries, errors, traces, trace_errors)
        self._wake_if_idle()

    def _exit_code(self) -> int | None:
        return self._child.poll() if self._child is not None else None

    def _fail_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """The writer is gone: commit every record and trace it did not acknowledge here, in a thread."""
        self._detach()
        child, self._child = self._child, None
        if child is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                child.kill()
                child.wait(timeout=5)
            _close_quietly(child.stdin)
            _close_quietly(child.stdout)
        groups = list(self._in_flight.values())
        self._in_flight.clear()
        self._loop = loop  # a new writer process will register its reader on this loop
        entries = [entry for group_entries, _ in groups for entry in group_entries]
        traces = [trace for _, group_traces in groups for trace in group_traces]
        if entries or traces:
            self._commit_here(loop, entries, traces)
        else:
            self._wake_if_idle()

    def _commit_here(
        self, loop: asyncio.AbstractEventLoop, entries: list[_Entry], traces: list[tuple[str, bytes]]
    ) -> None:
        """Commit a group in a thread of this process (no writer process, or it died)."""
        group_id = next(self._group_ids)
        self._in_flight[group_id] = (entries, traces)  # now, so that flush() waits for it
        task = loop.create_task(self._commit_in_thread(loop, group_id, entries, traces))
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)

    async def _commit_in_thread(
        self, loop: asyncio.AbstractEventLoop, group_id: int, entries: list[_Entry], traces: list[tuple[str, bytes]]
    ) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assay-store-commit")
        records = [(entry.path, entry.payload) for entry in entries]
        try:
            outcome = await loop.run_in_executor(self._thread, commit, str(self.store.root), records, traces)
            errors, trace_errors = outcome.record_errors, outcome.trace_errors
        except Exception as exc:  # noqa: BLE001 - an unexpected failure fails the whole group
            errors = [f"{type(exc).__name__}: {exc}"] * len(entries)
            trace_errors = [errors[0] if errors else str(exc)] * len(traces)
        finally:
            self._in_flight.pop(group_id, None)
        self._settle_group(entries, errors, traces, trace_errors)
        self._wake_if_idle()

    def _settle_group(
        self,
        entries: list[_Entry],
        errors: list[str | None],
        traces: list[tuple[str, bytes]],
        trace_errors: list[str | None],
    ) -> None:
        failed = [(entry, error) for entry, error in zip(entries, errors, strict=True) if error is not None]
        lost_traces = [trace for trace, error in zip(traces, trace_errors, strict=True) if error is not None]
        first_error = next((error for _, error in failed), None) or next((e for e in trace_errors if e), None)
        message = ""
        if first_error is not None:
            # Nothing paid for is lost: keep the bytes here, and in the spill folder when there is one.
            for entry, _ in failed:
                self.kept[entry.path] = entry.payload
            self.kept_traces.extend(lost_traces)
            self._spill([(entry.path, entry.payload) for entry, _ in failed], lost_traces)
            message = full_disk_message(self.store.root, first_error, len(self.kept), self.spilled_to)
            log.error("%s", message)
        for entry, error in zip(entries, errors, strict=True):
            if entry.future.done():  # its caller was cancelled; the record is on disk (or kept) regardless
                continue
            if error is None:
                entry.future.set_result(Path(entry.path))
            else:
                kept_in = str(self.spilled_to) if self.spilled_to is not None else "memory"
                entry.future.set_exception(StoreWriteFailed(message, kept_in=kept_in))

    def keep_trace(self, path: str, line: bytes, error: str) -> StoreWriteFailed:
        """Keep a trace line the caller could not append itself; the error to raise about it."""
        self.kept_traces.append((path, line))
        self._spill([], [(path, line)])
        return StoreWriteFailed(
            full_disk_message(self.store.root, error, len(self.kept), self.spilled_to),
            kept_in=str(self.spilled_to or "memory"),
        )

    def _spill(self, records: list[tuple[str, bytes]], traces: list[tuple[str, bytes]]) -> None:
        folder = spill_dir()
        if folder is None or (not records and not traces):
            return
        try:
            spill(self.store.root, folder, records, traces)
        except OSError as exc:
            log.error("cannot spill unwritten responses to %s (%s); they are kept in memory only", folder, exc)
            return
        self.spilled_to = folder

    def _wake_if_idle(self) -> None:
        if self._busy():
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _close_quietly(stream: Any) -> None:
    with contextlib.suppress(OSError):
        stream.close()


__all__ = ["StoreWriter"]
