"""`assay tokens` and `assay serve` for real: tokens through the CLI, uvicorn in a subprocess, an artifact packed
from a materialized sms-ensemble run, and the same API against the PostgreSQL on 127.0.0.1:5432 (database test).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from jobs.cli import main
from pipeline.serving.artifact import load_artifact
from pipeline.serving.storage import open_database
from tests.fakes.openai_server import FakeOpenAIServer
from tests.serve_fixtures import SETTLED_TEXT, pack_tiny, serve
from tests.test_ensemble_experiment import VoterResponder, _needs_sms, fast_sms_task
from tests.test_postgres_instance import _postgres_answers

REPO = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _token_from(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_tokens_cli_stores_only_a_salted_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["tokens", "create", "--role", "review", "--name", "ana", "--database", url]) == 0
    token = _token_from(capsys.readouterr().out)
    database = open_database(url)
    row = database.check_token(token)
    assert row is not None and row.role == "review" and row.name == "ana"
    assert token.split("_", 2)[2].encode() not in (tmp_path / "db.sqlite").read_bytes()
    assert main(["tokens", "revoke", row.id, "--database", url]) == 0
    assert database.check_token(token) is None
    assert main(["tokens", "revoke", row.id, "--database", url]) == 1
    assert main(["tokens", "create", "--role", "root", "--database", url]) == 2  # argparse refuses the role


@pytest.mark.slow
def test_assay_serve_answers_over_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "artifacts"
    version = pack_tiny(root)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["tokens", "create", "--role", "predict", "--database", url]) == 0
    token = _token_from(capsys.readouterr().out)
    port = _free_port()
    env = {**os.environ, "ASSAY_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "jobs.cli",
        "serve",
        "--artifact",
        str(root),
        "--database",
        url,
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "assay serve did not answer within 60 s"
                time.sleep(0.3)
        assert health.json()["model_version"] == version
        answer = httpx.post(
            f"{base}/predict", json={"text": SETTLED_TEXT}, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert answer.status_code == 200 and answer.json()["prediction"] == "relevant"
        assert httpx.post(f"{base}/predict", json={"text": "x"}, timeout=10).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert open_database(url).prediction(answer.json()["prediction_id"]) is not None


@pytest.mark.slow
def test_pack_a_materialized_sms_ensemble_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_sms()
    responder = VoterResponder()
    with FakeOpenAIServer(responder=responder) as server:
        monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("ASSAY_RUNS_DIR", str(tmp_path / "runs"))
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        task = fast_sms_task(tmp_path / "task")
        flags = ["--model", "fake", "--limit", "300", "--set", f"ensemble.task={task}"]
        assert main(["run", "sms-ensemble", *flags]) == 0
        from jobs.cli import saved_overrides
        from pipeline.serving.artifact import bundle_from_run, pack_artifact

        manifest = pack_artifact(bundle_from_run("sms-ensemble", saved_overrides("sms-ensemble")), tmp_path / "art")
        assert manifest.experiment == "sms-ensemble" and manifest.labels == ("ham", "spam")
        assert manifest.llm_alias == "fake" and len(manifest.voters) >= 2
        loaded = load_artifact(tmp_path / "art")
        asked = len(responder.asked)
        with serve(tmp_path / "art", f"sqlite:///{tmp_path / 'db.sqlite'}") as s:
            body = s.client.post(
                "/predict", json={"text": "WINNER!! Claim your free cash prize now, txt WIN"}, headers=s.headers()
            ).json()
        assert body["prediction"] in ("spam", "ABSTAIN") and body["model_version"] == loaded.manifest.version
        assert len(responder.asked) == asked  # no asker given: the LLM tier is off, nothing is sent


# -- PostgreSQL ----------------------------------------------------------------------------------------------


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh schema in database `test`, dropped afterwards (tests never share tables)."""
    if not _postgres_answers():
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    schema = f"serve_{secrets.token_hex(4)}"
    admin = create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.mark.postgres
def test_predictions_and_feedback_in_postgres(tmp_path: Path, pg_url: str) -> None:
    root = tmp_path / "artifacts"
    pack_tiny(root)
    with serve(root, pg_url) as s:
        sql = "1'; DROP TABLE predictions; --"
        first = s.client.post("/predict", json={"text": SETTLED_TEXT}, headers=s.headers()).json()
        odd = s.client.post("/predict", json={"text": sql}, headers=s.headers()).json()
        ok = s.client.post(
            "/feedback",
            json={"prediction_id": first["prediction_id"], "label": "relevant"},
            headers=s.headers("review"),
        )
        assert ok.status_code == 200
        assert s.client.post("/predict", json={"text": ""}, headers=s.headers()).status_code == 422
        assert s.client.post("/predict", json={"text": "x"}).status_code == 401
        with s.database.engine.connect() as connection:
            rows = connection.execute(text("SELECT text, model_version FROM predictions ORDER BY created_at")).all()
            feedback = connection.execute(text("SELECT prediction_id, label, reviewer FROM feedback")).all()
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert [r.text for r in rows] == [SETTLED_TEXT, sql] and odd["prediction"]
    assert {r.model_version for r in rows} == {first["model_version"]}
    assert [tuple(r) for r in feedback] == [(first["prediction_id"], "relevant", "test-review")]
    assert revision == "0001"
    # Opening again runs no migration twice.
    open_database(pg_url).engine.dispose()
