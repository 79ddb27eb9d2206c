"""ProcessCallRunner: calls in a spawned worker, outcomes streamed back, stop honoured, nothing lost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.config import load_model_zoo
from pipeline.llm.client import LLMClient
from pipeline.store import ResponseStore
from pipeline.worker import PROCESS_THRESHOLD, ProcessCallRunner, call_runner_for
from tests.fakes.openai_server import start_fake_server_process


@pytest.fixture()
def slow_server():
    server = start_fake_server_process(latency=0.2)
    yield server
    server.stop()


def _client(tmp_path: Path, base_url: str, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> LLMClient:
    monkeypatch.setenv("ASSAY_FAKE_BASE_URL", base_url)
    return LLMClient(load_model_zoo(overrides=list(overrides)), ResponseStore(tmp_path / "store"))


@pytest.mark.slow
def test_worker_makes_the_calls_and_streams_slim_outcomes(
    tmp_path: Path, slow_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(tmp_path, slow_server.base_url, monkeypatch)
    specs = [client.spec_for("fake", [{"role": "user", "content": f"worker {i}"}], max_tokens=8) for i in range(40)]
    runner = ProcessCallRunner(client)
    outcomes = list(runner.run(specs))
    assert len(outcomes) == 40 and all(outcome.ok for outcome in outcomes)
    assert runner.summary.sent == 40
    assert all(client.store.has(spec.call_id) for spec in specs)
    first = outcomes[0].result
    assert first is not None and first.usage.prompt_tokens > 0 and first.record.cost_usd > 0
    assert first.record.raw_response == {}, "outcomes from the worker carry metadata only"


@pytest.mark.slow
def test_stop_starts_nothing_new_and_keeps_what_was_answered(
    tmp_path: Path, slow_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(tmp_path, slow_server.base_url, monkeypatch, "models.fake.limits.max_concurrent=4")
    specs = [client.spec_for("fake", [{"role": "user", "content": f"stop {i}"}], max_tokens=8) for i in range(200)]
    stop = threading.Event()
    runner = ProcessCallRunner(client)
    seen = 0
    for _ in runner.run(specs, stop):
        seen += 1
        if seen == 10:
            stop.set()
    assert runner.summary.stopped_by == "signal"
    assert seen < 40
    stored = len(client.store.stored_ids())
    assert stored == seen == slow_server.stats()["answered_ok_total"]


def test_small_batches_stay_in_process(tmp_path: Path) -> None:
    client = LLMClient(load_model_zoo(), ResponseStore(tmp_path / "store"))
    assert type(call_runner_for(client, PROCESS_THRESHOLD - 1)).__name__ == "CallRunner"
    assert type(call_runner_for(client, PROCESS_THRESHOLD)).__name__ == "ProcessCallRunner"
    assert type(call_runner_for(client, 10_000, {"ASSAY_CALL_WORKER": "0"})).__name__ == "CallRunner"


@pytest.mark.slow
def test_a_prewarmed_worker_takes_the_next_batch(tmp_path: Path, slow_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.worker import WarmWorker

    client = _client(tmp_path, slow_server.base_url, monkeypatch)
    warm = WarmWorker()  # after the environment is set: a warm worker inherits it as it is now
    process = warm._worker.process if warm._worker is not None else None
    assert process is not None and process.is_alive()
    specs = [client.spec_for("fake", [{"role": "user", "content": f"warm {i}"}], max_tokens=8) for i in range(20)]
    outcomes = list(ProcessCallRunner(client, warm=warm).run(specs))
    assert len(outcomes) == 20 and all(outcome.ok for outcome in outcomes)
    assert warm.take() is None, "the batch took the warm worker"
    process.join(timeout=30)
    assert process.exitcode == 0


def test_an_unused_warm_worker_is_stopped_cleanly() -> None:
    from pipeline.worker import WarmWorker

    warm = WarmWorker()
    process = warm._worker.process if warm._worker is not None else None
    assert process is not None
    warm.discard()
    assert warm.take() is None and not process.is_alive() and process.exitcode == 0
    warm.discard()  # nothing to stop: a no-op
