"""Group commit of store files: many records made durable with two syncs, in this process or a child.

A record is durable when its bytes and its rename are on disk. One record at a time that is two fsyncs
(the temp file, then its folder) and ~180 us of CPU on ext4; for a group it is: write every temp file,
one `syncfs` (every file of the file system is on disk), rename each onto its record path, a second
`syncfs` (the renames are on disk). ~35 us per record. Each record is still its own atomically renamed
file, so a crash at any point leaves each record either absent or whole. Where there is no syncfs (not
Linux, or ASSAY_STORE_SYNCFS=0) every temp file and folder is fsync'ed instead: slower, as safe.

Run as a script (`python group_commit.py`), this module is the store's writer process: it reads groups
from stdin, commits them and acknowledges each on stdout. It imports only the standard library, so it
starts in a few tens of milliseconds, and it has its own GIL: the many short system calls of a commit
never wait behind (or hold up) the event loop of the process that made the calls. On EOF (its parent
closed the pipe, or died) it commits what it has read and exits: a response that reached it is kept.

Frames, both ways: 4-byte big-endian length + pickle. In: (group_id, records, traces) where records are
(record_path, bytes) and traces (trace_path, line bytes). Out: (group_id, [None or an error per record],
time.monotonic() when the commit ended, [None or an error per trace]).

A write that fails (a full disk) fails its record or trace alone and is reported; it never ends the writer.
ASSAY_STORE_FAIL_AFTER_WRITES=N (tests only) makes every file write after the first N raise ENOSPC: N per
process, or N in all when ASSAY_STORE_FAIL_COUNTER names a file the processes count in (one full disk).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import pickle
import select
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct("!I")
_TEMP_SEQUENCE = itertools.count()


USE_SYNCFS = os.environ.get("ASSAY_STORE_SYNCFS", "1") != "0"

# Fault injection for the full-disk tests: read at each write (an environ lookup, ~1 us), counted from the
# moment the variable took its current value, so a test can set it, and clear it to "free space".
_fault_state: list[Any] = [None, 0]  # [the variable's value when counting started, writes since]


def _before_write(path: str) -> None:
    allowed = os.environ.get("ASSAY_STORE_FAIL_AFTER_WRITES")
    if not allowed:
        _fault_state[:] = [None, 0]
        return
    spill = os.environ.get("ASSAY_STORE_SPILL_DIR")
    if spill and os.path.abspath(path).startswith(os.path.abspath(spill) + os.sep):
        return  # the spill folder stands for another disk: the injected fault is the store's disk
    counter = os.environ.get("ASSAY_STORE_FAIL_COUNTER")
    if counter:
        # One disk for every process (the writer, the client's own appends, a retry at close): count the
        # writes in a shared file, one byte each (O_APPEND makes each append atomic).
        fd = os.open(counter, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)
        written = os.path.getsize(counter)
    else:
        if _fault_state[0] != allowed:
            _fault_state[:] = [allowed, 0]
        _fault_state[1] += 1
        written = int(_fault_state[1] or 0)
    if written > int(allowed):
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected: ASSAY_STORE_FAIL_AFTER_WRITES)", path)


@dataclass(frozen=True)
class GroupOutcome:
    """What `commit` did: per record and per trace line, None (written) or the error."""

    record_errors: list[str | None]
    trace_errors: list[str | None]


def _load_syncfs() -> Any:
    try:
        # CDLL(None): the symbols already loaded into this process, libc's among them (no library search).
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _load_syncfs()


def commit_group(
    root: str, records: Sequence[tuple[str, bytes]], traces: Sequence[tuple[str, bytes]] = ()
) -> list[str | None]:
    """`commit`, reporting the records only: per record, None or the error."""
    return commit(root, records, traces).record_errors


def commit(root: str, records: Sequence[tuple[str, bytes]], traces: Sequence[tuple[str, bytes]] = ()) -> GroupOutcome:
    """Append `traces` in order, then make `records` durable as one group.

    A record or trace line that cannot be written (a full disk, a folder that cannot be made) fails alone;
    a failed sync or rename fails every record of the group (none is known durable) and removes the
    group's temp files.
    """
    trace_errors: list[str | None] = []
    for path, line in traces:
        try:
            append_line(path, line)
        except OSError as exc:
            trace_errors.append(f"{type(exc).__name__}: {exc}")
        else:
            trace_errors.append(None)
    results: list[str | None] = []
    pending: list[tuple[int, str, str]] = []  # (index in results, temp path, record path)
    for path, payload in records:
        try:
            temp = write_temp(path, payload)
        except OSError as exc:
            results.append(f"{type(exc).__name__}: {exc}")
            continue
        pending.append((len(results), temp, path))
        results.append(None)
    if not pending:
        return GroupOutcome(results, trace_errors)
    try:
        sync(root, [temp for _, temp, _ in pending], data_only=True)
        for _, temp, path in pending:
            os.replace(temp, path)
        sync(root, {os.path.dirname(path) for _, _, path in pending}, data_only=False)
    except OSError as exc:
        for index, temp, _ in pending:
            _unlink(temp)
            results[index] = f"{type(exc).__name__}: {exc}"
    return GroupOutcome(results, trace_errors)


def sync(root: str, paths: Iterable[str], *, data_only: bool) -> None:
    """Make what was written to `paths` durable: one syncfs per file system they are on, else fsync (or
    fdatasync, for file contents) each path."""
    if USE_SYNCFS and _SYNCFS is not None:
        # One syncfs per device, not just root's: a records folder may be a link to another disk.
        by_device: dict[int, str] = {}
        for path in paths:
            by_device.setdefault(os.stat(path).st_dev, path)
        for path in by_device.values() or [root]:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _SYNCFS(fd) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"syncfs on {path}: {os.strerror(error)}")
            finally:
                os.close(fd)
        return
    for path in paths:
        fsync_path(path, data_only=data_only)


def fsync_path(path: str, *, data_only: bool = False) -> None:
    """fsync (or fdatasync) a file or a folder by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        (os.fdatasync if data_only else os.fsync)(fd)
    finally:
        os.close(fd)


