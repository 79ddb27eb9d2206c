"""ReplayClient: the fake LLM client. Everything of LLMClient (store, budget, retries, traces) but the wire.

Its answers are deterministic: a schema-valid instance of the request's JSON schema (first enum value,
minimum numbers), or an echo of the last message. Dagster `materialize()` tests select it with the
AssayResource setting `calls: "replay"`; tests of the real transport use the fake HTTP server instead.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from pipeline.calls import CallSpec
from pipeline.config import ModelConfig
from pipeline.llm.client import LLMClient


class ReplayClient(LLMClient):
    """LLMClient whose `_send` answers locally (see module docstring)."""

    in_process_only = True
    """A worker process rebuilds a live client; replayed calls stay in the caller's process."""

    async def _send(self, spec: CallSpec, config: ModelConfig, key: str) -> Any:
        schema = ((spec.response_format or {}).get("json_schema") or {}).get("schema")
        text = json.dumps(instance_of(schema)) if schema else f"echo: {spec.messages[-1]['content'][:200]}"
        prompt = sum(len(message["content"]) for message in spec.messages) // 4 + 1
        completion = len(text) // 4 + 1
        message = SimpleNamespace(content=text)
        usage = SimpleNamespace(prompt_tokens=prompt, completion_tokens=completion)
        body = {"choices": [{"message": {"content": text}}], "usage": vars(usage), "model": config.model}
        return SimpleNamespace(choices=[SimpleNamespace(message=message)], usage=usage, model_dump=lambda **_: body)


def instance_of(schema: dict[str, Any]) -> Any:
    """A small valid instance of a JSON schema (objects, arrays, enums, consts, strings, numbers)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return instance_of(schema["anyOf"][0])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: instance_of(properties.get(name, {})) for name in schema.get("required", list(properties))}
    if kind == "array":
        if "prefixItems" in schema:
            return [instance_of(item) for item in schema["prefixItems"]]
        return [instance_of(schema.get("items") or {})] * int(schema.get("minItems", 0))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return "x" * int(schema.get("minLength", 1))
