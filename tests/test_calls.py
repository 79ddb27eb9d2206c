"""call_id: it changes with everything that can change a model's output, and with nothing else."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.calls import OUTPUT_FIELDS, CallSpec
from pipeline.config import ModelZoo
from pipeline.llm.client import LLMClient
from pipeline.llm.errors import ConfigError
from pipeline.store import ResponseStore
from tests.conftest import REPO_ROOT, msgs

BASE = CallSpec(
    alias="fake",
    model="openai/fake-model",
    version="1",
    api_base="http://127.0.0.1:8089/v1",
    messages=({"role": "system", "content": "Be terse."}, {"role": "user", "content": "Classify: red apple"}),
    temperature=0.0,
    top_p=None,
    max_tokens=64,
    response_format=None,
    seed=0,
    repeat=0,
    item_id="item-1",
)

# One changed value per hashed field; the test below checks the table covers OUTPUT_FIELDS exactly.
OUTPUT_CHANGES: dict[str, Any] = {
    "model": "openai/fake-model-2",
    "version": "2",
    "api_base": "http://127.0.0.1:9999/v1",
    "messages": ({"role": "user", "content": "Classify: green apple"},),
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 65,
    "response_format": {"type": "json_object"},
    "seed": 1,
    "repeat": 1,
}


def test_change_table_covers_every_hashed_field() -> None:
    assert set(OUTPUT_CHANGES) == set(OUTPUT_FIELDS)


@pytest.mark.parametrize("field", sorted(OUTPUT_CHANGES))
def test_call_id_changes_with_each_output_field(field: str) -> None:
    changed = dataclasses.replace(BASE, **{field: OUTPUT_CHANGES[field]})
    assert changed.call_id != BASE.call_id


@pytest.mark.parametrize(
    ("field", "value"),
    [("alias", "other_alias"), ("item_id", "item-2"), ("purpose", "repair")],
)
def test_call_id_ignores_bookkeeping_fields(field: str, value: str) -> None:
    assert dataclasses.replace(BASE, **{field: value}).call_id == BASE.call_id


def test_call_id_is_deterministic_and_pinned() -> None:
    # Pinned: if this changes, old records stop matching; bump CALL_ID_VERSION on purpose, then re-pin.
    assert BASE.call_id == CallSpec(**{f.name: getattr(BASE, f.name) for f in _init_fields()}).call_id
    assert BASE.call_id == "17306671decb427b080d95020daa17b9"
    assert len(BASE.call_id) == 32


def test_call_id_ignores_key_order_within_a_message() -> None:
    reordered = dataclasses.replace(
        BASE, messages=tuple({"content": m["content"], "role": m["role"]} for m in BASE.messages)
    )
    assert reordered.call_id == BASE.call_id


def test_call_id_treats_int_and_float_sampling_values_alike() -> None:
    # `temperature: 0` from a YAML file and the default 0.0 are the same request.
    assert dataclasses.replace(BASE, temperature=0).call_id == BASE.call_id
    assert dataclasses.replace(BASE, top_p=1).call_id == dataclasses.replace(BASE, top_p=1.0).call_id


def test_record_round_trip_keeps_the_call_id() -> None:
    spec = dataclasses.replace(BASE, response_format={"type": "json_object"}, purpose="repair")
    again = CallSpec.from_record(spec.to_record())
    assert again == spec
    assert again.call_id == spec.call_id
    assert "api_key" not in spec.to_record()


@pytest.mark.parametrize(
    "override",
    [
        "models.fake.timeout_s=0.5",
        "models.fake.max_attempts=1",
        "models.fake.limits.max_concurrent=2",
        "models.fake.limits.rpm=10",
        "models.fake.api_key_env=SOME_OTHER_KEY",
        "models.fake.needs_key=true",
        "models.fake.price.input_per_mtok=99",
        "models.fake.fallbacks=[gpt4o]",
    ],
)
def test_call_id_ignores_zoo_settings_that_cannot_change_output(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, override: str
) -> None:
    plain = LLMClient(make_zoo(), store).spec_for("fake", msgs("same question"))
    tuned = LLMClient(make_zoo(override), store).spec_for("fake", msgs("same question"))
    assert tuned.call_id == plain.call_id


def test_call_id_follows_the_zoo_version_pin(make_zoo: Callable[..., ModelZoo], store: ResponseStore) -> None:
    plain = LLMClient(make_zoo(), store).spec_for("fake", msgs("q"))
    bumped = LLMClient(make_zoo("models.fake.version='2'"), store).spec_for("fake", msgs("q"))
    assert bumped.version == "2"
    assert bumped.call_id != plain.call_id


def test_call_id_follows_the_api_base_from_the_environment(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = LLMClient(make_zoo(), store).spec_for("fake", msgs("q"))
    monkeypatch.setenv("ASSAY_FAKE_BASE_URL", "http://127.0.0.1:1/v1")
    there = LLMClient(make_zoo(), store).spec_for("fake", msgs("q"))
    assert there.api_base == "http://127.0.0.1:1/v1"
    assert there.call_id != here.call_id


def test_call_id_ignores_api_keys(zoo: ModelZoo, store: ResponseStore) -> None:
    one = LLMClient(zoo, store, environ={"OPENAI_API_KEY": "sk-one-aaaaaaaaaaaa"})
    two = LLMClient(zoo, store, environ={"OPENAI_API_KEY": "sk-two-bbbbbbbbbbbb"})
    assert one.spec_for("gpt4o_mini", msgs("q")).call_id == two.spec_for("gpt4o_mini", msgs("q")).call_id


def test_empty_message_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"item 'item-9'.*empty message list"):
        dataclasses.replace(BASE, messages=(), item_id="item-9")


@pytest.mark.parametrize(
    "bad",
    [{"role": "user"}, {"content": "no role"}, "just a string"],
    ids=["no-content", "no-role", "not-a-mapping"],
)
def test_bad_message_is_a_config_error_naming_it(bad: Any) -> None:
    with pytest.raises(ConfigError, match="message 1") as info:
        dataclasses.replace(BASE, messages=({"role": "user", "content": "ok"}, bad))
    assert repr(bad) in str(info.value)
    assert "'role' and 'content'" in str(info.value)


def test_negative_repeat_is_a_config_error_naming_the_value() -> None:
    with pytest.raises(ConfigError, match=r"repeat must be >= 0, found -1"):
        dataclasses.replace(BASE, repeat=-1)


def test_zero_max_tokens_is_a_config_error_naming_the_value() -> None:
    with pytest.raises(ConfigError, match=r"max_tokens must be >= 1, found 0"):
        dataclasses.replace(BASE, max_tokens=0)


def _init_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(CallSpec) if f.init]


def test_token_counts_need_no_litellm_import(tmp_path: Path) -> None:
    # Planning counts tokens for the budget; importing litellm for its tokenizer files took ~4 s.
    import subprocess
    import sys

    probe = (
        "import sys; from pipeline.calls import CallSpec; from pipeline.llm.cost import count_prompt_tokens; "
        "spec = CallSpec(alias='a', model='openai/gpt-4o-mini', version='1', "
        "messages=({'role': 'user', 'content': 'hello world'},)); "
        "print(count_prompt_tokens(spec), 'litellm' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "CUSTOM_TIKTOKEN_CACHE_DIR")}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(9, 'tiktoken:o200k_base') False"


def test_a_plan_is_read_once_while_its_file_is_unchanged(tmp_path: Path) -> None:
    from pipeline.plan import CallPlan, PlannedCall

    def plan_of(texts: list[str]) -> CallPlan:
        calls = [
            PlannedCall(CallSpec(alias="a", model="openai/m", version="1", messages=tuple(msgs(t))), (t,))
            for t in texts
        ]
        return CallPlan("exp", tuple(calls))

    path = tmp_path / "call_plan.jsonl"
    plan_of(["one", "two"]).save(path)
    first = CallPlan.load(path)
    assert CallPlan.load(path) is first  # parsed and re-hashed once
    plan_of(["three"]).save(path)
    again = CallPlan.load(path)
    assert again is not first and [call.item_ids for call in again.calls] == [("three",)]
    path.unlink()
    with pytest.raises(FileNotFoundError, match="materialize the stage.s <stage>_calls asset first"):
        CallPlan.load(path)
