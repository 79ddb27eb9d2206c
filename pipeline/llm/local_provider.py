"""The `local/<name>` litellm provider: the embedded llama.cpp model behind litellm's `CustomLLM` hook.

Going through litellm (rather than calling llama.cpp directly) means Assay's one client wrapper treats the
local model like any hosted one: same retries, response store, call ids and cost accounting (zero here).

Usage::

    register_local_provider()
    response = await litellm.acompletion(
        model="local/qwen2.5-coder-1.5b-instruct",
        messages=[{"role": "user", "content": "..."}],
        response_format={"type": "json_schema", "json_schema": {"name": "label", "schema": schema}},
        temperature=0,
        seed=0,
        max_tokens=32,
    )

litellm hands a CustomLLM the caller's OpenAI parameters untouched in `optional_params` (a pydantic
`response_format` is already turned into the `json_schema` dict); the model arrives without the `local/`
prefix. Errors are raised as `CustomLLMError` with an HTTP-like status, because litellm maps any other
exception to `APIConnectionError` (500), which the client would retry: a missing extra or an unknown
model name is a 400/404 that retrying cannot fix.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import litellm
from litellm import CustomLLM
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler
from litellm.llms.custom_llm import CustomLLMError
from litellm.types.utils import GenericStreamingChunk, ModelResponse

from pipeline.llm.local_model import (
    LOCAL_MODELS,
    LoadedModel,
    LocalModelError,
    LocalModelUnavailable,
    assemble_model,
    load_model,
)

PROVIDER = "local"
"""The litellm provider prefix: model ids look like `local/<name>`."""

# Parameters litellm (or a caller) may pass that cannot change the answer of a local model.
_IGNORED_PARAMS = frozenset(
    {"max_retries", "timeout", "user", "metadata", "stream_options", "extra_headers", "parallel_tool_calls"}
)
# Parameters that would change the answer but that this provider cannot honour: refused, not dropped.
_UNSUPPORTED_PARAMS = frozenset(
    {"tools", "tool_choice", "functions", "function_call", "logit_bias", "logprobs", "top_logprobs"}
)


def local_model_ids() -> list[str]:
    """The litellm model ids this provider serves (`local/<name>`)."""
    return [f"{PROVIDER}/{name}" for name in LOCAL_MODELS]


@dataclass(frozen=True)
class SamplingParams:
    """The OpenAI parameters of one call, translated to `Llama.create_chat_completion` keyword arguments."""

    kwargs: dict[str, Any]
    """Keyword arguments for `create_chat_completion` (besides messages)."""


def translate_params(optional_params: dict[str, Any]) -> SamplingParams:
    """Map OpenAI-style `optional_params` onto llama.cpp's chat-completion arguments.

    Unset temperature and top_p take OpenAI's defaults (1.0), so a call means the same here as on a hosted
    model. A `json_schema` response format becomes llama.cpp's schema-constrained JSON grammar, so the
    output always parses and matches the schema (enums, const and anyOf included).

    Raises:
        CustomLLMError: (400) a parameter that would change the output but cannot be honoured.
    """
    params = dict(optional_params)
    unsupported = sorted(k for k in params if k in _UNSUPPORTED_PARAMS and params[k] not in (None, False))
    if unsupported:
        raise CustomLLMError(
            status_code=400,
            message=f"the local provider does not support {', '.join(unsupported)}; "
            "remove them from the call or use a hosted model",
        )
    n = params.get("n")
    if n not in (None, 1):
        raise CustomLLMError(
            status_code=400,
            message=f"the local provider returns one choice per call, got n={n!r}; use repeats instead",
        )
    kwargs: dict[str, Any] = {
        "temperature": float(params["temperature"]) if params.get("temperature") is not None else 1.0,
        "top_p": float(params["top_p"]) if params.get("top_p") is not None else 1.0,
    }
    max_tokens = params.get("max_completion_tokens", params.get("max_tokens"))
    if max_tokens is not None:
        kwargs["max_tokens"] = int(max_tokens)
    if params.get("seed") is not None:
        kwargs["seed"] = int(params["seed"])
    stop = params.get("stop")
    if stop:
        kwargs["stop"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("presence_penalty", "frequency_penalty"):
        if params.get(name) is not None:
            kwargs[name] = float(params[name])
    response_format = _translate_response_format(params.get("response_format"))
    if response_format is not None:
        kwargs["response_format"] = response_format
    return SamplingParams(kwargs=kwargs)


def _translate_response_format(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise CustomLLMError(
            status_code=400,
            message=f"response_format must be a dict (OpenAI style), got {type(response_format).__name__}",
        )
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        # Optional schema: llama-cpp-python accepts {"type": "json_object", "schema": S} as an extension.
        return {
            "type": "json_object",
            **({"schema": response_format["schema"]} if "schema" in response_format else {}),
        }
    if kind == "json_schema":
        json_schema = response_format.get("json_schema") or {}
        schema = json_schema.get("schema")
        if not isinstance(schema, dict):
            raise CustomLLMError(
                status_code=400,
                message="response_format json_schema needs json_schema.schema (a JSON Schema object), "
                f"got {json_schema!r}",
            )
        return {"type": "json_object", "schema": schema}
    raise CustomLLMError(
        status_code=400,
        message=f"unknown response_format type {kind!r}; expected 'text', 'json_object' or 'json_schema'",
    )


@dataclass(frozen=True)
class _Inference:
    result: dict[str, Any]  # llama.cpp's OpenAI-shaped chat completion dict
    fingerprint: str  # identifies the exact weights, reported as system_fingerprint


def _fill_response(model_response: ModelResponse, inference: _Inference, model_name: str) -> ModelResponse:
    result = inference.result
    choice = result["choices"][0]
    message = choice.get("message") or {}
    model_response.choices[0].message.content = message.get("content")  # type: ignore[union-attr]
    model_response.choices[0].finish_reason = choice.get("finish_reason") or "stop"
    usage = result.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    completion_tokens = int(usage.get("completion_tokens", 0))
    model_response.usage = litellm.Usage(  # type: ignore[attr-defined]
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    model_response.model = f"{PROVIDER}/{model_name.removeprefix(f'{PROVIDER}/')}"
    model_response.created = int(result.get("created") or time.time())
    model_response.system_fingerprint = inference.fingerprint
    return model_response


class LocalLLM(CustomLLM):
    """litellm handler for `local/<name>`: assembles, verifies and loads the GGUF on first use.

    Inference runs one call at a time per model (llama.cpp contexts are not thread-safe); `acompletion`
    waits for its turn on an asyncio lock and then runs the blocking call in a worker thread, so the event
    loop stays free and only one worker thread is ever busy per model.
    """

    def __init__(
        self,
        models_dir: Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
    ) -> None:
        """Configure where models live and how llama.cpp runs them.

        Args:
            models_dir: directory for joined GGUF files; defaults to `<$ASSAY_HOME or .assay>/models`.
            n_ctx: context window in tokens (prompt + answer).
            n_threads: CPU threads for llama.cpp; None keeps its defaults (see `load_model`).
            n_gpu_layers: layers offloaded to a GPU build of llama.cpp (0: CPU only).
        """
        super().__init__()
        self.models_dir = models_dir
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        # One asyncio.Lock per (event loop, model): asyncio locks are bound to the loop that uses them.
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )
        self._async_locks_guard = threading.Lock()

    def model(self, name: str) -> LoadedModel:
        """The loaded model for `name` (without the `local/` prefix), assembling and loading it if needed.

        Raises:
            CustomLLMError: 404 for an unknown name; 400 when the extra or part packages are missing, or the
                file fails its checksum (the message says what to install or delete).
        """
        name = name.removeprefix(f"{PROVIDER}/")
        spec = LOCAL_MODELS.get(name)
        if spec is None:
            raise CustomLLMError(
                status_code=404,
                message=f"unknown local model {name!r}; known: {', '.join(local_model_ids())}",
            )
        try:
            path = assemble_model(
                self.models_dir,
                part_packages=spec.part_packages,
                expected_sha256=spec.sha256,
                filename=spec.filename,
            )
            return load_model(path, n_ctx=self.n_ctx, n_threads=self.n_threads, n_gpu_layers=self.n_gpu_layers)
        except LocalModelError as exc:
            raise CustomLLMError(status_code=400, message=str(exc)) from exc

    def _infer(self, name: str, messages: list[dict[str, Any]], sampling: SamplingParams) -> _Inference:
        loaded = self.model(name)
        spec = LOCAL_MODELS[name.removeprefix(f"{PROVIDER}/")]
        with loaded.lock:
            try:
                # litellm hands over OpenAI-shaped dicts, which is what llama.cpp's TypedDicts describe.
                result = loaded.llama.create_chat_completion(messages=cast(Any, messages), **sampling.kwargs)
            except ValueError as exc:  # llama.cpp's way of saying "prompt too long" and similar bad input
                raise CustomLLMError(status_code=400, message=f"local model {name!r} rejected the call: {exc}") from exc
        if not isinstance(result, dict):
            raise CustomLLMError(status_code=500, message="local model returned a stream for a non-stream call")
        return _Inference(result=cast(dict[str, Any], result), fingerprint=f"gguf-sha256-{spec.sha256[:12]}")

    def completion(
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: ModelResponse,
        print_verbose: Callable,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict,
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: dict | None = None,
        timeout: float | httpx.Timeout | None = None,
        client: HTTPHandler | None = None,
    ) -> ModelResponse:
        """Blocking chat completion (litellm.completion)."""
        sampling = translate_params(optional_params)
        inference = self._infer(model, messages, sampling)
        return _fill_response(model_response, inference, model)

    async def acompletion(  # type: ignore[override]
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: ModelResponse,
        print_verbose: Callable,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict,
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: dict | None = None,
        timeout: float | httpx.Timeout | None = None,
        client: AsyncHTTPHandler | None = None,
    ) -> ModelResponse:
        """Async chat completion (litellm.acompletion): the inference runs in a worker thread."""
        sampling = translate_params(optional_params)
        async with self._async_lock(model):
            inference = await asyncio.to_thread(self._infer, model, messages, sampling)
        return _fill_response(model_response, inference, model)

    def _async_lock(self, model: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._async_locks_guard:
            per_loop = self._async_locks.setdefault(loop, {})
            return per_loop.setdefault(model, asyncio.Lock())

    def streaming(self, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:
        """Not supported: raises a 400 so the client does not retry it."""
        raise CustomLLMError(status_code=400, message="the local provider does not stream; call without stream=True")

    async def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[GenericStreamingChunk]:  # type: ignore[override]
        """Not supported: raises a 400 so the client does not retry it."""
        raise CustomLLMError(status_code=400, message="the local provider does not stream; call without stream=True")


_register_lock = threading.Lock()


def register_local_provider(handler: LocalLLM | None = None) -> LocalLLM:
    """Make `local/<name>` callable through litellm; idempotent, returns the handler in use.

    Adds `{"provider": "local", "custom_handler": handler}` to `litellm.custom_provider_map` (replacing a
    previous local handler only when a new one is given), and registers every local model in litellm's
    cost map at zero cost so `litellm.completion_cost` works for them instead of raising
    `ModelNotMappedError`.
    """
    from litellm.utils import custom_llm_setup

    with _register_lock:
        existing = [item for item in litellm.custom_provider_map if item["provider"] == PROVIDER]
        if existing and handler is None and isinstance(existing[0]["custom_handler"], LocalLLM):
            active: LocalLLM = existing[0]["custom_handler"]
        else:
            active = handler or LocalLLM()
            litellm.custom_provider_map = [
                item for item in litellm.custom_provider_map if item["provider"] != PROVIDER
            ] + [{"provider": PROVIDER, "custom_handler": active}]
        custom_llm_setup()
        for model_id in local_model_ids():
            if model_id not in litellm.model_cost:
                litellm.register_model(
                    {
                        model_id: {
                            "litellm_provider": PROVIDER,
                            "mode": "chat",
                            "max_input_tokens": active.n_ctx,
                            "max_output_tokens": active.n_ctx,
                            "max_tokens": active.n_ctx,
                            "input_cost_per_token": 0.0,
                            "output_cost_per_token": 0.0,
                            # Given explicitly so litellm does not warn that cache pricing is unknown.
                            "cache_read_input_token_cost": 0.0,
                            "cache_creation_input_token_cost": 0.0,
                        }
                    }
                )
    return active


__all__ = [
    "PROVIDER",
    "LocalLLM",
    "LocalModelUnavailable",
    "SamplingParams",
    "local_model_ids",
    "register_local_provider",
    "translate_params",
]
