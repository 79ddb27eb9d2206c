"""LLMClient: the one wrapper every model call goes through.

`await client.complete(spec)` returns the stored answer if there is one (no call), else reserves budget,
calls the model through litellm under the endpoint's limits, retries transient failures with backoff,
falls back to the alias's fallbacks, writes the response durably to the store *before* returning, and
traces every attempt. litellm's own retries are off, so attempts are counted and traced here only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from pipeline.calls import CallSpec
from pipeline.config import ModelConfig, ModelZoo
from pipeline.llm.cost import Budget, Usage, actual_cost, count_prompt_tokens, estimate_call_cost, estimate_cost
from pipeline.llm.errors import (
    FatalProviderError,
    MissingCredentials,
    ProviderError,
    RateLimited,
    StoreUnavailable,
    StoreWriteFailed,
    TransientProviderError,
)
from pipeline.llm.limits import AdaptiveLimiter
from pipeline.llm.retry import RetryPolicy, classify
from pipeline.secrets import DEFAULT_KEY_ENV, scrub_secrets, secret_env_values
from pipeline.store import ResponseStore, StoredResponse, utc_now
from pipeline.store_spill import recover_spilled
from pipeline.store_writer import StoreWriter

NO_KEY = "assay-no-key"  # OpenAI-compatible clients insist on some key even for keyless servers


@dataclass(frozen=True)
class CallResult:
    """The outcome of `LLMClient.complete`.

    Attributes:
        call_id: the spec's content hash.
        text: the answer's text.
        usage: tokens billed.
        cost_usd: usage x price (0 when served from the store: it was paid for before).
        latency_s: seconds of the successful attempt (as stored).
        attempts: attempts made (as stored).
        model_used: litellm id that answered; alias_used: its zoo alias.
        from_store: True when no call was made.
        record: the stored record.
    """

    call_id: str
    text: str
    usage: Usage
    cost_usd: float
    latency_s: float
    attempts: int
    model_used: str
    alias_used: str
    from_store: bool
    record: StoredResponse

    @classmethod
    def from_record(cls, record: StoredResponse, *, from_store: bool) -> CallResult:
        """Build a result view of a stored record."""
        usage = Usage(int(record.usage.get("prompt_tokens", 0)), int(record.usage.get("completion_tokens", 0)))
        return cls(
            call_id=record.call_id,
            text=record.text,
            usage=usage,
            cost_usd=0.0 if from_store else record.cost_usd,
            latency_s=record.latency_s,
            attempts=record.attempts,
            model_used=record.model_used,
            alias_used=record.alias_used,
            from_store=from_store,
            record=record,
        )


def resolve_key(alias: str, config: ModelConfig, environ: Mapping[str, str]) -> str:
    """The API key for `config`, read from the environment at call time; never stored anywhere."""
    if not config.needs_key:
        return NO_KEY
    env_name = config.api_key_env or DEFAULT_KEY_ENV.get(config.provider)
    if env_name is None:
        import litellm

        missing = litellm.validate_environment(model=config.model).get("missing_keys") or []
        if not missing:
            return ""  # litellm finds the key itself (e.g. cloud credentials)
        env_name = missing[0]
    key = environ.get(env_name, "")
    if not key:
        raise MissingCredentials(
            f"model alias {alias!r} ({config.model}) needs an API key: set {env_name}, "
            "or run on the offline model with --model local",
            model=config.model,
        )
    return key


class LLMClient:
    """Async client over litellm with store, budget, limits, retries and fallbacks."""

    def __init__(
        self,
        zoo: ModelZoo,
        store: ResponseStore,
        *,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.zoo = zoo
        self.store = store
        self.budget = budget or Budget(None)
        self.retry = retry or RetryPolicy()
        self.environ = os.environ if environ is None else environ
        self._limiters: dict[tuple[int, str, str | None], AdaptiveLimiter] = {}
        # Responses (and success traces) are group-committed by a writer process: pipeline/store_writer.py.
        self._writer = StoreWriter(store)
        # Set at the first response that could not be stored (a full disk): no call is sent after it.
        self.store_failure: StoreWriteFailed | None = None
        # Responses kept from an earlier run that could not store them come first: none is paid for twice.
        self.recovered = recover_spilled(store)
        self._in_flight: dict[tuple[int, str], asyncio.Future[StoredResponse]] = {}

    # -- public ---------------------------------------------------------------------------------------
    def spec_for(
        self, alias: str, messages: list[dict[str, str]] | tuple[dict[str, str], ...], **params: Any
    ) -> CallSpec:
        """A CallSpec for `alias` with the zoo's resolved model id, pin and api_base."""
        config = self.zoo.get(alias)
        return CallSpec(
            alias=alias,
            model=config.model,
            version=config.version,
            api_base=config.api_base,
            messages=tuple(dict(message) for message in messages),
            **params,
        )

    async def complete(self, spec: CallSpec) -> CallResult:
        """Answer `spec`: from the store if already answered, else by calling the model (see module doc)."""
        # On the loop, not in a thread: a miss is one failed stat() (~10 us) and a hit one small read (or a
        # cached record), both cheaper than a thread hop, whose GIL hand-offs cost milliseconds when busy.
        stored = self.store.get(spec.call_id)
        if stored is not None:
            return CallResult.from_record(stored, from_store=True)
        # The same call already on its way (two items rendering to the same prompt, a caller retrying
        # while the first attempt runs): wait for that one instead of paying twice.
        in_flight_key = (id(asyncio.get_running_loop()), spec.call_id)
        pending = self._in_flight.get(in_flight_key)
        if pending is not None:
            try:
                record = await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and task is not None and not task.cancelling():
                    return await self.complete(spec)  # the first caller was cancelled, not this one
                raise
            return CallResult.from_record(record, from_store=True)
        future: asyncio.Future[StoredResponse] = asyncio.get_running_loop().create_future()
        self._in_flight[in_flight_key] = future
        try:
            record, fresh = await self._send_and_store(spec)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(record)
        finally:
            del self._in_flight[in_flight_key]
        return CallResult.from_record(record, from_store=not fresh)

    async def _send_and_store(self, spec: CallSpec) -> tuple[StoredResponse, bool]:
        if self.store_failure is not None:
            raise StoreUnavailable(f"not sent: {self.store_failure}", kept_in=self.store_failure.kept_in)
        config = self.zoo.get(spec.alias)
        key = resolve_key(spec.alias, config, self.environ)  # fail before reserving anything
        # Any model of the fallback chain may end up answering, so hold the dearest one's estimate:
        # reserving only the primary's would let a pricier fallback cross the budget.
        chain = [config, *(self.zoo.get(fallback) for fallback in config.fallbacks)]
        if self.budget.limit_usd is None and not any(cfg.limits.tpm for cfg in chain):
            # Nothing to enforce with an estimate (no budget, no tokens-per-minute limit): skip tokenizing.
            counted = (0, "not counted")
            reservation = self.budget.reserve(0.0)
        else:
            counted = count_prompt_tokens(spec)
            # The same function the plan prices calls with: pre-flight and the live stop agree.
            reservation = self.budget.reserve(estimate_call_cost(spec, self.zoo, counted).usd)
        actual: float | None = None
        try:
            record, fresh = await self._call_with_fallbacks(spec, config, key, counted)
            if fresh:
                actual = record.cost_usd
                await self._writer.write(record)
            else:
                actual = 0.0
            if record.call_id != spec.call_id:
                # A fallback answered: its record is stored as its own call (a later run of the fallback
                # alias is served it); the planned call points at it until its own model answers.
                self.store.put_substitute(spec.call_id, record.call_id, record.alias_used)
        except StoreWriteFailed as exc:
            self.store_failure = self.store_failure or exc
            await self._writer.flush()
            raise
        except Exception:
            # A queued success trace (the record then failed to write) must be on disk when this raises.
            await self._writer.flush()
            raise
        finally:
            self.budget.settle(reservation, actual)
        return record, fresh

    def close(self) -> None:
        """Stop the store writer (its process ends once it has committed what it holds)."""
        self._writer.close()

    # -- internals ------------------------------------------------------------------------------------
    async def _call_with_fallbacks(
        self, spec: CallSpec, config: ModelConfig, key: str, counted: tuple[int, str]
    ) -> tuple[StoredResponse, bool]:
        """The answer of `spec`'s model, else of its fallbacks in order; True when it was paid for now.

        A fallback's answer is the fallback model's call (its own call id, its own record), so it is never
        mistaken for the planned model's answer; one already stored is used without calling again.
        """
        started_at = utc_now()
        attempts_so_far = 0
        last_error: ProviderError | None = None
        chain = [(spec, config, key)]
        for fallback in config.fallbacks:
            fallback_config = self.zoo.get(fallback)
            try:
                fallback_key = resolve_key(fallback, fallback_config, self.environ)
            except MissingCredentials as exc:
                self.store.append_trace(
                    spec.call_id, {"event": "fallback_skipped", "alias": fallback, "error": str(exc)}
                )
                continue
            chain.append((spec_for_alias(spec, fallback, fallback_config), fallback_config, fallback_key))
        for asked, model_config, model_key in chain:
            if asked is not spec:
                stored = self.store.get(asked.call_id)
                if stored is not None:
                    return stored, False
            try:
                response, latency, attempts = await self._call_with_retries(
                    asked, asked.alias, model_config, model_key, counted
                )
            except (RateLimited, TransientProviderError) as exc:
                attempts_so_far += model_config.max_attempts
                last_error = exc
                continue
            except ProviderError:
                raise
            usage = _usage_of(response)
            record = StoredResponse(
                call_id=asked.call_id,
                request=asked.to_record(),
                text=_text_of(response),
                raw_response=_raw_of(response),
                usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
                cost_usd=actual_cost(usage, model_config),
                latency_s=latency,
                started_at=started_at,
                finished_at=utc_now(),
                attempts=attempts_so_far + attempts,
                model_used=model_config.model,
                alias_used=asked.alias,
            )
            return record, True
        assert last_error is not None
        raise last_error

    async def _call_with_retries(
        self, spec: CallSpec, alias: str, config: ModelConfig, key: str, counted: tuple[int, str]
    ) -> tuple[Any, float, int]:
        limiter = self._limiter(config)
        tokens = estimate_cost(spec, config, counted)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(config.max_attempts),
            wait=self._wait_before_retry,
            retry=retry_if_exception_type((RateLimited, TransientProviderError)),
            reraise=True,  # the last classified error, not tenacity's RetryError
        )
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                response, latency = await self._attempt(spec, alias, config, key, limiter, tokens.total_tokens, number)
        return response, latency, number

    def _wait_before_retry(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        return self.retry.wait_s(retry_state.attempt_number, error)

    async def _attempt(
        self,
        spec: CallSpec,
        alias: str,
        config: ModelConfig,
        key: str,
        limiter: AdaptiveLimiter,
        tokens: int,
        number: int,
    ) -> tuple[Any, float]:
        """One try: send under the endpoint's limits, classify a failure, trace either way."""
        begun = time.monotonic()
        try:
            async with limiter.slot(tokens):
                begun = time.monotonic()
                response = await self._send(spec, config, key)
        except asyncio.CancelledError:
            raise
        except BaseException as raw:  # noqa: BLE001 - classified below; unknown ones re-raised as they are
            key_env = config.api_key_env or (DEFAULT_KEY_ENV.get(config.provider) if config.needs_key else None)
            error = classify(raw, model=config.model, key_env=key_env)
            self._trace(spec, alias, config, number, begun, error)
            if not isinstance(error, ProviderError):
                raise
            if isinstance(error, RateLimited):
                limiter.on_rate_limited()
            raise error from None
        latency = time.monotonic() - begun
        self._trace(spec, alias, config, number, begun, None)
        await limiter.on_success()
        return response, latency

    async def _send(self, spec: CallSpec, config: ModelConfig, key: str) -> Any:
        import litellm

        litellm.suppress_debug_info = True  # its "Give Feedback" banner would drown our own error lines
        if config.provider == "local":
            from pipeline.llm.local_provider import register_local_provider

            register_local_provider()
        kwargs: dict[str, Any] = {
            "model": config.model,
            "messages": [dict(message) for message in spec.messages],
            "timeout": config.timeout_s,
            "num_retries": 0,  # retries happen in exactly one place: here
            "max_retries": 0,
            "drop_params": True,  # e.g. Anthropic has no seed; the call_id still records what we asked
        }
        if config.api_base:
            kwargs["api_base"] = config.api_base
        if key:
            kwargs["api_key"] = key
        for name in ("temperature", "top_p", "max_tokens", "seed", "response_format"):
            value = getattr(spec, name)
            if value is not None:
                kwargs[name] = value
        # litellm's timeout does not cover every transport stall; this one always fires. (asyncio.timeout,
        # unlike wait_for, runs the call in this task instead of wrapping it in another one.)
        async with asyncio.timeout(config.timeout_s + 1.0):
            return await litellm.acompletion(**kwargs)

    def _limiter(self, config: ModelConfig) -> AdaptiveLimiter:
        # asyncio primitives belong to one event loop; a client may serve several asyncio.run() calls.
        key = (id(asyncio.get_running_loop()), config.model, config.api_base)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = AdaptiveLimiter(config.limits)
        return limiter

    def _trace(
        self, spec: CallSpec, alias: str, config: ModelConfig, attempt: int, begun: float, error: BaseException | None
    ) -> None:
        event: dict[str, Any] = {
            "event": "attempt",
            "attempt": attempt,
            "alias": alias,
            "model": config.model,
            "latency_s": round(time.monotonic() - begun, 4),
            "outcome": "ok" if error is None else "error",
        }
        if error is not None:
            event["error_type"] = type(error).__name__
            event["message"] = scrub_secrets(str(error))
            event["status_code"] = getattr(error, "status_code", None)
            event["retry_after"] = getattr(error, "retry_after", None)
        if error is None:
            # A success is written with its record's group commit (ahead of the record), not on its own.
            self._writer.trace(spec.call_id, event)
        else:
            try:
                self.store.append_trace(spec.call_id, event)  # on disk at once: the call may be about to fail
            except OSError as exc:
                line = self.store.trace_line(spec.call_id, event, secret_env_values())
                failure = self._writer.keep_trace(str(self.store.trace_path(spec.call_id)), line, str(exc))
                self.store_failure = self.store_failure or failure


def spec_for_alias(spec: CallSpec, alias: str, config: ModelConfig) -> CallSpec:
    """The same request addressed to another alias's model (its own call id)."""
    return dataclasses.replace(spec, alias=alias, model=config.model, version=config.version, api_base=config.api_base)


def _usage_of(response: Any) -> Usage:
    usage = getattr(response, "usage", None)
    return Usage(int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))


def _text_of(response: Any) -> str:
    try:
        return response.choices[0].message.content or ""
    except (AttributeError, IndexError):
        return ""


def _raw_of(response: Any) -> dict[str, Any]:
    try:
        raw = response.model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a provider object that cannot dump itself is still a valid answer
        raw = {"repr": repr(response)}
    return raw if isinstance(raw, dict) else {"value": raw}


__all__ = ["DEFAULT_KEY_ENV", "CallResult", "FatalProviderError", "LLMClient", "resolve_key"]
