"""The prediction API over a tiny served ensemble (FastAPI TestClient, SQLite; the LLM tier on the fake server).

Guarantees under test: only valid tokens with the right role get answers (401/403), a token's rate limit holds
(429 with Retry-After), bad inputs are refused with the right status and no stack trace, every prediction and
feedback is a database row with its input stored verbatim, the LLM is asked only about unsettled texts and a
slow LLM makes the request abstain with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select

from pipeline.config import load_model_zoo
from pipeline.llm.client import LLMClient
from pipeline.llm.errors import ConfigError
from pipeline.serving.app import ServeSettings
from pipeline.serving.artifact import live_version, load_artifact, pack_artifact, set_live
from pipeline.serving.predictor import client_asker
from pipeline.serving.storage import Feedback, Prediction
from pipeline.store import ResponseStore
from tests.conftest import FAST_RETRY
from tests.fakes.openai_server import FakeOpenAIServer
from tests.serve_fixtures import SETTLED_TEXT, Served, pack_tiny, relevant_responder, serve, tiny_bundle

UNSETTLED_TEXT = "Something about ducks happened near the lake"


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    pack_tiny(root)
    return root


@pytest.fixture()
def llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=relevant_responder) as server:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        yield server


@pytest.fixture()
def llm_client(llm_server: FakeOpenAIServer, tmp_path: Path) -> Iterator[LLMClient]:
    client = LLMClient(
        load_model_zoo(overrides=["models.fake.timeout_s=5"]), ResponseStore(tmp_path / "store"), retry=FAST_RETRY
    )
    yield client
    client.close()


@pytest.fixture()
def served(artifact_root: Path, tmp_path: Path, llm_client: LLMClient) -> Iterator[Served]:
    with serve(artifact_root, f"sqlite:///{tmp_path / 'serve.db'}", client_asker(llm_client, "fake")) as s:
        yield s


def _no_trace(body: str) -> None:
    assert "Traceback" not in body and 'File "' not in body


# -- the artifact ------------------------------------------------------------------------------------------


def test_artifact_round_trip_and_live_pointer(artifact_root: Path, tmp_path: Path) -> None:
    loaded = load_artifact(artifact_root)
    assert loaded.manifest.version == live_version(artifact_root)
    assert loaded.manifest.voters == ("rules", "classical") or len(loaded.manifest.voters) == 2
    assert loaded.manifest.labels == ("irrelevant", "relevant")
    assert loaded.bundle.arbiter.thresholds is not None
    # A second version, packed without going live, does not change what is served until set_live.
    root = tmp_path / "copy"
    bundle = tiny_bundle()
    first = pack_artifact(bundle, root).version
    other = pack_artifact(bundle.__class__(**{**bundle.__dict__, "prompt_version": "v2"}), root, make_live=False)
    assert other.version != first and live_version(root) == first
    set_live(root, other.version)
    assert load_artifact(root).manifest.prompt_version == "v2"
    with pytest.raises(ConfigError, match="no artifact version"):
        set_live(root, "nope")


def test_altered_bundle_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "a"
    version = pack_tiny(root)
    with (root / version / "bundle.joblib").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ConfigError, match="was altered"):
        load_artifact(root)


# -- auth and limits ---------------------------------------------------------------------------------------


def test_tokens_401_and_403(served: Served) -> None:
    c = served.client
    assert c.post("/predict", json={"text": SETTLED_TEXT}).status_code == 401
    unknown = c.post("/predict", json={"text": SETTLED_TEXT}, headers={"Authorization": "Bearer assay_00_bad"})
    assert unknown.status_code == 401 and unknown.headers["www-authenticate"] == "Bearer"
    forged = served.tokens["predict"][:-2] + "xx"
    assert c.post("/predict", json={"text": "x"}, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    # A predict token may not give feedback; a review token may not predict; admin may do both.
    feedback = {"prediction_id": "x", "label": "relevant"}
    assert c.post("/feedback", json=feedback, headers=served.headers("predict")).status_code == 403
    assert c.post("/predict", json={"text": SETTLED_TEXT}, headers=served.headers("review")).status_code == 403
    assert c.post("/predict", json={"text": SETTLED_TEXT}, headers=served.headers("admin")).status_code == 200
    token_id = served.tokens["predict"].split("_")[1]
    assert served.database.revoke_token(token_id)
    assert c.post("/predict", json={"text": SETTLED_TEXT}, headers=served.headers("predict")).status_code == 401


def test_rate_limit_per_token(artifact_root: Path, tmp_path: Path) -> None:
    settings = ServeSettings(rate_per_minute=3)
    with serve(artifact_root, f"sqlite:///{tmp_path / 'db.sqlite'}", None, settings) as s:
        codes = [
            s.client.post("/predict", json={"text": SETTLED_TEXT}, headers=s.headers()).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        limited = s.client.post("/predict", json={"text": SETTLED_TEXT}, headers=s.headers())
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another token has its own budget.
        assert s.client.post("/predict", json={"text": SETTLED_TEXT}, headers=s.headers("admin")).status_code == 200


@pytest.mark.parametrize(
    ("content", "headers", "status", "field"),
    [
        (json.dumps({"text": ""}), {"content-type": "application/json"}, 422, "text"),
        (json.dumps({"text": "   "}), {"content-type": "application/json"}, 422, "text"),
        (json.dumps({}), {"content-type": "application/json"}, 422, "text"),
        (json.dumps({"text": 5}), {"content-type": "application/json"}, 422, "text"),
        (json.dumps({"text": "a", "extra": 1}), {"content-type": "application/json"}, 422, "extra"),
        ('{"text": "unterminated', {"content-type": "application/json"}, 422, None),
        (json.dumps({"text": "a"}), {"content-type": "text/plain"}, 415, None),
        (json.dumps({"text": "a" * 30_000}), {"content-type": "application/json"}, 413, None),
        (json.dumps({"text": "a" * 10_000_000}), {"content-type": "application/json"}, 413, None),
    ],
    ids=[
        "empty",
        "blank",
        "missing",
        "not-a-string",
        "extra-field",
        "invalid-json",
        "wrong-type",
        "long-text",
        "10MB-body",
    ],
)
def test_bad_inputs(served: Served, content: str, headers: dict[str, str], status: int, field: str | None) -> None:
    response = served.client.post("/predict", content=content, headers={**served.headers(), **headers})
    assert response.status_code == status, response.text
    _no_trace(response.text)
    body = response.json()
    assert body["kind"] and body["error"]
    if field is not None:
        assert field in [f["field"] for f in body["fields"]]
    with served.database.sessions() as session:
        assert session.scalars(select(Prediction)).all() == []


def test_sql_and_html_text_is_stored_verbatim(served: Served) -> None:
    texts = ["'); DROP TABLE predictions; --", "<script>alert('bird flu')</script><b>H5N1</b> & more"]
    ids = []
    for text in texts:
        response = served.client.post("/predict", json={"text": text}, headers=served.headers())
        assert response.status_code == 200, response.text
        ids.append(response.json()["prediction_id"])
    assert set(inspect(served.database.engine).get_table_names()) >= {"predictions", "feedback", "api_tokens"}
    for prediction_id, text in zip(ids, texts, strict=True):
        row = served.database.prediction(prediction_id)
        assert row is not None and row.text == text


# -- predictions, the LLM tier, feedback -------------------------------------------------------------------


def test_settled_text_answers_without_the_llm(served: Served, llm_server: FakeOpenAIServer) -> None:
    response = served.client.post("/predict", json={"text": SETTLED_TEXT}, headers=served.headers())
    assert response.status_code == 200
    body = response.json()
    assert body["prediction"] == "relevant" and body["rule"] in ("consensus", "safety", "conformal")
    assert body["model_version"] == served.predictor.version and body["abstain_reason"] is None
    assert set(body["voter_outputs"]) == {"rules", "classical"} or len(body["voter_outputs"]) == 2
    assert llm_server.total() == 0
    row = served.database.prediction(body["prediction_id"])
    assert row is not None and row.prediction == "relevant" and row.model_version == body["model_version"]
    assert row.input_hash and row.latency_ms > 0 and row.voter_outputs == body["voter_outputs"]


def test_unsettled_text_asks_the_llm_once(served: Served, llm_server: FakeOpenAIServer) -> None:
    response = served.client.post("/predict", json={"text": UNSETTLED_TEXT}, headers=served.headers())
    body = response.json()
    assert response.status_code == 200 and body["rule"] == "llm", body
    assert body["prediction"] == "relevant" and "llm" in body["voter_outputs"]
    assert llm_server.total() == 1


def test_slow_llm_abstains_with_the_reason(
    artifact_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer(latency=3.0, responder=relevant_responder) as slow:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", slow.base_url)
        client = LLMClient(load_model_zoo(), ResponseStore(tmp_path / "store"), retry=FAST_RETRY)
        try:
            with serve(
                artifact_root, f"sqlite:///{tmp_path / 'db.sqlite'}", client_asker(client, "fake"), llm_timeout_s=0.3
            ) as s:
                body = s.client.post("/predict", json={"text": UNSETTLED_TEXT}, headers=s.headers()).json()
                settled = s.client.post("/predict", json={"text": SETTLED_TEXT}, headers=s.headers()).json()
                metrics = s.client.get("/metrics").text
        finally:
            client.close()
    assert body["prediction"] == "ABSTAIN" and "did not answer within 0.3s" in body["abstain_reason"]
    assert body["latency_ms"] < 2000
    assert settled["prediction"] == "relevant"
    assert 'assay_errors_total{kind="llm_timeout"} 1.0' in metrics


def test_batch_and_feedback_rows(served: Served) -> None:
    batch = served.client.post(
        "/predict/batch", json={"texts": [SETTLED_TEXT, "The football final is tonight."]}, headers=served.headers()
    )
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert len(results) == 2
    target = results[0]["prediction_id"]
    ok = served.client.post(
        "/feedback",
        json={"prediction_id": target, "label": "relevant", "reviewer": "ana"},
        headers=served.headers("review"),
    )
    assert ok.status_code == 200, ok.text
    rows = served.database.feedback_for(target)
    assert [(r.label, r.reviewer) for r in rows] == [("relevant", "ana")]
    bad_label = served.client.post(
        "/feedback", json={"prediction_id": target, "label": "spam"}, headers=served.headers("review")
    )
    assert bad_label.status_code == 422 and bad_label.json()["fields"][0]["field"] == "label"
    missing = served.client.post(
        "/feedback", json={"prediction_id": "nope", "label": "relevant"}, headers=served.headers("review")
    )
    assert missing.status_code == 404
    # The reviewer defaults to the token's name.
    served.client.post(
        "/feedback", json={"prediction_id": target, "label": "irrelevant"}, headers=served.headers("review")
    )
    assert served.database.feedback_for(target)[-1].reviewer == "test-review"
    with served.database.sessions() as session:
        assert len(session.scalars(select(Feedback)).all()) == 2


def test_healthz_names_the_live_version_and_metrics_count(served: Served) -> None:
    health = served.client.get("/healthz").json()
    assert health == {"status": "ok", "model_version": served.predictor.version, "experiment": "birdflu-tiny"}
    served.client.post("/predict", json={"text": SETTLED_TEXT}, headers=served.headers())
    served.client.post("/predict", json={"text": ""}, headers=served.headers())
    served.client.post("/predict", json={"text": "x"})
    text = served.client.get("/metrics").text
    assert 'assay_requests_total{endpoint="/predict",status="200"} 1.0' in text
    assert 'assay_errors_total{kind="validation"} 1.0' in text
    assert 'assay_errors_total{kind="auth"} 1.0' in text
    assert "assay_request_latency_seconds_bucket" in text and "assay_abstentions_total" in text
    assert "assay_llm_calls_total" in text


def test_internal_error_has_no_stack_trace(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(texts: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(served.predictor, "predict", broken)
    response = served.client.post("/predict", json={"text": SETTLED_TEXT}, headers=served.headers())
    assert response.status_code == 500
    assert response.json() == {"error": "internal error", "kind": "internal"}
    _no_trace(response.text)


def test_database_down_is_a_clean_503_and_nothing_is_acknowledged(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from pipeline.serving.storage import Database

    def down(self: Database, rows: Any) -> None:
        raise OperationalError("INSERT", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(Database, "add_predictions", down)
    response = served.client.post("/predict", json={"text": SETTLED_TEXT}, headers=served.headers())
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json() == {"error": "the database is unavailable; retry later", "kind": "database"}
    assert "prediction_id" not in response.text
    _no_trace(response.text)
