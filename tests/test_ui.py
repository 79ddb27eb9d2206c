"""`assay ui` starts the Dagster UI on this workspace and it shows every experiment's asset group."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_assay_ui_serves_the_asset_groups(tmp_path: Path) -> None:
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}
    env.update(ASSAY_HOME=str(tmp_path / "home"), PATH="/usr/bin:/bin")  # no venv on PATH, as after `make`
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "ui", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # dagster dev starts a webserver and a daemon: stop the whole group
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "assay ui exited"
            assert time.monotonic() < deadline, "the UI did not come up in 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        query = json.dumps({"query": "{ assetNodes { groupName } }"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql", data=query, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            nodes = json.load(response)["data"]["assetNodes"]
        assert {"hello", "assign_cat"} <= {node["groupName"] for node in nodes}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _wait_for_group_exit(proc.pid, timeout_s=30)


def _wait_for_group_exit(pgid: int, timeout_s: float) -> None:
    """dagster dev shuts its webserver and daemon down gracefully; force it only if that stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)
