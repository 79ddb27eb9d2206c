"""Kill test: SIGKILL `assay run` midway through 300 calls, then `assay resume`.

Asserted with the fake server's own counters: no call stored before the kill is sent again, no stored
response is lost or changed, the dead run is marked failed, and the final report is complete.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.store import ResponseStore
from tests.fakes.openai_server import prompt_key, start_fake_server_process

REPO = Path(__file__).resolve().parent.parent
N_CALLS = 300


def _env(tmp_path: Path, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        ASSAY_HOME=str(tmp_path / "home"),
        ASSAY_RUNS_DIR=str(tmp_path / "runs"),
        ASSAY_FAKE_BASE_URL=base_url,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    return env


def _assay(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", *args]


@pytest.mark.slow
def test_sigkill_midway_then_resume_resends_nothing_stored(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    with items.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for index in range(N_CALLS):
            writer.writerow([f"k{index:03d}", f"Kill-test text number {index} about the weather and sports."])
    # 8 calls in flight x 0.1 s each: the run takes ~4 s of calls, long enough to kill it midway.
    flags = ["--model", "fake", "--input", str(items), "--set", "models.fake.limits.max_concurrent=8"]
    server = start_fake_server_process(latency=0.1)
    try:
        env = _env(tmp_path, server.base_url)
        store = ResponseStore(tmp_path / "home" / "store")
        victim = subprocess.Popen(_assay("run", "hello", *flags), cwd=REPO, env=env)
        deadline = time.monotonic() + 180
        while len(store.stored_ids()) < N_CALLS // 3:
            assert victim.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        # The call worker (a child process for batches this size) must die with the run: an orphan still
        # storing responses would race the resume below.
        time.sleep(1.0)
        settled = len(store.stored_ids())
        time.sleep(2.0)
        assert len(store.stored_ids()) == settled, "calls kept being stored after the run was killed"

        before = {record.call_id: record for record in store.iter_records()}
        assert 0 < len(before) < N_CALLS
        sent_before = server.stats()["by_prompt"]

        resumed = subprocess.run(
            _assay("resume", "hello"),  # reuses the killed run's flags
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        assert "marked 1 run(s) whose process died as FAILED" in resumed.stdout

        after_counts = server.stats()["by_prompt"]
        for call_id, record in before.items():
            key = prompt_key(record.request["messages"])
            assert after_counts[key] == sent_before[key] == 1, f"stored call {call_id} was sent again"
            kept = store.get(call_id)
            assert kept is not None and kept.to_json_dict() == record.to_json_dict(), f"{call_id} lost or changed"
        assert len(store.stored_ids()) == N_CALLS
        assert server.total() >= N_CALLS
        # Calls in flight at the kill were never stored, so they are the only ones asked twice.
        assert server.total() - N_CALLS <= 8

        summary = json.loads(sorted((tmp_path / "runs").glob("hello-*/metadata/run_summary.json"))[-1].read_text())
        assert summary["status"] == "complete"
        assert summary["counts"]["answers_valid"] + summary["counts"]["answers_invalid"] == N_CALLS
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_new_calls_keeps_in_flight_ones_and_prints_resume(tmp_path: Path, signum: int) -> None:
    items = tmp_path / "items.csv"
    with items.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for index in range(200):
            writer.writerow([f"s{index:03d}", f"Signal-test text number {index}."])
    server = start_fake_server_process(latency=0.3)
    try:
        env = _env(tmp_path, server.base_url)
        store = ResponseStore(tmp_path / "home" / "store")
        flags = ["--model", "fake", "--input", str(items), "--set", "models.fake.limits.max_concurrent=4"]
        proc = subprocess.Popen(
            _assay("run", "hello", *flags), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 180
        while len(store.stored_ids()) < 20:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert "assay resume" in err
        stored = len(store.stored_ids())
        assert stored < 200, "the run went on after the signal"
        # Every call the server answered was stored: nothing paid for was lost to the interruption.
        assert server.stats()["answered_ok_total"] == stored
    finally:
        server.stop()
