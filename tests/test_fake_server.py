"""Tests of the fake OpenAI server (tests/fakes/openai_server.py), in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.fakes.openai_server import (
    FAULT_KINDS,
    FakeOpenAIServer,
    FakeServerProcess,
    default_responder,
    prompt_key,
    schema_instance,
    start_fake_server_process,
)

FakeServer = FakeOpenAIServer | FakeServerProcess
REPO_ROOT = Path(__file__).resolve().parents[1]
# One pooled client: a fresh httpx client per request costs ~40 ms of TLS-context setup.
HTTP = httpx.Client(timeout=5.0)


@pytest.fixture(scope="module")
def inproc_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def proc_server() -> Iterator[FakeServerProcess]:
    with start_fake_server_process() as server:
        yield server


@pytest.fixture(params=["inproc", "proc"])
def server(request: pytest.FixtureRequest) -> FakeServer:
    """Each test that takes ``server`` runs against both modes, starting from zero counts."""
    fake: FakeServer = request.getfixturevalue(f"{request.param}_server")
    fake.reset()
    return fake


def msgs(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def chat(server: FakeServer, text: str, timeout: float = 5.0, **extra: Any) -> httpx.Response:
    body = {"model": "fake-model", "messages": msgs(text), **extra}
    return HTTP.post(f"{server.base_url}/chat/completions", json=body, timeout=timeout)


# ------------------------------------------------------------------------------------------ basics


def test_normal_completion_has_openai_shape(server: FakeServer) -> None:
    response = chat(server, "hello there")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "fake-model"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == f"fake answer {prompt_key(msgs('hello there'))[:8]}"
    usage = body["usage"]
    # "You are terse." + "hello there" = 25 chars -> 7 tokens; "fake answer xxxxxxxx" = 20 -> 5.
    assert usage == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def test_path_without_v1_also_answers(server: FakeServer) -> None:
    root = server.base_url.removesuffix("/v1")
    body = {"model": "m", "messages": msgs("x")}
    assert HTTP.post(f"{root}/chat/completions", json=body).status_code == 200


def test_counts_per_prompt_and_total(server: FakeServer) -> None:
    for _ in range(3):
        chat(server, "a")
    chat(server, "b")
    assert server.count(msgs("a")) == 3
    assert server.count(msgs("b")) == 1
    assert server.count(msgs("never sent")) == 0
    assert server.total() == 4
    stats = server.stats()
    assert stats["by_prompt"] == {prompt_key(msgs("a")): 3, prompt_key(msgs("b")): 1}
    assert stats["faults_pending"] == 0


def test_faulted_requests_count_but_are_not_answered_ok(server: FakeServer) -> None:
    server.inject("500")
    assert chat(server, "q").status_code == 500
    assert chat(server, "q").status_code == 200
    assert server.count(msgs("q")) == 2
    assert server.answered_ok(msgs("q")) == 1
    assert server.stats()["answered_ok_total"] == 1


def test_reset_clears_counts_and_faults(server: FakeServer) -> None:
    chat(server, "a")
    server.inject("500", times=3)
    assert server.stats()["faults_pending"] == 3
    server.reset()
    assert server.stats() == {
        "total": 0,
        "by_prompt": {},
        "answered_ok": {},
        "answered_ok_total": 0,
        "faults_pending": 0,
    }
    assert chat(server, "a").status_code == 200


def test_prompt_key_ignores_dict_key_order() -> None:
    a = [{"role": "user", "content": "hi"}]
    b = [{"content": "hi", "role": "user"}]
    assert prompt_key(a) == prompt_key(b)
    assert prompt_key(a) != prompt_key([{"role": "user", "content": "hi!"}])
    assert re.fullmatch(r"[0-9a-f]{64}", prompt_key(a))


def test_stream_is_refused(server: FakeServer) -> None:
    response = chat(server, "s", stream=True)
    assert response.status_code == 400
    assert "stream" in response.json()["error"]["message"]


def test_body_without_messages_is_a_400(server: FakeServer) -> None:
    response = HTTP.post(f"{server.base_url}/chat/completions", content=b"not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        ("429", 429, "requests"),
        ("500", 500, "server_error"),
        ("503", 503, "server_error"),
        ("400", 400, "invalid_request_error"),
        ("401", 401, "invalid_request_error"),
    ],
)
def test_error_faults(server: FakeServer, kind: str, status: int, error_type: str) -> None:
    server.inject(kind)
    response = chat(server, "f")
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    # The fault is used up: the next request is answered normally.
    assert chat(server, "f").status_code == 200


def test_429_sends_retry_after(server: FakeServer) -> None:
    server.inject("429")
    server.inject("429", retry_after=0.25)
    assert chat(server, "r").headers["Retry-After"] == "1"
    second = chat(server, "r")
    assert second.headers["Retry-After"] == "0.25"
    assert second.headers["retry-after-ms"] == "250"


def test_not_json_fault(server: FakeServer) -> None:
    server.inject("not_json")
    response = chat(server, "n")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<html>oops</html>"


def test_echo_key_fault_quotes_the_url_and_the_key_headers(server: FakeServer) -> None:
    server.inject("echo_key")
    body = {"model": "fake-model", "messages": msgs("e")}
    response = HTTP.post(
        f"{server.base_url}?key=query-secret", json=body, headers={"Authorization": "Bearer header-secret"}, timeout=5
    )
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "key=query-secret" in message and "Bearer header-secret" in message


def test_ignore_format_fault_answers_prose(server: FakeServer) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "X", "schema": schema}}
    server.inject("ignore_format")
    body = chat(server, "i", response_format=fmt).json()
    content = body["choices"][0]["message"]["content"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    assert json.loads(chat(server, "i", response_format=fmt).json()["choices"][0]["message"]["content"]) == {"x": 0}


def test_hang_fault_holds_until_client_gives_up(server: FakeServer) -> None:
    server.inject("hang")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        chat(server, "h", timeout=0.3)
    assert time.monotonic() - started < 2
    assert chat(server, "h").status_code == 200
    assert server.count(msgs("h")) == 2


def test_times_and_fifo_order(server: FakeServer) -> None:
    server.inject("500", times=2)
    server.inject("401")
    assert server.stats()["faults_pending"] == 3
    assert [chat(server, "t").status_code for _ in range(4)] == [500, 500, 401, 200]


def test_match_applies_only_to_matching_prompts(server: FakeServer) -> None:
    server.inject("503", times=2, match="needle")
    assert chat(server, "hay").status_code == 200
    assert chat(server, "a needle here").status_code == 503
    assert chat(server, "more hay").status_code == 200
    assert chat(server, "needle again").status_code == 503
    assert chat(server, "needle third").status_code == 200


def test_inject_rejects_unknown_kind(server: FakeServer) -> None:
    with pytest.raises(ValueError, match="'418' is unknown"):
        server.inject("418")
    with pytest.raises(ValueError, match="times=0"):
        server.inject("500", times=0)


def test_every_fault_kind_is_covered() -> None:
    tested = {"429", "500", "503", "400", "401", "hang", "not_json", "ignore_format", "echo_key"}
    assert set(FAULT_KINDS) == tested


# ------------------------------------------------------------------------------ responder, schemas


ENUM_SCHEMA = {"type": "string", "enum": ["red", "green", "blue"]}


def test_schema_enum_is_chosen_by_hash() -> None:
    assert [schema_instance(ENUM_SCHEMA, choice) for choice in range(4)] == ["red", "green", "blue", "red"]


def test_schema_any_of_nested_objects_and_refs_are_valid() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "$defs": {
            "Address": {
                "type": "object",
                "properties": {"city": {"type": "string", "minLength": 6}, "zip": {"type": "integer"}},
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
            "Color": {"enum": ["red", "green"]},
        },
        "properties": {
            "name": {"type": "string", "maxLength": 2},
            "age": {"type": "integer", "minimum": 18},
            "score": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 1},
            "ok": {"type": "boolean"},
            "const": {"const": "v1"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
            "none": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
            "home": {"$ref": "#/$defs/Address"},
            "color": {"$ref": "#/$defs/Color"},
            "maybe": {"anyOf": [{"type": "integer", "minimum": 3}, {"type": "null"}]},
            "shape": {
                "oneOf": [
                    {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}}},
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "square"}, "side": {"type": "number"}},
                    },
                ]
            },
            "nested": {"type": "object", "properties": {"inner": {"type": "object", "properties": {}}}},
        },
        "required": ["name", "home"],
    }
    for choice in range(4):
        instance = schema_instance(schema, choice)
        jsonschema.validate(instance, schema)
        assert set(instance) == set(schema["properties"])
    first, second = schema_instance(schema, 0), schema_instance(schema, 1)
    assert first["maybe"] == 3 and second["maybe"] is None
    assert first["shape"]["kind"] == "circle" and second["shape"]["kind"] == "square"
    assert first["color"] == "red" and second["color"] == "green"
    assert first["home"] == {"city": "fakexx", "zip": 0}
    assert first["tags"] == ["fake", "fake"] and first["none"] == []
    assert first["nested"] == {"inner": {}}


def test_recursive_schema_terminates() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
            }
        },
    }
    jsonschema.validate(schema_instance(schema), schema)


def test_json_schema_response_format_over_http(server: FakeServer) -> None:
    schema = {
        "type": "object",
        "properties": {"label": ENUM_SCHEMA, "reason": {"type": "string"}},
        "required": ["label", "reason"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "Verdict", "schema": schema, "strict": True}}
    contents = [chat(server, "judge", response_format=fmt).json()["choices"][0]["message"]["content"] for _ in "ab"]
    assert contents[0] == contents[1]  # deterministic for the same request
    instance = json.loads(contents[0])
    jsonschema.validate(instance, schema)
    assert instance["label"] == ENUM_SCHEMA["enum"][int(prompt_key(msgs("judge")), 16) % 3]


def test_json_object_response_format(server: FakeServer) -> None:
    content = chat(server, "j", response_format={"type": "json_object"}).json()["choices"][0]["message"]
    assert json.loads(content["content"]) == {"answer": "fake"}


def test_default_responder_is_plain_text_without_format() -> None:
    request = {"model": "m", "messages": msgs("p")}
    assert default_responder(request) == f"fake answer {prompt_key(msgs('p'))[:8]}"


def test_custom_responder_in_process() -> None:
    def shout(request: dict[str, Any]) -> str:
        return str(request["messages"][-1]["content"]).upper()

    with FakeOpenAIServer(responder=shout) as server:
        assert chat(server, "quiet").json()["choices"][0]["message"]["content"] == "QUIET"


def test_failing_responder_is_a_500_naming_the_error() -> None:
    def broken(request: dict[str, Any]) -> str:
        raise RuntimeError("boom")

    with FakeOpenAIServer(responder=broken) as server:
        response = chat(server, "x")
    assert response.status_code == 500
    assert "RuntimeError: boom" in response.json()["error"]["message"]


def test_latency_is_slept_before_answering() -> None:
    with FakeOpenAIServer(latency=0.2) as server:
        started = time.monotonic()
        assert chat(server, "slow").status_code == 200
        assert time.monotonic() - started >= 0.2


# ------------------------------------------------------------------------------------------ process


def test_cli_prints_ready_line_and_serves_control_endpoints() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--latency", "0"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"READY (http://127\.0\.0\.1:(\d+)/v1)", line)
        assert match, line
        root = match.group(1).removesuffix("/v1")
        assert httpx.get(f"{root}/_stats").json()["total"] == 0
        added = httpx.post(f"{root}/_faults", json={"kind": "500", "times": 2, "match": "zz"})
        assert added.status_code == 200
        assert httpx.get(f"{root}/_stats").json()["faults_pending"] == 2
        bad = httpx.post(f"{root}/_faults", json={"kind": "teapot"})
        assert bad.status_code == 400 and "teapot" in bad.json()["error"]["message"]
        assert httpx.post(f"{root}/_reset").status_code == 200
        assert httpx.get(f"{root}/_stats").json()["faults_pending"] == 0
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_process_helper_with_responder_path() -> None:
    with start_fake_server_process(responder="tests.fakes.openai_server:echo_responder") as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", server.base_url)
        assert chat(server, "echo me").json()["choices"][0]["message"]["content"] == "echo me"
        assert server.count(msgs("echo me")) == 1
    assert server.process.returncode == 0


# ------------------------------------------------------------------------------------------ litellm


def test_litellm_acompletion_gets_the_content(inproc_server: FakeOpenAIServer) -> None:
    import litellm  # imported here: it is slow to import and only this test needs it

    inproc_server.reset()
    messages = [{"role": "user", "content": "through litellm"}]
    response = asyncio.run(
        litellm.acompletion(
            model="openai/fake-model",
            api_base=inproc_server.base_url,
            api_key="sk-fake",
            messages=messages,
            num_retries=0,
        )
    )
    assert response.choices[0].message.content == f"fake answer {prompt_key(messages)[:8]}"
    assert response.usage.prompt_tokens == 4
    assert inproc_server.count(messages) == 1


def test_litellm_sees_a_429_once_with_retries_off(inproc_server: FakeOpenAIServer) -> None:
    import litellm
    from litellm.exceptions import RateLimitError

    inproc_server.reset()
    inproc_server.inject("429", retry_after=0)
    messages = [{"role": "user", "content": "limited"}]
    with pytest.raises(RateLimitError):
        asyncio.run(
            litellm.acompletion(
                model="openai/fake-model",
                api_base=inproc_server.base_url,
                api_key="sk-fake",
                messages=messages,
                num_retries=0,
            )
        )
    # No hidden retries inside litellm or the openai SDK: exactly one request reached the server.
    assert inproc_server.count(messages) == 1
