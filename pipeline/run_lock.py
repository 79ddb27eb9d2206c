"""One run of an experiment at a time: a lock file the kernel releases when its holder dies.

Two runs of the same experiment at once (two terminals, a schedule and a person) would both send every
call not yet stored, each under its own budget. `experiment_lock` makes the second refuse at once with a
message naming the first (pid, start time, command, how to stop it). `flock` is released by the kernel
when the holding process exits or is killed, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipeline.llm.errors import AssayError


class ExperimentBusy(AssayError):
    """Another process is running this experiment."""


@contextlib.contextmanager
def experiment_lock(work_dir: Path, experiment: str) -> Iterator[None]:
    """Hold the experiment's run lock for the block; raise ExperimentBusy if another process holds it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExperimentBusy(_busy_message(path, experiment)) from None
        holder = {
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["assay", *sys.argv[1:]]) if sys.argv[1:] else sys.argv[0],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _busy_message(path: Path, experiment: str) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        holder = {}
    pid = holder.get("pid", "?")
    return (
        f"{experiment} is already being run by process {pid} (started {holder.get('started_at', '?')}: "
        f"{holder.get('command', '?')}); wait for it to finish, or stop it with `kill -INT {pid}` (calls in "
        f"flight finish and are stored), then: assay resume {experiment}"
    )
