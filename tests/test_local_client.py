"""The offline `local` model through the whole Assay client: constrained labels, store, cost, cache."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from pipeline.config import load_model_zoo
from pipeline.llm.client import LLMClient
from pipeline.store import ResponseStore

TOPICS = ["sports", "cooking", "computing", "weather", "music"]
TEXTS = [
    "The goalkeeper saved a penalty in the final minute.",
    "Knead the dough for ten minutes, then let it rise.",
    "The compiler rejected the code because of a type error.",
    "Thunderstorms are expected across the region tonight.",
    "The orchestra played Beethoven's fifth symphony.",
]
SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string", "enum": TOPICS}},
    "required": ["topic"],
    "additionalProperties": False,
}

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None, reason="needs the [local] extra: pip install '.[local]'"
    ),
]


def _specs(client: LLMClient) -> list:
    return [
        client.spec_for(
            "local",
            [
                {"role": "system", "content": "You label short texts. Answer with JSON only."},
                {"role": "user", "content": f"Choose the topic of this text from: {', '.join(TOPICS)}.\nText: {text}"},
            ],
            max_tokens=16,
            response_format={"type": "json_schema", "json_schema": {"name": "topic", "schema": SCHEMA}},
            item_id=f"t{index}",
        )
        for index, text in enumerate(TEXTS)
    ]


@pytest.mark.slow
def test_local_model_through_the_client_stores_and_never_infers_twice(tmp_path: Path) -> None:
    import json

    store = ResponseStore(tmp_path / "store")
    client = LLMClient(load_model_zoo(), store)
    specs = _specs(client)

    async def run_all() -> list:
        return [await client.complete(spec) for spec in specs]

    first = asyncio.run(run_all())
    labels = [json.loads(result.text)["topic"] for result in first]
    assert all(label in TOPICS for label in labels)
    assert sum(label == gold for label, gold in zip(labels, TOPICS, strict=True)) >= 4
    assert all(result.cost_usd == 0.0 and not result.from_store for result in first)
    assert all(store.has(result.call_id) for result in first)

    again_client = LLMClient(load_model_zoo(), store)  # a new process would build a new client
    again_specs = _specs(again_client)
    assert [spec.call_id for spec in again_specs] == [spec.call_id for spec in specs]

    async def run_again() -> list:
        return list(await asyncio.gather(*(again_client.complete(spec) for spec in again_specs)))

    second = asyncio.run(run_again())
    assert all(result.from_store for result in second), "a stored local answer was inferred again"
    assert [result.text for result in second] == [result.text for result in first]
