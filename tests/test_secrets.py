"""API keys never reach disk or logs: not in records, traces, quarantine, log records or console output."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import secrets as secrets_module
from pipeline import store as store_module
from pipeline.config import ModelZoo
from pipeline.llm.client import LLMClient, resolve_key
from pipeline.llm.errors import MissingCredentials, ProviderError
from pipeline.secrets import registered_secret_env_names
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
        # Where a key really leaks: a provider echoing the request's Authorization header in its error body.
        server.inject("echo_key", match=f"{alias} echoed")
        run(client.complete(client.spec_for(alias, msgs(f"{alias} echoed"))))  # traced, then answered
        server.inject("echo_key", times=5, match=f"{alias} echo fails")
        with pytest.raises(ProviderError) as echoed:
            run(client.complete(client.spec_for(alias, msgs(f"{alias} echo fails"))))
        errors.append(str(echoed.value))

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


# ---------------------------------------------------------------------------------------------------------
# Keys planted where they really leak: echoed in a provider's error body, in an api_base query string.

REGISTERED_KEY = "plain-no-shape-value-1234567"  # in a variable with no key-like name: only the zoo names it
GSK_KEY = "gsk_" + "A1b2C3d4E5f6G7h8I9j0K1l2"  # built at run time so secret scanners do not flag the file
HF_KEY = "hf_" + "ZyXwVuTsRqPoNmLkJiHg1234"
HEX_KEY = "0123456789abcdef" * 4
QUERY_KEY = "qk9f8a7d6c5b4a3e2d1c0"  # only in the api_base's query string: no variable, no shape
PLANTED = {
    "registered": ("MY_LLM_ACCESS", REGISTERED_KEY),
    "groqish": ("MY_LLM_CREDS", GSK_KEY),
    "hfish": ("MY_HF_ACCESS", HF_KEY),
    "hexish": ("MY_HEX_ACCESS", HEX_KEY),
}


def _leaky_run(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Calls that put each planted key on the wire and get it echoed back; everything written, as one text."""
    flags = [
        fake_alias_flag(alias, needs_key=True, api_key_env=env_name, max_attempts=2)
        for alias, (env_name, _) in PLANTED.items()
    ]
    flags.append(fake_alias_flag("querykey", api_base="${ASSAY_FAKE_BASE_URL}?key=" + QUERY_KEY, max_attempts=2))
    for env_name, value in PLANTED.values():
        monkeypatch.setenv(env_name, value)
    zoo = make_zoo(*flags)  # loading the zoo registers its key variables with the scrubber
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    texts: list[str] = []
    try:
        for alias in [*PLANTED, "querykey"]:
            run(client.complete(client.spec_for(alias, msgs(f"{alias} good"))))
            server.inject("echo_key", match=f"{alias} echoed once")  # retried: the echo is traced, then answered
            run(client.complete(client.spec_for(alias, msgs(f"{alias} echoed once"))))
            server.inject("echo_key", times=2, match=f"{alias} echoed always")
            with pytest.raises(ProviderError) as failed:
                run(client.complete(client.spec_for(alias, msgs(f"{alias} echoed always"))))
            texts.append(str(failed.value))
    finally:
        client.close()
    files = [path for path in store.root.rglob("*") if path.is_file()]
    assert {path.relative_to(store.root).parts[0] for path in files} == {"records", "traces"}
    texts.extend(path.read_text(encoding="utf-8") for path in files)
    return "\n".join(texts)


@pytest.fixture
def fresh_scrubber() -> Iterator[None]:
    """No endpoint scrubbed by an earlier test served from the cache."""
    store_module._scrubbed_api_base.cache_clear()
    yield
    store_module._scrubbed_api_base.cache_clear()


def test_echoed_and_query_string_keys_are_scrubbed_from_every_file_and_error(
    make_zoo: Callable[..., ModelZoo],
    store: ResponseStore,
    server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_scrubber: None,
) -> None:
    caplog.set_level(logging.DEBUG)
    written = _leaky_run(make_zoo, store, server, monkeypatch)
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "Bad gateway (fake): upstream failed" in written  # the echoes were written, scrubbed
    for secret in (REGISTERED_KEY, GSK_KEY, HF_KEY, HEX_KEY, QUERY_KEY):
        assert secret not in written, f"{secret!r} written"
        assert secret not in logged, f"{secret!r} logged"
    assert "<MY_LLM_ACCESS redacted>" in written  # scrubbed by name: the zoo registered the variable
    assert "?key=<redacted>" in written


def test_the_leak_check_above_finds_every_key_when_scrubbing_is_off(
    make_zoo: Callable[..., ModelZoo],
    store: ResponseStore,
    server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    fresh_scrubber: None,
) -> None:
    # The planted keys really reach what is written: without the scrubber every one of them would leak.
    monkeypatch.setattr(secrets_module, "_enabled", False)
    written = _leaky_run(make_zoo, store, server, monkeypatch)
    for secret in (REGISTERED_KEY, GSK_KEY, HF_KEY, HEX_KEY, QUERY_KEY):
        assert secret in written, f"{secret!r} was never written: the test above could not fail for it"


def test_scrub_secrets_knows_the_other_key_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_LLM_CREDS", raising=False)
    for secret in (GSK_KEY, HF_KEY, "xai-" + "abcdefgh12345678"):
        assert scrub_secrets(f"upstream said {secret}.") == "upstream said <redacted>."
    assert scrub_secrets(f"GET /v1?api_key={QUERY_KEY}&x=1") == "GET /v1?api_key=<redacted>&x=1"
    assert scrub_secrets(f'{{"api_key": "{HEX_KEY}"}}') == '{"api_key": "<redacted>"}'
    call_id = "f" * 64
    assert scrub_secrets(f"call {call_id} stored") == f"call {call_id} stored"  # sha256 ids are not keys


def test_loading_a_zoo_registers_its_key_variables(make_zoo: Callable[..., ModelZoo]) -> None:
    make_zoo(fake_alias_flag("oddly_named", needs_key=True, api_key_env="ODDLY_NAMED_VAR"))
    assert {"ODDLY_NAMED_VAR", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"} <= registered_secret_env_names()
