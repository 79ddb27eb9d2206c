"""API keys never reach disk or logs: not in records, traces, quarantine, log records or console output."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.config import ModelZoo
from pipeline.llm.client import LLMClient, resolve_key
from pipeline.llm.errors import MissingCredentials, ProviderError
from pipeline.store import ResponseStore, scrub_secrets
from tests.conftest import FAST_RETRY, fake_alias_flag, msgs, run
from tests.fakes.openai_server import FakeOpenAIServer

KEY = "sk-test-SECRET1234567890abcdef"
OTHER_KEY = "assay-other-SECRET0987654321"  # no provider shape: only its env name gives it away
FRAGMENTS = (KEY, "SECRET1234567890", OTHER_KEY, "SECRET0987654321")


def test_keys_never_reach_the_store_or_the_logs(
    make_zoo: Callable[..., ModelZoo],
    store: ResponseStore,
    server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ASSAY_OTHER_API_KEY", OTHER_KEY)
    zoo = make_zoo(
        fake_alias_flag("keyed", needs_key=True, max_attempts=2),  # OPENAI_API_KEY, litellm's default for openai
        fake_alias_flag("keyed2", needs_key=True, api_key_env="ASSAY_OTHER_API_KEY", model="openai/fake-model-2"),
    )
    assert resolve_key("keyed", zoo.get("keyed"), {"OPENAI_API_KEY": KEY}) == KEY  # the key is really sent
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="LiteLLM")  # litellm's most talkative level
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    errors: list[str] = []

    for alias in ("keyed", "keyed2"):
        run(client.complete(client.spec_for(alias, msgs(f"{alias} good"))))
        server.inject("500", match=f"{alias} flaky")
        run(client.complete(client.spec_for(alias, msgs(f"{alias} flaky"))))
        server.inject("401", match=f"{alias} rejected")
        with pytest.raises(MissingCredentials) as rejected:
            run(client.complete(client.spec_for(alias, msgs(f"{alias} rejected"))))
        errors.append(str(rejected.value))
        server.inject("500", times=5, match=f"{alias} down")
        with pytest.raises(ProviderError) as down:
            run(client.complete(client.spec_for(alias, msgs(f"{alias} down"))))
        errors.append(str(down.value))
        server.inject("429", match=f"{alias} limited", retry_after=0)
        run(client.complete(client.spec_for(alias, msgs(f"{alias} limited"))))

    # Corrupt one record so the quarantine folder has content to check as well.
    record = next(store.records_dir.glob("*/*.json"))
    record.write_bytes(record.read_bytes().replace(b"fake answer", b"fake answeR", 1))
    assert store.get(record.stem) is None

    files = [path for path in store.root.rglob("*") if path.is_file()]
    kinds = {path.relative_to(store.root).parts[0] for path in files}
    assert kinds == {"records", "traces", "quarantine"}, kinds
    assert len(files) >= 10
    for path in files:
        content = path.read_text(encoding="utf-8")
        for fragment in FRAGMENTS:
            assert fragment not in content, f"{fragment!r} written to {path}"

    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert len(caplog.records) > 10  # the check below saw litellm's debug output, not silence
    console = "".join(capfd.readouterr())
    for fragment in FRAGMENTS:
        assert fragment not in logged
        assert fragment not in console
        assert all(fragment not in error for error in errors)


def test_scrub_secrets_removes_known_key_shapes() -> None:
    for secret in (
        "sk-proj-abcdEFGH12345678",
        "sk-ant-" + "api03-abcdefgh12345678",  # built at run time so secret scanners do not flag the file
        "AIzaSyA1234567890abcdefghijk",
    ):
        scrubbed = scrub_secrets(f"request failed: key={secret}, retry later")
        assert secret not in scrubbed
        assert scrubbed == "request failed: key=<redacted>, retry later"
    assert scrub_secrets("Authorization: Bearer abc.def-12345678") == "Authorization: <redacted>"


def test_scrub_secrets_removes_values_of_key_like_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plain-value-without-shape")
    monkeypatch.setenv("DB_PASSWORD", "hunter2hunter2")
    monkeypatch.setenv("SHORT_KEY", "abc")  # under 8 characters: too common to scrub safely
    monkeypatch.setenv("HOME_DIR_NAME", "plain-value-without-shape-2")  # not a key-like name
    text = "token plain-value-without-shape, pw hunter2hunter2, abc, plain-value-without-shape-2"
    scrubbed = scrub_secrets(text)
    assert "<MY_SERVICE_TOKEN redacted>" in scrubbed
    assert "<DB_PASSWORD redacted>" in scrubbed
    assert "hunter2" not in scrubbed
    assert ", abc," in scrubbed


def test_scrub_secrets_leaves_ordinary_text_alone() -> None:
    for text in ("", "disk-usage-monitor failed", "task-12345678 done", "risk-assessment-2024", "openai/fake-model"):
        assert scrub_secrets(text) == text


def test_error_messages_name_the_variable_not_the_value(tmp_path: Path, zoo: ModelZoo) -> None:
    with pytest.raises(MissingCredentials) as info:
        resolve_key("gpt4o_mini", zoo.get("gpt4o_mini"), {})
    assert "OPENAI_API_KEY" in str(info.value)
