"""The same pipeline on a PostgreSQL Dagster instance (configs/dagster/postgres.yaml), database `test`."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.instance import LOCAL_POSTGRES_ENV
from tests.conftest import gold_responder
from tests.fakes.openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parent.parent


def _postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not _postgres_answers(), reason="no PostgreSQL server answers on 127.0.0.1:5432"),
]


@pytest.mark.slow
def test_run_and_resume_on_postgres_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "configs" / "dagster" / "postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in LOCAL_POSTGRES_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSAY_RUNS_DIR", str(tmp_path / "runs"))
    with FakeOpenAIServer(responder=gold_responder) as server:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        server.inject("500", times=100, match="eggs")
        assert main(["run", "hello", "--model", "fake", "--set", "models.fake.max_attempts=1"]) == 1
        from jobs.launcher import ExperimentLauncher

        launcher = ExperimentLauncher("hello", ["models=[fake]"])
        assert type(launcher.instance.run_storage).__name__ == "PostgresRunStorage"
        failed = launcher.failed_partitions("llm")
        from pipeline.call_stages import load_plan

        plan = load_plan(launcher.context, "llm")
        assert plan is not None and len(failed & set(plan.keys)) == 1
        server.reset()
        assert main(["resume", "hello"]) == 0
        assert server.total() == 1
    summary = json.loads(sorted((tmp_path / "runs").glob("hello-*/metadata/run_summary.json"))[-1].read_text())
    assert summary["status"] == "complete"
