"""The shipped model zoo (configs/models.yaml) and `assay models`.

Prices must be litellm's bundled ones (or say they are not), fallbacks must exist, the aliases researchers
already use keep their call ids, and `assay models` shows whether a key is set, never the key.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.cli_models import key_state, render_zoo
from pipeline.config import DEFAULT_MODELS_FILE, ModelConfig, load_model_zoo
from pipeline.llm.cost import known_price

# model and version are part of every call_id: changing them would orphan the researchers' cached answers.
PINNED = {
    "gpt4o_mini": ("openai/gpt-4o-mini-2024-07-18", "2024-07-18"),
    "gpt4o": ("openai/gpt-4o-2024-08-06", "2024-08-06"),
    "gpt4_turbo": ("openai/gpt-4-turbo-2024-04-09", "2024-04-09"),
    "haiku": ("anthropic/claude-3-5-haiku-20241022", "20241022"),
    "sonnet": ("anthropic/claude-sonnet-4-20250514", "20250514"),
    "opus": ("anthropic/claude-opus-4-20250514", "20250514"),
    "gemini_flash": ("gemini/gemini-2.0-flash-001", "001"),
    "gemini_pro": ("gemini/gemini-1.5-pro-002", "002"),
    "local": ("local/qwen2.5-coder-1.5b-instruct", "cc324af070c2ecbf"),
    "fake": ("openai/fake-model", "1"),
}
CURRENT = (
    "gpt41",
    "gpt41_mini",
    "gpt5",
    "gpt5_mini",
    "haiku45",
    "sonnet45",
    "opus45",
    "gemini25_flash",
    "gemini25_pro",
)
OVERRIDE_COMMENT = re.compile(r"#\s*price:\s*override", re.IGNORECASE)


def alias_blocks(text: str) -> dict[str, str]:
    """The raw YAML text of each alias under `models:` (comments included, which yaml.safe_load drops)."""
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = re.match(r"^  ([A-Za-z0-9_]+):\s*$", line)
        if match:
            current = match.group(1)
            blocks[current] = []
        elif current is not None and line.startswith("    "):
            blocks[current].append(line)
    return {alias: "\n".join(lines) for alias, lines in blocks.items()}


def litellm_price(config: ModelConfig) -> tuple[float, float] | None:
    """USD per 1M tokens in litellm's bundled map, looked up the way a call prices itself (no zoo price)."""
    price = known_price(config.model_copy(update={"price": None}))
    return None if price is None else (round(price[0] * 1e6, 6), round(price[1] * 1e6, 6))


def test_every_price_is_litellms_or_an_explained_override() -> None:
    zoo = load_model_zoo(DEFAULT_MODELS_FILE)
    blocks = alias_blocks(Path(DEFAULT_MODELS_FILE).read_text(encoding="utf-8"))
    wrong = []
    for alias, config in zoo.models.items():
        assert config.price is not None, f"{alias}: every alias pins its price"
        ours = (config.price.input_per_mtok, config.price.output_per_mtok)
        theirs = litellm_price(config)
        if theirs != ours and not OVERRIDE_COMMENT.search(blocks[alias]):
            wrong.append(f"{alias}: zoo {ours} vs litellm {theirs}")
    assert not wrong, "prices differ from litellm's bundled map without a '# price: override' comment: " + "; ".join(
        wrong
    )


def test_current_generation_is_priced_by_litellm_itself() -> None:
    zoo = load_model_zoo(DEFAULT_MODELS_FILE)
    for alias in CURRENT:
        config = zoo.get(alias)
        assert config.price is not None
        assert litellm_price(config) == (config.price.input_per_mtok, config.price.output_per_mtok), alias


def test_every_fallback_exists_and_old_aliases_keep_their_call_ids() -> None:
    zoo = load_model_zoo(DEFAULT_MODELS_FILE)
    for alias, config in zoo.models.items():
        for fallback in config.fallbacks:
            assert fallback in zoo.models, f"{alias} falls back to unknown {fallback}"
            assert fallback != alias
    for alias, (model, version) in PINNED.items():
        config = zoo.get(alias)
        assert (config.model, config.version) == (model, version), alias
    assert zoo.get("fake").api_base is not None and zoo.get("gpt4o_mini").api_base is None
    for alias in CURRENT:
        assert zoo.get(alias).version, f"{alias} has a version pin"


def test_assay_models_lists_the_zoo_and_never_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    planted = "sk-planted-0123456789abcdefXYZ"
    monkeypatch.setenv("OPENAI_API_KEY", planted)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert planted not in out and "planted" not in out
    for alias in [*PINNED, *CURRENT]:
        assert re.search(rf"^{alias}\*?\s", out, re.MULTILINE), alias
    lines = {line.split()[0].rstrip("*"): line for line in out.splitlines() if line.strip()}
    assert "set (OPENAI_API_KEY)" in lines["gpt41"]
    assert "missing (ANTHROPIC_API_KEY)" in lines["sonnet45"]
    assert "not needed" in lines["fake"]
    assert "0.4" in lines["gpt41_mini"] and "1.6" in lines["gpt41_mini"]  # price in/out per 1M
    assert "gemini25_pro" in lines["gemini25_flash"]  # its fallback


def test_key_state_reads_the_alias_key_variable() -> None:
    config = ModelConfig(model="openai/x", api_key_env="MY_KEY")
    assert key_state(config, {"MY_KEY": "secret"}) == "set (MY_KEY)"
    assert key_state(config, {"MY_KEY": ""}) == "missing (MY_KEY)"
    assert key_state(ModelConfig(model="openai/x", needs_key=False), {}) == "not needed"
    assert "secret" not in render_zoo(load_model_zoo(DEFAULT_MODELS_FILE), {"OPENAI_API_KEY": "secret"})
