"""Group commit of store records (pipeline/group_commit.py) and the store's writer process.

The writer process is exercised as the client runs it: a child reading frames on stdin, answering on stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import group_commit
from pipeline.group_commit import FrameReader, commit_group, encode_frame
from pipeline.store import ResponseStore, record_bytes
from tests.test_store import make_record, make_spec, temp_files


def _records(store: ResponseStore, count: int) -> list[tuple[str, bytes]]:
    records = [make_record(make_spec(f"Classify: item {index}")) for index in range(count)]
    return [(str(store.record_path(record.call_id)), record_bytes(record)) for record in records]


@pytest.mark.parametrize("use_syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_a_group_is_written_whole_and_readable(
    store: ResponseStore, monkeypatch: pytest.MonkeyPatch, use_syncfs: bool
) -> None:
    monkeypatch.setattr(group_commit, "USE_SYNCFS", use_syncfs)
    records = _records(store, 20)
    trace_path = str(store.trace_path("a" * 64))
    lines = [(trace_path, b'{"n": 1}\n'), (trace_path, b'{"n": 2}\n')]
    assert commit_group(str(store.root), records, lines) == [None] * 20
    assert len(store.stored_ids()) == 20
    for path, payload in records:
        assert Path(path).read_bytes() == payload
        assert store.get(Path(path).stem) is not None  # checksum verified
    assert Path(trace_path).read_text() == '{"n": 1}\n{"n": 2}\n'  # in order
    assert temp_files(store.root) == []


def test_a_record_that_cannot_be_written_fails_alone(store: ResponseStore) -> None:
    records = _records(store, 3)
    blocker = store.root / "records" / "zz"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a folder should be")
    bad = (str(blocker / "x.json"), b"{}")
    results = commit_group(str(store.root), [records[0], bad, records[1], records[2]])
    assert results[0] is None and results[2] is None and results[3] is None
    assert results[1] is not None and "NotADirectoryError" in results[1]
    assert len(store.stored_ids()) == 3


def test_a_failed_sync_fails_the_group_and_leaves_no_temp_files(
    store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(group_commit, "sync", disk_full)
    results = commit_group(str(store.root), _records(store, 4))
    assert all(result is not None and "No space left" in result for result in results)
    assert store.stored_ids() == set() and temp_files(store.root) == []


def _writer(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, group_commit.__file__, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def _acks(child: subprocess.Popen[bytes], count: int) -> list[tuple[int, list[str | None], float, list[str | None]]]:
    assert child.stdout is not None
    reader = FrameReader(child.stdout.fileno())
    acks = []
    while len(acks) < count:
        frame = reader.take()
        if frame is None:
            assert reader.fill(block=True), "the writer closed its output early"
            continue
        acks.append(frame)
    return acks


def test_writer_process_acknowledges_each_group_after_it_is_durable(store: ResponseStore) -> None:
    store.root.mkdir(parents=True)
    child = _writer(store.root)
    assert child.stdin is not None
    records = _records(store, 6)
    sent_at = time.monotonic()
    child.stdin.write(encode_frame((7, records[:4], [])) + encode_frame((8, records[4:], [])))
    child.stdin.flush()
    acks = _acks(child, 2)
    assert [(group_id, errors) for group_id, errors, _, _ in acks] == [(7, [None] * 4), (8, [None] * 2)]
    assert all(sent_at <= committed_at <= time.monotonic() for _, _, committed_at, _ in acks)
    assert len(store.stored_ids()) == 6  # on disk once acknowledged
    child.stdin.close()
    assert child.wait(timeout=10) == 0  # EOF: it exits by itself


def test_writer_process_commits_what_it_read_when_its_parent_goes_away(store: ResponseStore) -> None:
    # The parent dying closes the pipe; whatever reached the writer is a paid-for answer and is kept.
    store.root.mkdir(parents=True)
    child = _writer(store.root)
    assert child.stdin is not None and child.stdout is not None
    child.stdout.close()  # nobody reads the acknowledgements any more
    child.stdin.write(encode_frame((1, _records(store, 5), [])))
    child.stdin.close()
    assert child.wait(timeout=10) == 0
    assert len(store.stored_ids()) == 5


def test_writer_process_needs_only_the_standard_library(tmp_path: Path) -> None:
    # It starts for every client; importing pipeline (pydantic, litellm...) there would cost seconds.
    probe = (
        "import runpy, sys; sys.argv = ['w', sys.argv[1]]; "
        "sys.stdin = open(__import__('os').devnull); "
        f"runpy.run_path({group_commit.__file__!r}, run_name='__main__'); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('pipeline', 'pydantic', 'litellm')))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert os.path.isdir(tmp_path)


def test_syncfs_covers_every_file_system_a_group_touches(
    store: ResponseStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A records folder linked to another disk must be synced there, not only where the store's root is.
    other = Path("/dev/shm") / f"assay-test-{os.getpid()}-{time.monotonic_ns()}"
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system (/dev/shm) to link the records folder to")
    other.mkdir()
    try:
        store.root.mkdir(parents=True)
        (store.root / "records").symlink_to(other, target_is_directory=True)
        synced: list[int] = []
        real = group_commit._SYNCFS
        if real is None:
            pytest.skip("this system has no syncfs")

        def recording(fd: int) -> int:
            synced.append(os.fstat(fd).st_dev)
            return real(fd)

        monkeypatch.setattr(group_commit, "_SYNCFS", recording)
        monkeypatch.setattr(group_commit, "USE_SYNCFS", True)
        records = _records(store, 3)
        trace = (str(store.trace_path("b" * 64)), b"{}\n")  # traces stay on the root's disk
        assert commit_group(str(store.root), records, [trace]) == [None] * 3
        assert os.stat(other).st_dev in synced
        assert len(store.stored_ids()) == 3
    finally:
        import shutil

        shutil.rmtree(other, ignore_errors=True)
