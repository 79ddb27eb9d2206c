"""A fake OpenAI chat-completions server on 127.0.0.1, spoken to over real HTTP.

Tests and benchmarks point litellm at it with ``model="openai/<anything>"`` and
``api_base=server.base_url``. It counts every request per prompt, injects faults on demand
(429 with Retry-After, 5xx, 400/401, hangs, non-JSON bodies, ignored ``response_format``, a 502
whose body echoes the request's URL and key headers: ``echo_key``),
adds a fixed latency, and answers deterministically: with ``response_format`` of type
``json_schema`` the content is a valid instance of the schema.

Two ways to run it, with the same methods (``base_url``, ``port``, ``stats``, ``count``,
``answered_ok``, ``total``, ``inject``, ``reset``, ``stop``):

* in-process: ``with FakeOpenAIServer(latency=0.05) as server: ...`` (aiohttp in a background
  thread with its own event loop);
* subprocess: ``start_fake_server_process(latency=0.05)`` or
  ``python -m tests.fakes.openai_server --port 8089 --latency 0.05 [--responder mod:fn]``, which
  prints ``READY http://127.0.0.1:PORT/v1`` once listening. Use it in benchmarks, where the
  server must not share the GIL with the client under test.

Control endpoints (used by the subprocess helper, usable by anyone):

* ``GET /_stats`` -> ``{"total", "by_prompt", "answered_ok", "answered_ok_total", "faults_pending"}``
* ``POST /_faults`` with ``{"kind", "times", "match", "retry_after"}`` queues a fault
* ``POST /_reset`` clears counters and faults
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import inspect
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

Responder = Callable[[dict[str, Any]], str | Awaitable[str]]
"""Makes the assistant message content from the request body (a dict parsed from JSON)."""

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "503",
    "400",
    "401",
    "hang",
    "not_json",
    "ignore_format",
    "echo_key",
)
"""Every fault kind that ``inject`` and ``POST /_faults`` accept."""

HANG_CAP_S = 600.0
"""A "hang" fault gives up after this long even if the client never disconnects."""

DEFAULT_RETRY_AFTER_S = 1.0
"""Retry-After sent with a "429" fault when the fault names none."""

_READY_PREFIX = "READY "
_REPO_ROOT = Path(__file__).resolve().parents[2]
# How deep the schema walker follows nested schemas before it keeps only what is required;
# without a limit a recursive "$ref" (a tree of nodes) would never end.
_MAX_SCHEMA_DEPTH = 12


# --------------------------------------------------------------------------------------------
# Prompt keys and content generation
# --------------------------------------------------------------------------------------------


def prompt_key(messages: Any) -> str:
    """Return the sha256 hex digest of the canonical JSON of a request's ``messages`` list.

    Canonical means ``sort_keys=True`` and ``separators=(",", ":")``, so the same messages give
    the same key in the test and in the server whatever the key order of each message dict.
    """
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def message_text(messages: Any) -> str:
    """Concatenate the text of every message (string contents and text parts of list contents)."""
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            # Multimodal messages carry a list of parts; only the text parts hold prompt text.
            parts.extend(
                str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
            )
    return "".join(parts)


def approx_tokens(text: str) -> int:
    """Approximate a token count as ceil(characters / 4), the usual rule of thumb for English."""
    return math.ceil(len(text) / 4)


class _SchemaInstanceBuilder:
    """Builds one deterministic, valid instance of a JSON schema; ``choice`` picks enums/anyOf."""

    def __init__(self, root: Mapping[str, Any], choice: int) -> None:
        self._root = root
        self._choice = choice

    def build(self, schema: Any, depth: int = 0) -> Any:
        """Return an instance of ``schema`` (a dict schema, or ``True``/``False``)."""
        if schema is True or schema is None:
            return "fake"
        if not isinstance(schema, Mapping):
            raise ValueError(
                f"cannot build an instance of schema {schema!r}: expected a JSON schema object; "
                "pass response_format.json_schema.schema as a dict"
            )
        if "$ref" in schema:
            return self.build(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            options = list(schema["enum"])
            if not options:
                raise ValueError(f"schema {dict(schema)!r} has an empty enum: no value can be valid")
            return options[self._choice % len(options)]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.build(self._pick_alternative(schema[key], depth), depth + 1)
        if "allOf" in schema:
            return self.build(self._merge_all_of(schema), depth + 1)
        return self._build_typed(schema, self._pick_type(schema), depth)

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ValueError(f"cannot resolve $ref {ref!r}: only local references like '#/$defs/Name' are supported")
        node: Any = self._root
        for raw in ref.lstrip("#").split("/"):
            if not raw:
                continue
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(
                    f"cannot resolve $ref {ref!r}: no {part!r} under the schema root; define it under '$defs'"
                )
            node = node[part]
        return node

    def _pick_alternative(self, alternatives: list[Any], depth: int) -> Any:
        if not alternatives:
            raise ValueError("anyOf/oneOf with no alternatives: no value can be valid")
        if depth >= _MAX_SCHEMA_DEPTH:
            # Deep in a recursive schema, prefer an alternative that does not recurse again.
            for alternative in alternatives:
                if isinstance(alternative, Mapping) and "$ref" not in alternative:
                    return alternative
        return alternatives[self._choice % len(alternatives)]

    def _merge_all_of(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            resolved = self._resolve(part["$ref"]) if isinstance(part, Mapping) and "$ref" in part else part
            if not isinstance(resolved, Mapping):
                continue
            for key, value in resolved.items():
                if key == "properties":
                    merged.setdefault("properties", {}).update(value)
                elif key == "required":
                    merged["required"] = sorted(set(merged.get("required", [])) | set(value))
                else:
                    merged.setdefault(key, value)
        return merged

    @staticmethod
    def _pick_type(schema: Mapping[str, Any]) -> str | None:
        declared = schema.get("type")
        if isinstance(declared, list):
            # ["string", "null"]: the non-null type gives the more useful instance.
            non_null = [t for t in declared if t != "null"]
            return non_null[0] if non_null else "null"
        if isinstance(declared, str):
            return declared
        if "properties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return None

    def _build_typed(self, schema: Mapping[str, Any], kind: str | None, depth: int) -> Any:
        if kind == "object":
            return self._build_object(schema, depth)
        if kind == "array":
            return self._build_array(schema, depth)
        if kind == "integer":
            return self._build_number(schema, integer=True)
        if kind == "number":
            return self._build_number(schema, integer=False)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._build_string(schema)

    def _build_object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        # Past the depth limit only required properties are filled, which ends recursive schemas.
        names = [n for n in properties if depth < _MAX_SCHEMA_DEPTH or n in required]
        return {name: self.build(properties[name], depth + 1) for name in names}

    def _build_array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        min_items = int(schema.get("minItems", 0))
        max_items = schema.get("maxItems")
        wanted = max(min_items, 1 if depth < _MAX_SCHEMA_DEPTH else 0)
        if max_items is not None:
            wanted = min(wanted, int(max_items))
        prefix = list(schema.get("prefixItems", []))
        items_schema = schema.get("items", True)
        return [self.build(prefix[i] if i < len(prefix) else items_schema, depth + 1) for i in range(wanted)]

    @staticmethod
    def _build_number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
        minimum = schema.get("minimum")
        maximum = schema.get("maximum")
        exclusive_min = schema.get("exclusiveMinimum")
        exclusive_max = schema.get("exclusiveMaximum")
        value: float = 0
        if minimum is not None:
            value = minimum
        elif exclusive_min is not None:
            value = math.floor(exclusive_min) + 1 if integer else exclusive_min + 1
            if not integer and exclusive_max is not None and value >= exclusive_max:
                value = (exclusive_min + exclusive_max) / 2
        elif maximum is not None and maximum < 0:
            value = maximum
        elif exclusive_max is not None and exclusive_max <= 0:
            value = math.ceil(exclusive_max) - 1 if integer else exclusive_max - 1
        if integer:
            return int(math.ceil(value))
        return value

    @staticmethod
    def _build_string(schema: Mapping[str, Any]) -> str:
        formats = {
            "date": "2024-01-01",
            "date-time": "2024-01-01T00:00:00Z",
            "time": "00:00:00Z",
            "email": "fake@example.com",
            "uri": "https://example.com/fake",
            "uuid": "00000000-0000-4000-8000-000000000000",
        }
        text = formats.get(str(schema.get("format")), "fake")
        min_length = int(schema.get("minLength", 0))
        if len(text) < min_length:
            text = text + "x" * (min_length - len(text))
        max_length = schema.get("maxLength")
        if max_length is not None:
            text = text[: int(max_length)]
        return text


def schema_instance(schema: Mapping[str, Any], choice: int = 0) -> Any:
    """Return a deterministic instance of a JSON ``schema``; ``choice`` selects enum/anyOf options.

    Objects get all their properties, ``enum`` gives ``enum[choice % len]``, ``anyOf``/``oneOf``
    take alternative ``choice % len``, strings are ``"fake"``, numbers 0 or the minimum, booleans
    true, arrays one item (within minItems/maxItems); ``$ref`` to ``#/$defs/X`` is followed.
    Not handled: ``pattern``, ``multipleOf``, ``uniqueItems`` with several items, ``not``.
    """
    return _SchemaInstanceBuilder(schema, choice).build(schema)


def default_responder(request: dict[str, Any]) -> str:
    """Make the deterministic content the fake answers with when no responder is given.

    ``json_schema`` response formats get a valid instance of the schema (choices picked by the
    prompt key), ``json_object`` gets ``{"answer": "fake"}``, and anything else gets
    ``"fake answer <first 8 hex of prompt_key>"``.
    """
    key = prompt_key(request.get("messages"))
    response_format = request.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise ValueError(
                    f"response_format.json_schema.schema must be a JSON schema object, got {schema!r}; "
                    'send {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}'
                )
            return json.dumps(schema_instance(schema, int(key, 16)))
        if response_format.get("type") == "json_object":
            return json.dumps({"answer": "fake"})
    return f"fake answer {key[:8]}"


def echo_responder(request: dict[str, Any]) -> str:
    """A ready-made responder that answers with the text of the last user message.

    Handy where a test needs to see what was sent, in-process (``responder=echo_responder``) or
    as a subprocess (``--responder tests.fakes.openai_server:echo_responder``).
    """
    messages = request.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return message_text(users[-1:])


def load_responder(spec: str) -> Responder:
    """Import a responder named ``package.module:function`` (the CLI's ``--responder``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--responder {spec!r} is not of the form 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"--responder {spec!r}: cannot import module {module_name!r} ({exc}); "
            "run from the repository root or put the module on PYTHONPATH"
        ) from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"--responder {spec!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"--responder {spec!r} names {target!r}, which is not callable")
    responder: Responder = target
    return responder


