"""CallSpec: everything needed to make one LLM call, and `call_id`, its content hash.

The call_id covers exactly what can change a model's output: the resolved model id and version pin, the
api_base, the messages and the sampling parameters, and the repeat index (so repeats are distinct calls).
It leaves out timeouts, retries, concurrency and keys: changing those must hit the same stored answer.
The id is the key of the ResponseStore, so it is the cache, the archive index and the resume mechanism.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.llm.errors import ConfigError

CALL_ID_VERSION = 1
"""Bump when the hashed fields change meaning, so old records are not mistaken for new calls."""

# The fields hashed into call_id, in the order explain_miss reports them.
OUTPUT_FIELDS: tuple[str, ...] = (
    "model",
    "version",
    "api_base",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "response_format",
    "seed",
    "repeat",
)


@dataclass(frozen=True)
class CallSpec:
    """One LLM call, fully resolved (model alias already mapped to a litellm id).

    Attributes:
        alias: the model-zoo alias (informational: the resolved `model` is what is hashed).
        model: litellm model id, e.g. 'openai/gpt-4o-mini-2024-07-18'.
        version: version pin of the alias.
        api_base: endpoint of an OpenAI-compatible server, or None for the provider's default.
        messages: chat messages, each {'role': ..., 'content': ...}.
        temperature, top_p, max_tokens, seed: sampling parameters (None = provider default).
        response_format: an OpenAI-style response_format (json_schema or json_object), or None.
        repeat: repeat index, 0-based; the same prompt asked again is a different call.
        item_id: the dataset item this call is about (groups calls for explain_miss; not hashed).
        purpose: 'primary' or 'repair' (not hashed: the messages already differ).
    """

    alias: str
    model: str
    messages: tuple[dict[str, str], ...]
    version: str | None = None
    api_base: str | None = None
    temperature: float | None = 0.0
    top_p: float | None = None
    max_tokens: int | None = 512
    response_format: dict[str, Any] | None = None
    seed: int | None = 0
    repeat: int = 0
    item_id: str = ""
    purpose: str = "primary"
    _call_id: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.messages:
            raise ConfigError(
                f"call for item {self.item_id!r} has an empty message list; expected at least one "
                "{'role': 'user', 'content': ...} message (check the prompt template)"
            )
        for index, message in enumerate(self.messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ConfigError(
                    f"call for item {self.item_id!r}: message {index} is {message!r}; "
                    "expected a mapping with 'role' and 'content'"
                )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, found {self.max_tokens}")
        if self.repeat < 0:
            raise ConfigError(f"repeat must be >= 0, found {self.repeat}")
        # Frozen dataclass: cache the hash once, it is used on every store lookup.
        object.__setattr__(self, "_call_id", _hash_fields(self.output_fields()))

    @property
    def call_id(self) -> str:
        """Hex sha256 (first 32 chars) of the output-changing fields."""
        return self._call_id

    def output_fields(self) -> dict[str, Any]:
        """The fields hashed into call_id, as plain JSON-able values."""
        return {
            "model": self.model,
            "version": self.version,
            "api_base": self.api_base,
            "messages": [dict(message) for message in self.messages],
            # float(): `temperature: 0` from YAML and the default 0.0 are one request, not two call_ids.
            "temperature": _as_float(self.temperature),
            "top_p": _as_float(self.top_p),
            "max_tokens": self.max_tokens,
            "response_format": self.response_format,
            "seed": self.seed,
            "repeat": self.repeat,
        }

    def to_record(self) -> dict[str, Any]:
        """The request as stored: output fields plus alias, item and purpose. No keys, ever."""
        return {**self.output_fields(), "alias": self.alias, "item_id": self.item_id, "purpose": self.purpose}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CallSpec:
        """Rebuild a spec from `to_record()` output (round trip)."""
        return cls(
            alias=record["alias"],
            model=record["model"],
            messages=tuple(dict(message) for message in record["messages"]),
            version=record.get("version"),
            api_base=record.get("api_base"),
            temperature=record.get("temperature"),
            top_p=record.get("top_p"),
            max_tokens=record.get("max_tokens"),
            response_format=record.get("response_format"),
            seed=record.get("seed"),
            repeat=record.get("repeat", 0),
            item_id=record.get("item_id", ""),
            purpose=record.get("purpose", "primary"),
        )


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept (the hash must not depend on formatting)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _as_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _hash_fields(fields: dict[str, Any]) -> str:
    payload = canonical_json({"v": CALL_ID_VERSION, **fields})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def diff_output_fields(wanted: CallSpec, stored: dict[str, Any]) -> list[str]:
    """Names of the output fields in which a stored request differs from `wanted` (explain a cache miss)."""
    mine = wanted.output_fields()
    return [name for name in OUTPUT_FIELDS if canonical_json(mine[name]) != canonical_json(stored.get(name))]
