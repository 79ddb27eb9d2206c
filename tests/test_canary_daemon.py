"""The canary schedule under a real `dagster-daemon`: it fires on its cron, runs the experiment's whole-graph job
against the pinned model, stays quiet while the model answers as before, and fails its drift check (naming the
changed items) once the model's answers change. Slow: it waits for two minute boundaries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.test_eval_wiring import check_result, drifting_responder

REPO = Path(__file__).resolve().parent.parent


def _canary_file(folder: Path) -> Path:
    text = (REPO / "configs" / "experiments" / "hello.yaml").read_text()
    text = text.replace('cron: "0 6 * * *"', 'cron: "* * * * *"\n  running: true').replace(
        "models: [local]", "models: [fake]"
    )
    assert 'cron: "* * * * *"' in text and "running: true" in text
    path = folder / "canary-hello.yaml"
    path.write_text(text)
    return path


def _wait_for_runs(instance, job: str, count: int, timeout: float) -> list:  # type: ignore[no-untyped-def]
    from dagster import DagsterRunStatus, RunsFilter

    done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(RunsFilter(job_name=job))
        if len(runs) >= count and all(run.status in done for run in runs):
            return list(runs)
        time.sleep(2)
    raise AssertionError(f"{job}: expected {count} finished runs within {timeout:.0f} s")


@pytest.mark.slow
def test_the_daemon_fires_the_canary_and_its_drift_check_catches_changed_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.instance import get_instance

    for name in ("DAGSTER_HOME", "ASSAY_EXPERIMENT_FILES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSAY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ASSAY_EXPERIMENT_FILES", str(_canary_file(tmp_path)))
    instance = get_instance()  # writes the embedded instance's dagster.yaml and sets DAGSTER_HOME
    state = {"drift": False}
    with FakeOpenAIServer(responder=drifting_responder(state)) as server:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        daemon = subprocess.Popen(
            # dagster-daemon of this interpreter (its script may not be on PATH)
            [
                sys.executable,
                "-c",
                "import sys; from dagster._daemon.cli import main; sys.argv[0] = 'dagster-daemon'; sys.exit(main())",
                "run",
                "-w",
                str(REPO / "workspace.yaml"),
            ],
            cwd=REPO,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            stdout=(tmp_path / "daemon.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for_runs(instance, "canary_hello_job", 1, timeout=180)  # the first tick: the baseline
            passed, metadata = check_result("canary-hello", "canary_drift", "canary_no_drift")
            assert passed and metadata["baseline"] == "(none yet)"
            assert server.total() > 0
            state["drift"] = True  # the pinned model starts answering differently
            runs = _wait_for_runs(instance, "canary_hello_job", 2, timeout=180)
            assert all(run.tags.get("assay/canary") for run in runs), "both runs were started by the schedule"
        finally:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=60)
    passed, metadata = check_result("canary-hello", "canary_drift", "canary_no_drift")
    assert not passed
    changed = {item["item_id"] for item in metadata["changed_items"]}
    assert changed == {"h4", "h8"}
