"""LLMClient over real HTTP to the fake server through litellm: store, retries, fallbacks, budget, limits."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipeline.config import Limits, ModelZoo, load_model_zoo
from pipeline.llm.client import LLMClient
from pipeline.llm.cost import Budget, Reservation, estimate_cost
from pipeline.llm.errors import (
    BudgetExceeded,
    FatalProviderError,
    MissingCredentials,
    TransientProviderError,
)
from pipeline.llm.limits import AdaptiveLimiter, TokenBucket
from pipeline.store import ResponseStore
from tests.conftest import FAST_RETRY, fake_alias_flag, msgs, run
from tests.fakes.openai_server import FakeOpenAIServer, default_responder

# ------------------------------------------------------------------------------------- store as cache


def test_first_call_sends_second_comes_from_store(
    client: LLMClient, store: ResponseStore, zoo: ModelZoo, server: FakeOpenAIServer
) -> None:
    messages = msgs("cache me")
    spec = client.spec_for("fake", messages)
    first = run(client.complete(spec))
    assert not first.from_store and first.attempts == 1 and first.cost_usd > 0
    assert first.text == default_responder({"messages": messages})
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    assert store.has(spec.call_id)

    second = run(client.complete(spec))
    assert second.from_store and second.text == first.text and second.cost_usd == 0.0
    # A new client (a resumed run) on the same store, with different timeouts: still no call.
    resumed = LLMClient(load_model_zoo(overrides=["models.fake.timeout_s=7"]), store, retry=FAST_RETRY)
    assert run(resumed.complete(resumed.spec_for("fake", messages))).from_store
    assert server.count(messages) == 1


def test_sampling_parameters_and_response_format_reach_the_server(client: LLMClient) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["fruit", "vegetable"]}},
        "required": ["label"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}
    spec = client.spec_for(
        "fake", msgs("json please"), temperature=0.3, top_p=0.9, seed=7, max_tokens=20, response_format=response_format
    )
    result = run(client.complete(spec))
    assert json.loads(result.text)["label"] in {"fruit", "vegetable"}
    assert result.record.request["response_format"] == response_format


# ------------------------------------------------------------------------------------------ retries


def test_429_waits_for_retry_after_then_succeeds(
    client: LLMClient, store: ResponseStore, server: FakeOpenAIServer
) -> None:
    messages = msgs("rate limited once")
    server.inject("429", match="rate limited once", retry_after=0.3)
    begun = time.monotonic()
    result = run(client.complete(client.spec_for("fake", messages)))
    elapsed = time.monotonic() - begun
    # FAST_RETRY's own backoff is <= 0.05 s, so only Retry-After explains a wait this long.
    assert elapsed >= 0.3
    assert result.attempts == 2 and server.count(messages) == 2
    first, second = store.read_trace(result.call_id)
    assert (first["error_type"], first["status_code"], first["retry_after"]) == ("RateLimited", 429, 0.3)
    assert second["outcome"] == "ok"
    assert _iso_seconds(second["at"]) - second["latency_s"] - _iso_seconds(first["at"]) >= 0.29


@pytest.mark.parametrize("kind", ["500", "503", "not_json"])
def test_transient_failures_are_retried(
    client: LLMClient, store: ResponseStore, server: FakeOpenAIServer, kind: str
) -> None:
    messages = msgs(f"transient {kind}")
    server.inject(kind, times=2, match=f"transient {kind}")
    begun = time.monotonic()
    result = run(client.complete(client.spec_for("fake", messages)))
    assert time.monotonic() - begun < 0.3  # no Retry-After: millisecond backoff only
    assert result.attempts == 3 and server.count(messages) == 3
    assert [e["error_type"] for e in store.read_trace(result.call_id)[:2]] == ["TransientProviderError"] * 2


def test_hang_times_out_then_the_retry_succeeds(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer
) -> None:
    client = LLMClient(make_zoo("models.fake.timeout_s=0.5"), store, retry=FAST_RETRY)
    messages = msgs("hang once")
    server.inject("hang", match="hang once")
    begun = time.monotonic()
    result = run(client.complete(client.spec_for("fake", messages)))
    elapsed = time.monotonic() - begun
    assert 0.5 <= elapsed < 2.5
    assert result.attempts == 2 and server.count(messages) == 2
    first = store.read_trace(result.call_id)[0]
    assert first["error_type"] == "TransientProviderError" and "timed out" in first["message"]


@pytest.mark.parametrize(("kind", "error_type"), [("400", FatalProviderError), ("401", MissingCredentials)])
def test_client_errors_are_never_retried(
    client: LLMClient, store: ResponseStore, server: FakeOpenAIServer, kind: str, error_type: type[Exception]
) -> None:
    messages = msgs(f"fatal {kind}")
    server.inject(kind, times=5, match=f"fatal {kind}")
    spec = client.spec_for("fake", messages)
    with pytest.raises(error_type) as info:
        run(client.complete(spec))
    assert info.value.status_code == int(kind)  # type: ignore[attr-defined]
    assert server.count(messages) == 1
    assert len(store.read_trace(spec.call_id)) == 1
    assert not store.has(spec.call_id)
    assert client.budget.reserved_usd == 0.0


def test_not_found_is_never_retried(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer
) -> None:
    root = server.base_url.removesuffix("/v1")
    zoo = make_zoo(fake_alias_flag("nowhere", api_base=f"{root}/no/such/path/v1"))
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    spec = client.spec_for("nowhere", msgs("404 please"))
    with pytest.raises(FatalProviderError) as info:
        run(client.complete(spec))
    assert info.value.status_code == 404
    assert [e["status_code"] for e in store.read_trace(spec.call_id)] == [404]


def test_rejected_key_names_the_env_var(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_FAKE_API_KEY", "sk-test-rejected-0123456789")
    zoo = make_zoo(fake_alias_flag("keyed", needs_key=True, api_key_env="ASSAY_FAKE_API_KEY"))
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    server.inject("401", match="bad key")
    with pytest.raises(MissingCredentials, match=r"HTTP 401.*set ASSAY_FAKE_API_KEY to a valid key"):
        run(client.complete(client.spec_for("keyed", msgs("bad key"))))
    assert server.total() == 1


def test_missing_key_fails_before_any_request(
    client: LLMClient, store: ResponseStore, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = client.spec_for("gpt4o_mini", msgs("no key"))
    with pytest.raises(MissingCredentials) as info:
        run(client.complete(spec))
    message = str(info.value)
    assert "'gpt4o_mini'" in message and "set OPENAI_API_KEY" in message and "--model local" in message
    # Our error, raised by our code: no litellm frames, nothing chained from inside litellm.
    assert not any("litellm" in frame.filename for frame in traceback.extract_tb(info.tb))
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert server.total() == 0
    assert store.read_trace(spec.call_id) == []
    assert client.budget.reserved_usd == 0.0 and client.budget.spent_usd == 0.0


def test_retries_exhausted_raise_the_last_error(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer
) -> None:
    client = LLMClient(make_zoo("models.fake.max_attempts=3"), store, retry=FAST_RETRY)
    messages = msgs("always down")
    server.inject("503", times=10, match="always down")
    spec = client.spec_for("fake", messages)
    with pytest.raises(TransientProviderError, match="overloaded"):
        run(client.complete(spec))
    assert server.count(messages) == 3  # exactly max_attempts: litellm's own retries are off
    assert [e["attempt"] for e in store.read_trace(spec.call_id)] == [1, 2, 3]
    assert not store.has(spec.call_id)


def test_retries_exhausted_fall_back_to_the_next_alias(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer
) -> None:
    zoo = make_zoo(
        fake_alias_flag("fake2", model="openai/fake-model-2", version="2"),
        "models.fake.max_attempts=2",
        "models.fake.fallbacks=[fake2]",
    )
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    messages = msgs("primary is down")
    server.inject("500", times=2, match="primary is down")  # both attempts on `fake`; fake2 gets through
    spec = client.spec_for("fake", messages)
    result = run(client.complete(spec))
    assert (result.alias_used, result.model_used, result.attempts) == ("fake2", "openai/fake-model-2", 3)
    # The fallback's answer is the fallback model's own call: never stored under the primary's call id (a
    # later run of the primary would be served it forever); the planned call points at it instead.
    assert store.get(spec.call_id) is None
    stored = store.get_answer(spec.call_id)
    assert stored is not None and (stored.alias_used, stored.model_used) == ("fake2", "openai/fake-model-2")
    assert stored.request["model"] == "openai/fake-model-2" and stored.call_id == result.call_id != spec.call_id
    assert [(e["alias"], e["attempt"], e["outcome"]) for e in store.read_trace(spec.call_id)] == [
        ("fake", 1, "error"),
        ("fake", 2, "error"),
    ]
    assert [(e["alias"], e["outcome"]) for e in store.read_trace(result.call_id)] == [("fake2", "ok")]
    assert server.count(messages) == 3
    # Asked again for the primary: the primary is tried (it may be back); the fallback's answer is not paid twice.
    server.inject("500", times=2, match="primary is down")
    again = run(client.complete(spec))
    assert again.from_store and again.call_id == result.call_id and server.count(messages) == 5


def test_fatal_errors_do_not_fall_back(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer
) -> None:
    zoo = make_zoo(fake_alias_flag("fake2", model="openai/fake-model-2"), "models.fake.fallbacks=[fake2]")
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    server.inject("400", match="bad request")
    with pytest.raises(FatalProviderError):
        run(client.complete(client.spec_for("fake", msgs("bad request"))))
    assert server.total() == 1


# ------------------------------------------------------------------------------------------- budget


def priced_zoo(make_zoo: Callable[..., ModelZoo], **extra: Any) -> ModelZoo:
    # Prompt tokens free, output at $1000/Mtok, max_tokens=5: the fake's default answer is exactly 5 tokens
    # ("fake answer 1234abcd" = 20 chars), so every call's estimate equals its actual cost, $0.005.
    return make_zoo(fake_alias_flag("pricey", price={"input_per_mtok": 0.0, "output_per_mtok": 1000.0}, **extra))


def test_budget_stops_before_the_crossing_call(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer
) -> None:
    zoo = priced_zoo(make_zoo)
    budget = Budget(0.012)
    client = LLMClient(zoo, store, budget=budget, retry=FAST_RETRY)
    specs = [client.spec_for("pricey", msgs(f"budget call {i}"), max_tokens=5) for i in range(3)]
    assert estimate_cost(specs[0], zoo.get("pricey")).usd == pytest.approx(0.005)

    first = run(client.complete(specs[0]))
    assert first.cost_usd == pytest.approx(0.005)  # the premise: estimate == actual
    run(client.complete(specs[1]))
    with pytest.raises(BudgetExceeded, match=r"budget \$0\.0120 would be exceeded.*larger --max-cost") as info:
        run(client.complete(specs[2]))
    assert info.value.spent_usd == pytest.approx(0.010)
    assert info.value.next_estimate_usd == pytest.approx(0.005)
    assert server.count(specs[2].messages) == 0  # type: ignore[arg-type]
    assert server.total() == 2
    assert store.has(specs[0].call_id) and store.has(specs[1].call_id) and not store.has(specs[2].call_id)
    assert store.read_trace(specs[2].call_id) == []
    assert budget.reserved_usd == 0.0

    # Resume with a larger budget: the two answers come from the store, only the third is sent.
    resumed = LLMClient(zoo, store, budget=Budget(0.02), retry=FAST_RETRY)
    results = [run(resumed.complete(spec)) for spec in specs]
    assert [r.from_store for r in results] == [True, True, False]
    assert server.total() == 3


def test_budget_reserves_for_a_pricier_fallback(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer
) -> None:
    # `fake` costs ~$0.00002 a call, its fallback `pricey` $0.005: a $0.001 budget must not let the fallback
    # answer (it would overspend 5x), so the call is refused before any request.
    zoo = make_zoo(
        fake_alias_flag(
            "pricey", model="openai/fake-model-2", price={"input_per_mtok": 0.0, "output_per_mtok": 1000.0}
        ),
        "models.fake.fallbacks=[pricey]",
        "models.fake.max_attempts=1",
    )
    budget = Budget(0.001)
    client = LLMClient(zoo, store, budget=budget, retry=FAST_RETRY)
    server.inject("500", match="fallback costs more")
    with pytest.raises(BudgetExceeded):
        run(client.complete(client.spec_for("fake", msgs("fallback costs more"), max_tokens=5)))
    assert server.total() == 0
    assert budget.spent_usd <= budget.limit_usd  # type: ignore[operator]


class PeakBudget(Budget):
    """A Budget that records the highest spent + reserved it ever held."""

    def __init__(self, limit_usd: float) -> None:
        super().__init__(limit_usd)
        self.peak_usd = 0.0
        self.refused = 0

    def reserve(self, estimate_usd: float) -> Reservation:
        try:
            reservation = super().reserve(estimate_usd)
        except BudgetExceeded:
            self.refused += 1
            raise
        self.peak_usd = max(self.peak_usd, self.spent_usd + self.reserved_usd)
        return reservation

    def settle(self, reservation: Reservation, actual_usd: float | None) -> None:
        super().settle(reservation, actual_usd)
        self.peak_usd = max(self.peak_usd, self.spent_usd + self.reserved_usd)


def test_concurrent_calls_never_exceed_the_budget(
    tracking_server: InFlightResponder, store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    zoo = tracking_zoo(monkeypatch, tracking_server)
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    specs = [client.spec_for("fake", msgs(f"concurrent budget {i}")) for i in range(50)]
    estimate = estimate_cost(specs[0], zoo.get("fake")).usd
    budget = client.budget = PeakBudget(10.5 * estimate)

    async def all_calls() -> list[Any]:
        return await asyncio.gather(*(client.complete(spec) for spec in specs), return_exceptions=True)

    outcomes = run(all_calls())
    answered = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, BudgetExceeded) for o in refused), refused
    assert len(answered) >= 10 and refused  # the limit bit, and it let through what fits
    assert budget.refused == len(refused)
    assert budget.peak_usd <= budget.limit_usd  # type: ignore[operator]
    assert budget.reserved_usd == 0.0
    assert budget.spent_usd == pytest.approx(sum(r.cost_usd for r in answered))
    assert tracking_server.server.total() == len(answered)  # refused calls sent nothing
    assert all(store.has(r.call_id) for r in answered)


# ------------------------------------------------------------------------------------- rate limits


def test_adaptive_limiter_backs_off_and_recovers() -> None:
    async def scenario() -> list[int]:
        limiter = AdaptiveLimiter(Limits(max_concurrent=8))
        seen = [limiter.limit]
        limiter.on_rate_limited()
        seen.append(limiter.limit)
        limiter.on_rate_limited()  # same overload, within a second: counted once
        seen.append(limiter.limit)
        for _ in range(4):  # `limit` successes in a row: +1
            await limiter.on_success()
        seen.append(limiter.limit)
        for _ in range(5 + 6 + 7):
            await limiter.on_success()
        seen.append(limiter.limit)
        for _ in range(100):  # never past the configured maximum
            await limiter.on_success()
        seen.append(limiter.limit)
        return seen

    assert run(scenario()) == [8, 4, 4, 5, 8, 8]


def test_adaptive_limiter_floor_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = AdaptiveLimiter(Limits(max_concurrent=3))
    clock = iter(range(100, 200, 2))  # each 429 two seconds after the last
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    for _ in range(5):
        limiter.on_rate_limited()
    assert limiter.limit == 1


def test_limiter_slots_respect_a_lowered_limit() -> None:
    async def scenario() -> int:
        limiter = AdaptiveLimiter(Limits(max_concurrent=4))
        limiter.on_rate_limited()  # 4 -> 2
        peak = 0

        async def hold() -> None:
            nonlocal peak
            async with limiter.slot(tokens=10):
                peak = max(peak, limiter.in_flight)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(hold() for _ in range(10)))
        assert limiter.in_flight == 0
        return peak

    assert run(scenario()) == 2


def test_limiter_hands_slots_over_in_order_and_survives_cancellation() -> None:
    async def scenario() -> tuple[list[int], int, int]:
        limiter = AdaptiveLimiter(Limits(max_concurrent=1))
        order: list[int] = []
        release = asyncio.Event()

        async def call(index: int) -> None:
            async with limiter.slot(tokens=1):
                order.append(index)
                if index == 0:
                    await release.wait()

        first = asyncio.create_task(call(0))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(call(i)) for i in range(1, 6)]
        await asyncio.sleep(0)
        waiting[0].cancel()  # cancelled while queued
        release.set()
        await asyncio.sleep(0)  # call 0 leaves; its slot goes to call 2, already granted
        waiting[1].cancel()  # cancelled after being granted: the slot must pass on, not leak
        results = await asyncio.gather(first, *waiting, return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        return order, cancelled, limiter.in_flight

    order, cancelled, in_flight = run(scenario())
    assert cancelled == 2
    assert order == [0, 3, 4, 5]
    assert in_flight == 0


def test_token_bucket_waits_when_empty() -> None:
    async def scenario() -> float:
        bucket = TokenBucket(per_minute=600)  # 10 per second, 600 in stock
        await bucket.take(600)
        begun = time.monotonic()
        await bucket.take(1)
        return time.monotonic() - begun

    assert 0.08 <= run(scenario()) < 0.5


def test_429_lowers_the_client_limit_and_successes_raise_it(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer
) -> None:
    zoo = make_zoo("models.fake.limits.max_concurrent=8")
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    server.inject("429", match="slow down", retry_after=0)

    async def scenario() -> list[int]:
        limiter = client._limiter(zoo.get("fake"))
        await client.complete(client.spec_for("fake", msgs("slow down")))
        after_429 = limiter.limit  # the retry's success counts 1 of the 4 needed
        for i in range(3):
            await client.complete(client.spec_for("fake", msgs(f"fine {i}")))
        return [after_429, limiter.limit]

    assert run(scenario()) == [4, 5]


def test_concurrency_never_exceeds_max_concurrent(
    tracking_server: InFlightResponder, store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    zoo = tracking_zoo(monkeypatch, tracking_server, "models.fake.limits.max_concurrent=4")
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    specs = [client.spec_for("fake", msgs(f"in flight {i}")) for i in range(24)]

    async def all_calls() -> None:
        await asyncio.gather(*(client.complete(spec) for spec in specs))

    run(all_calls())
    assert tracking_server.peak == 4  # reached, never passed
    assert tracking_server.server.total() == 24


# ------------------------------------------------------------------------------------------ helpers


class InFlightResponder:
    """A fake-server responder that takes `delay_s` per answer and records the most requests in flight."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.now = 0
        self.peak = 0
        self.server: FakeOpenAIServer

    async def __call__(self, request: dict[str, Any]) -> str:
        # Runs on the server's single event-loop thread, so plain counters are safe.
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.now -= 1
        return default_responder(request)