def append_line(path: str, line: bytes) -> None:
    """Append `line` with one write() on an O_APPEND descriptor: concurrent appenders never interleave."""
    _before_write(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)  # only the first file of a prefix folder
        fd = os.open(path, flags, 0o644)
    try:
        while line:
            line = line[os.write(fd, line) :]
    finally:
        os.close(fd)


def write_temp(path: str, payload: bytes) -> str:
    """Write `payload` to a new temp file beside `path` (not synced) and return the temp file's path."""
    # A name unique to this process and write (no random name): concurrent writers of the same record each
    # rename their own complete file; the last rename wins, and both are valid.
    _before_write(path)
    temp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}-{next(_TEMP_SEQUENCE)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(temp, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(temp, flags, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink(temp)
        raise
    os.close(fd)
    return temp


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# -- the writer process -------------------------------------------------------------------------------
def encode_frame(value: object) -> bytes:
    """One length-prefixed pickle frame."""
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Frames from a file descriptor, buffered here so that 'is another frame waiting?' never blocks."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False

    def take(self) -> Any:
        """A whole frame already read, or None."""
        if len(self.buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self.buffer)
        if len(self.buffer) < HEADER.size + size:
            return None
        body = bytes(self.buffer[HEADER.size : HEADER.size + size])
        del self.buffer[: HEADER.size + size]
        return pickle.loads(body)

    def fill(self, *, block: bool) -> bool:
        """Read what the pipe holds (waiting for it if `block`); False at EOF or when nothing was there."""
        if not block:
            ready, _, _ = select.select([self.fd], [], [], 0)
            if not ready:
                return False
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True


def serve(root: str, inbox_fd: int, outbox_fd: int) -> None:
    """Commit groups read from `inbox_fd` until EOF; acknowledge each on `outbox_fd`.

    Groups that arrived while one was being committed are committed together (one pair of syncs), and
    each is acknowledged with its own id.
    """
    reader = FrameReader(inbox_fd)
    while True:
        frames = []
        while True:  # every whole frame already in the pipe joins this commit
            frame = reader.take()
            if frame is not None:
                frames.append(frame)
            elif reader.eof or not reader.fill(block=not frames):
                break
        if not frames:
            return  # EOF (a partial last frame means the parent died while sending it)
        records = [record for _, group_records, _ in frames for record in group_records]
        traces = [trace for _, _, group_traces in frames for trace in group_traces]

        outcome = commit(root, records, traces)
        committed_at = time.monotonic()  # CLOCK_MONOTONIC: comparable with the parent's clock
        acks = bytearray()
        start = trace_start = 0
        for group_id, group_records, group_traces in frames:
            record_errors = outcome.record_errors[start : start + len(group_records)]
            trace_errors = outcome.trace_errors[trace_start : trace_start + len(group_traces)]
            acks += encode_frame((group_id, record_errors, committed_at, trace_errors))
            start += len(group_records)
            trace_start += len(group_traces)
        _write_all(outbox_fd, bytes(acks))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BrokenPipeError:
            return  # the parent is gone; what was committed stays committed


if __name__ == "__main__":
    serve(sys.argv[1], sys.stdin.fileno(), sys.stdout.fileno())
