"""Shared fixtures for the call-layer tests: one fake OpenAI server per session, a zoo pointed at it,
a fresh ResponseStore per test and an LLMClient with fast backoff.

Every test talks to the fake over real HTTP through litellm; nothing of litellm is mocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

# The tests import `tests.fakes...` and `pipeline...`; make the repository root importable even when
# pytest is started from elsewhere or without PYTHONPATH.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# litellm fetches its price map from the internet at import time unless told not to (we are offline).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.config import ModelZoo, load_model_zoo  # noqa: E402
from pipeline.llm.client import LLMClient  # noqa: E402
from pipeline.llm.retry import RetryPolicy  # noqa: E402
from pipeline.store import ResponseStore  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

_T = TypeVar("_T")

FAST_RETRY = RetryPolicy(base_s=0.01, max_backoff_s=0.05)
"""Backoff for tests: retries wait milliseconds, Retry-After is still honoured in full."""


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run one coroutine on a fresh event loop (the tests are sync; pytest-asyncio is not required)."""
    return asyncio.run(coro)


def msgs(text: str) -> list[dict[str, str]]:
    """A one-message conversation; tests use a distinct text per call so server counts don't mix."""
    return [{"role": "user", "content": text}]


def alias_flag(alias: str, **fields: Any) -> str:
    """A `--set models.<alias>=<mapping>` flag defining a whole alias (JSON is valid YAML)."""
    return f"models.{alias}={json.dumps(fields)}"


def fake_alias_flag(alias: str, **fields: Any) -> str:
    """A second alias on the fake server, like `fake` but with its own fields (model id, version...)."""
    base: dict[str, Any] = {
        "model": "openai/fake-model",
        "version": "1",
        "api_base": "${ASSAY_FAKE_BASE_URL}",
        "needs_key": False,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "timeout_s": 10,
        "max_attempts": 4,
    }
    return alias_flag(alias, **{**base, **fields})


@pytest.fixture(scope="session")
def fake_server_session() -> Iterator[FakeOpenAIServer]:
    """The in-process fake server, started once; litellm is warmed up against it."""
    with FakeOpenAIServer() as server:
        _warm_up_litellm(server)
        yield server


def _warm_up_litellm(server: FakeOpenAIServer) -> None:
    # litellm's first call imports and initialises a lot (about 1.5 s); without this, whichever test
    # runs first would see its first attempt time out under a 0.5 s timeout_s.
    import litellm

    async def one() -> None:
        await litellm.acompletion(
            model="openai/fake-model",
            messages=msgs("warm-up"),
            api_base=server.base_url,
            api_key="assay-no-key",
            timeout=30,
            num_retries=0,
            max_retries=0,
        )

    run(one())
    server.reset()


@pytest.fixture
def server(fake_server_session: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    """The session's fake server with zeroed counters and no queued faults; ASSAY_FAKE_BASE_URL points at it."""
    fake_server_session.reset()
    monkeypatch.setenv("ASSAY_FAKE_BASE_URL", fake_server_session.base_url)
    return fake_server_session


@pytest.fixture
def make_zoo(server: FakeOpenAIServer) -> Callable[..., ModelZoo]:
    """Build the real configs/models.yaml zoo with `--set` overrides; `fake` points at the test server."""

    def build(*overrides: str) -> ModelZoo:
        return load_model_zoo(overrides=list(overrides))

    return build


@pytest.fixture
def zoo(make_zoo: Callable[..., ModelZoo]) -> ModelZoo:
    """The zoo with the fake alias at a 2 s timeout (tests that need a shorter one override it)."""
    return make_zoo("models.fake.timeout_s=2")


@pytest.fixture
def store(tmp_path: Path) -> ResponseStore:
    """An empty ResponseStore under the test's tmp_path."""
    return ResponseStore(tmp_path / "store")


@pytest.fixture
def client(zoo: ModelZoo, store: ResponseStore) -> Iterator[LLMClient]:
    """An LLMClient over `zoo` and `store`, no budget, millisecond backoff."""
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    yield client
    client.close()


# -- the hello experiment end to end: a fake that answers its prompts correctly, a fresh Assay home --------

HELLO_GOLD = {
    "striker": "sports",
    "eggs": "cooking",
    "kernel": "computing",
    "rain": "weather",
    "400 m": "sports",
    "tomato": "cooking",
    "Python": "computing",
    "snow": "weather",
}


def gold_responder(request: dict[str, Any]) -> str:
    """Answer hello's prompts correctly by keyword, as a good model would."""
    text = request["messages"][-1]["content"]
    topic = next((label for word, label in HELLO_GOLD.items() if word in text), "sports")
    return json.dumps({"topic": topic})


@pytest.fixture()
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=gold_responder) as server:
        yield server


@pytest.fixture()
def assay_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_server: FakeOpenAIServer) -> Path:
    """A fresh Assay home and embedded Dagster instance per test, the fake alias pointed at the server."""
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSAY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ASSAY_FAKE_BASE_URL", fake_server.base_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tmp_path