@pytest.fixture(scope="module")
def _tracking_server_module() -> Iterator[InFlightResponder]:
    responder = InFlightResponder(delay_s=0.05)
    with FakeOpenAIServer(responder=responder) as server:
        responder.server = server
        yield responder


@pytest.fixture
def tracking_server(_tracking_server_module: InFlightResponder, server: FakeOpenAIServer) -> InFlightResponder:
    """A second fake server whose answers take 50 ms and which measures concurrency; zeroed per test."""
    # Depends on `server` only so litellm is warmed up before the first timed call.
    _tracking_server_module.server.reset()
    _tracking_server_module.peak = 0
    return _tracking_server_module


def tracking_zoo(monkeypatch: pytest.MonkeyPatch, tracking: InFlightResponder, *overrides: str) -> ModelZoo:
    monkeypatch.setenv("ASSAY_FAKE_BASE_URL", tracking.server.base_url)
    return load_model_zoo(overrides=["models.fake.timeout_s=5", *overrides])


def _iso_seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def test_the_same_call_twice_at_once_is_sent_once(client: LLMClient, server: FakeOpenAIServer) -> None:
    messages = msgs("asked twice at once")
    spec = client.spec_for("fake", messages)

    async def both() -> list[Any]:
        return list(await asyncio.gather(client.complete(spec), client.complete(spec)))

    first, second = run(both())
    assert server.count(messages) == 1
    assert sorted([first.from_store, second.from_store]) == [False, True]
    assert first.text == second.text


def test_a_failed_call_fails_its_concurrent_twin_without_a_second_request(
    client: LLMClient, server: FakeOpenAIServer
) -> None:
    messages = msgs("twin of a bad request")
    server.inject("400", times=5, match="twin of a bad request")
    spec = client.spec_for("fake", messages)

    async def both() -> list[Any]:
        return list(await asyncio.gather(client.complete(spec), client.complete(spec), return_exceptions=True))

    outcomes = run(both())
    assert all(isinstance(outcome, FatalProviderError) for outcome in outcomes)
    assert server.count(messages) == 1