# --------------------------------------------------------------------------------------------
# Faults and counters
# --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One queued fault: the next ``times`` requests whose text contains ``match`` get ``kind``."""

    kind: str
    times: int = 1
    match: str | None = None
    retry_after: float | None = None

    def applies_to(self, text: str) -> bool:
        """Whether a request whose concatenated message text is ``text`` is hit by this fault."""
        return self.match is None or self.match in text


def make_fault(kind: Any, times: Any = 1, match: Any = None, retry_after: Any = None) -> Fault:
    """Validate fault parameters (from Python or from JSON) and return the Fault."""
    kind = str(kind) if isinstance(kind, int) else kind
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault kind {kind!r} is unknown; expected one of {', '.join(FAULT_KINDS)}")
    times = 1 if times is None else times
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"fault times={times!r} is invalid; expected an integer >= 1")
    if match is not None and not isinstance(match, str):
        raise ValueError(f"fault match={match!r} is invalid; expected a substring (str) or None")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after < 0
    ):
        raise ValueError(f"fault retry_after={retry_after!r} is invalid; expected seconds >= 0 or None")
    return Fault(kind=kind, times=times, match=match, retry_after=retry_after)


@dataclass
class _State:
    """Counters and the fault queue; shared by the event-loop thread and the test thread."""

    total: int = 0
    by_prompt: dict[str, int] = field(default_factory=dict)
    answered_ok: dict[str, int] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arrive(self, key: str | None, text: str) -> Fault | None:
        """Count a request and take the first queued fault that matches it (FIFO)."""
        with self.lock:
            self.total += 1
            if key is not None:
                self.by_prompt[key] = self.by_prompt.get(key, 0) + 1
            for index, fault in enumerate(self.faults):
                if fault.applies_to(text):
                    fault.times -= 1
                    if fault.times <= 0:
                        del self.faults[index]
                    return fault
            return None

    def answered(self, key: str) -> None:
        with self.lock:
            self.answered_ok[key] = self.answered_ok.get(key, 0) + 1

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def reset(self) -> None:
        with self.lock:
            self.total = 0
            self.by_prompt.clear()
            self.answered_ok.clear()
            self.faults.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "total": self.total,
                "by_prompt": dict(self.by_prompt),
                "answered_ok": dict(self.answered_ok),
                "answered_ok_total": sum(self.answered_ok.values()),
                # Requests still to be faulted, summed over queued faults.
                "faults_pending": sum(f.times for f in self.faults),
            }


# --------------------------------------------------------------------------------------------
# The aiohttp application
# --------------------------------------------------------------------------------------------


def _error_response(
    status: int, message: str, err_type: str, code: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


class _FakeApp:
    """Request handlers bound to one state, latency and responder."""

    def __init__(self, state: _State, latency: float, responder: Responder | None) -> None:
        self.state = state
        self.latency = latency
        self.responder: Responder = responder or default_responder
        self.shutting_down = asyncio.Event()
        self._ids = 0

    def build(self) -> web.Application:
        # Large prompts are normal in experiments; aiohttp's 1 MiB default would reject them.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)
        # An api_base with a query string (".../v1?key=..."): the OpenAI SDK appends its path after the query,
        # so the request arrives at /v1 with the path inside the query. Answer it like a chat request.
        app.router.add_post("/v1", self.chat)
        app.router.add_post("/v1/", self.chat)
        app.router.add_get("/_stats", self.stats)
        app.router.add_post("/_faults", self.faults)
        app.router.add_post("/_reset", self.reset)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot())

    async def faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError(f"fault body {body!r} must be a JSON object")
            fault = make_fault(body.get("kind"), body.get("times", 1), body.get("match"), body.get("retry_after"))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            return _error_response(400, str(exc), "invalid_request_error", "bad_fault")
        self.state.add_fault(fault)
        return web.json_response({"ok": True, "faults_pending": self.state.snapshot()["faults_pending"]})

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"ok": True})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        messages = body.get("messages") if isinstance(body, dict) else None
        key = prompt_key(messages) if isinstance(messages, list) else None
        text = message_text(messages)
        # Faults are taken on arrival, so FIFO order follows arrival order, not finishing order.
        fault = self.state.arrive(key, text)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if not isinstance(body, dict) or key is None:
            return _error_response(
                400,
                "request body must be a JSON object with a 'messages' list",
                "invalid_request_error",
                None,
            )
        if body.get("stream"):
            return _error_response(
                400,
                "stream=true is not supported by the fake OpenAI server; send stream=false",
                "invalid_request_error",
                "stream_unsupported",
            )
        if fault is not None and fault.kind != "ignore_format":
            return await self._fault_response(request, fault)
        try:
            if fault is not None:
                content = "Sure! Here is my answer in plain prose, not JSON, whatever format you asked for."
            else:
                produced = self.responder(body)
                content = await produced if inspect.isawaitable(produced) else produced
        except Exception as exc:  # a broken responder must show in the test, not kill the server
            return _error_response(
                500, f"fake server responder failed: {type(exc).__name__}: {exc}", "server_error", None
            )
        if not isinstance(content, str):
            return _error_response(
                500,
                f"fake server responder returned {type(content).__name__}, expected str content",
                "server_error",
                None,
            )
        if fault is None:
            self.state.answered(key)
        return web.json_response(self._completion(body, text, content))

    def _completion(self, body: dict[str, Any], prompt_text: str, content: str) -> dict[str, Any]:
        self._ids += 1
        prompt_tokens = approx_tokens(prompt_text)
        completion_tokens = approx_tokens(content)
        return {
            "id": f"chatcmpl-fake{self._ids:012d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }

    async def _fault_response(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "429":
            retry_after = DEFAULT_RETRY_AFTER_S if fault.retry_after is None else fault.retry_after
            headers = {
                "Retry-After": _format_seconds(retry_after),
                "retry-after-ms": str(int(retry_after * 1000)),
            }
            return _error_response(
                429,
                f"Rate limit reached (fake). Please try again in {_format_seconds(retry_after)}s.",
                "requests",
                "rate_limit_exceeded",
                headers,
            )
        if fault.kind == "500":
            return _error_response(500, "The server had an error (fake).", "server_error", None)
        if fault.kind == "503":
            return _error_response(
                503, "The engine is currently overloaded (fake).", "server_error", "service_unavailable"
            )
        if fault.kind == "400":
            return _error_response(400, "Invalid request (fake).", "invalid_request_error", None)
        if fault.kind == "401":
            return _error_response(
                401, "Incorrect API key provided (fake).", "invalid_request_error", "invalid_api_key"
            )
        if fault.kind == "echo_key":
            # Some providers quote the request back in a 5xx body: the Authorization header, the URL and its
            # query string (an api_base with ?key=...). A transient error, so it is retried and traced.
            echoed = (
                f"upstream failed for {request.method} {request.url} "
                f"(Authorization: {request.headers.get('Authorization', '')}; "
                f"x-api-key: {request.headers.get('x-api-key', '')}; api-key: {request.headers.get('api-key', '')})"
            )
            return _error_response(502, f"Bad gateway (fake): {echoed}", "server_error", None)
        if fault.kind == "not_json":
            return web.Response(status=200, text="<html>oops</html>", content_type="text/html")
        # "hang": the runner cancels this handler when the client disconnects; the polling below
        # is a second guard for transports that report closing without a cancel.
        deadline = time.monotonic() + HANG_CAP_S
        while time.monotonic() < deadline and not self.shutting_down.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return _error_response(504, "hang fault ended without the client leaving", "server_error", None)


async def _start_site(fake: _FakeApp, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; return the runner and the bound port (port 0 picks a free one)."""
    # handler_cancellation: a client that gives up (timeout) cancels its handler, ending hangs.
    # shutdown_timeout: stop() must not wait the default 60 s for hung handlers.
    runner = web.AppRunner(fake.build(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        await runner.cleanup()
        raise OSError(f"fake OpenAI server cannot bind {host}:{port} ({exc}); pass port=0 for a free one") from exc
    site = web.SockSite(runner, sock, backlog=1024, shutdown_timeout=0.5)
    await site.start()
    return runner, int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# In-process server
# --------------------------------------------------------------------------------------------


class FakeOpenAIServer:
    """The fake server in a background thread of this process, as a context manager.

    ``latency`` seconds are slept before every chat answer; ``responder`` (request dict -> content
    str, may be async) replaces the default content; ``port=0`` picks a free port.
    """

    def __init__(self, latency: float = 0.0, responder: Responder | None = None, port: int = 0) -> None:
        if latency < 0:
            raise ValueError(f"latency={latency!r} is negative; expected seconds >= 0")
        self.latency = latency
        self._state = _State()
        self._responder = responder
        self._requested_port = port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._fake: _FakeApp | None = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on (after ``start``)."""
        if self._port is None:
            raise RuntimeError("FakeOpenAIServer is not started; use it as a context manager or call start()")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the ``api_base`` to hand to litellm or the openai SDK."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        """Start the event-loop thread and return once the server is listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._fake = _FakeApp(self._state, self.latency, self._responder)
                self._runner, self._port = loop.run_until_complete(
                    _start_site(self._fake, "127.0.0.1", self._requested_port)
                )
            except BaseException as exc:  # reported to the starting thread below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="fake-openai-server", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure:
            self._thread = None
            raise failure[0]
        if self._port is None:
            raise RuntimeError("fake OpenAI server did not start listening within 30 s")
        return self

    def stop(self) -> None:
        """Stop serving (hung requests are dropped) and join the thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._fake is not None:
                self._fake.shutting_down.set()
            if self._runner is not None:
                await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """The same JSON as ``GET /_stats``."""
        return self._state.snapshot()

    def count(self, messages: list[dict[str, Any]]) -> int:
        """How many chat requests arrived with exactly these messages (faulted ones included)."""
        return int(self.stats()["by_prompt"].get(prompt_key(messages), 0))

    def answered_ok(self, messages: list[dict[str, Any]]) -> int:
        """How many requests with these messages got a normal 200 completion (no fault)."""
        return int(self.stats()["answered_ok"].get(prompt_key(messages), 0))

    def total(self) -> int:
        """How many chat requests arrived in all."""
        return int(self.stats()["total"])

    def inject(self, kind: str, times: int = 1, match: str | None = None, retry_after: float | None = None) -> None:
        """Queue a fault for the next ``times`` requests whose message text contains ``match``."""
        self._state.add_fault(make_fault(kind, times, match, retry_after))

    def reset(self) -> None:
        """Clear counters and queued faults."""
        self._state.reset()


# --------------------------------------------------------------------------------------------
# Subprocess server
# --------------------------------------------------------------------------------------------


class FakeServerProcess:
    """A fake server running in a child process, driven over its control endpoints."""

    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        """``http://127.0.0.1:PORT/v1``, the ``api_base`` to hand to litellm."""
        self.port = int(base_url.rsplit(":", 1)[1].split("/", 1)[0])
        self._root = base_url.removesuffix("/v1")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self._root + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise ValueError(f"fake server rejected {method} {path} {body!r}: {detail}") from exc

    def stats(self) -> dict[str, Any]:
        """The JSON of ``GET /_stats``."""
        return self._call("GET", "/_stats")

    def count(self, messages: list[dict[str, Any]]) -> int:
        """How many chat requests arrived with exactly these messages (faulted ones included)."""
        return int(self.stats()["by_prompt"].get(prompt_key(messages), 0))

    def answered_ok(self, messages: list[dict[str, Any]]) -> int:
        """How many requests with these messages got a normal 200 completion (no fault)."""
        return int(self.stats()["answered_ok"].get(prompt_key(messages), 0))

    def total(self) -> int:
        """How many chat requests arrived in all."""
        return int(self.stats()["total"])

    def inject(self, kind: str, times: int = 1, match: str | None = None, retry_after: float | None = None) -> None:
        """Queue a fault for the next ``times`` requests whose message text contains ``match``."""
        fault = make_fault(kind, times, match, retry_after)
        self._call(
            "POST",
            "/_faults",
            {
                "kind": fault.kind,
                "times": fault.times,
                "match": fault.match,
                "retry_after": fault.retry_after,
            },
        )

    def reset(self) -> None:
        """Clear counters and queued faults."""
        self._call("POST", "/_reset", {})

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_fake_server_process(
    port: int = 0, latency: float = 0.0, responder: str | None = None, startup_timeout: float = 30.0
) -> FakeServerProcess:
    """Start ``python -m tests.fakes.openai_server`` in a child process and wait for READY.

    ``responder`` is an import path ``package.module:function`` (a callable cannot cross the
    process boundary). ``port=0`` lets the child bind a free port and report it, so there is no
    race between choosing and binding.
    """
    command = [
        sys.executable,
        "-m",
        "tests.fakes.openai_server",
        "--port",
        str(port),
        "--latency",
        str(latency),
    ]
    if responder is not None:
        command += ["--responder", responder]
    env = dict(os.environ)
    # The child imports this file as tests.fakes.openai_server, so the repository root must be importable.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        command, cwd=_REPO_ROOT, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []
    found: list[str] = []

    def read_ready() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(_READY_PREFIX):
                found.append(line[len(_READY_PREFIX) :].strip())
                return

    reader = threading.Thread(target=read_ready, daemon=True)
    reader.start()
    reader.join(timeout=startup_timeout)
    if not found:
        process.kill()
        process.wait(timeout=5)
        raise RuntimeError(
            f"fake server process {' '.join(command)!r} printed no READY line within {startup_timeout} s "
            f"(exit code {process.returncode}, stdout {lines!r}); its stderr above says why"
        )
    return FakeServerProcess(process, found[0])


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


async def _serve_forever(host: str, port: int, latency: float, responder: Responder | None) -> None:
    fake = _FakeApp(_State(), latency, responder)
    runner, bound = await _start_site(fake, host, port)
    print(f"{_READY_PREFIX}http://{host}:{bound}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        fake.shutting_down.set()
        await runner.cleanup()


def _iter_cli_errors(args: argparse.Namespace) -> Iterator[str]:
    if args.latency < 0:
        yield f"--latency {args.latency} is negative; expected seconds >= 0"
    if not 0 <= args.port <= 65535:
        yield f"--port {args.port} is out of range; expected 0 (pick a free port) to 65535"


def main(argv: list[str] | None = None) -> None:
    """Run the fake server until SIGTERM/SIGINT; prints ``READY <base_url>`` once listening."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default 0)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept before each answer")
    parser.add_argument("--responder", default=None, help="content generator as package.module:function")
    args = parser.parse_args(argv)
    for error in _iter_cli_errors(args):
        parser.error(error)
    responder = load_responder(args.responder) if args.responder else None
    try:
        import uvloop  # optional: roughly doubles the requests per second one core can serve
    except ImportError:
        asyncio.run(_serve_forever(args.host, args.port, args.latency, responder))
    else:
        uvloop.run(_serve_forever(args.host, args.port, args.latency, responder))


if __name__ == "__main__":
    main()
