"""Secret scrubbing: API keys are removed from every text Assay writes (traces, errors, run folders, records).

Two nets, both cheap (one pass over the environment, one compiled regex):

* values: the value of every environment variable that holds a key. Which ones: those the model zoo names
  (`api_key_env` of each alias, and the provider defaults in `DEFAULT_KEY_ENV`), registered with
  `register_secret_env_names` when a zoo is loaded, plus any whose name contains KEY, TOKEN, SECRET,
  PASSWORD or CRED. A value is scrubbed wherever it appears, whatever its shape.
* shapes: strings that look like a provider key even when no variable is known to hold them (a key pasted
  into a config, a provider echoing a header back): `sk-`, `sk-ant-`, `gsk_`, `hf_`, `xai-`, `AIza`,
  `Bearer ...`, `key=...` (and token=, api_key=, ...) in URL query strings, and 64-hex strings next to a key
  word (`api_key: <hex>`). A bare 64-hex string is not scrubbed: call_ids and checksums are sha256 hex, and
  a run folder is full of them.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

DEFAULT_KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
}
"""Where each provider's key lives when the zoo does not say (litellm's own conventions)."""

MIN_SECRET_LENGTH = 8
"""Shorter values are not scrubbed: replacing every "abc" in a report would do more harm than good."""

_KEY_ENV_HINTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CRED")
_KEY_WORD = r"(?:api[_-]?key|apikey|key|token|secret|password|passwd|auth(?:orization)?|credentials?|x-api-key)"

# The lookbehind keeps words like "disk-usage-monitor" or "task-12345678" intact: a key starts where a word
# starts. The query-string and key-word forms keep their prefix (group 1) so the text still says what it was.
_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"sk-ant-[A-Za-z0-9_-]{8,}|sk-[A-Za-z0-9_-]{8,}|gsk_[A-Za-z0-9]{8,}|hf_[A-Za-z0-9]{8,}|xai-[A-Za-z0-9_-]{8,}"
    r"|AIza[0-9A-Za-z_-]{20,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r")"
)
_PREFIXED = re.compile(
    r"((?i:[?&;]" + _KEY_WORD + r"=))[^&#\s\"'<>]{4,}"  # ?key=... in a URL
    r"|((?i:" + _KEY_WORD + r")[\"']?\s*[:=]\s*[\"']?)[0-9A-Fa-f]{64}(?![0-9A-Za-z])"  # api_key: <64 hex>
)

# Other conventional key variables litellm reads, whatever the zoo says.
_CONVENTIONAL = ("XAI_API_KEY", "HF_TOKEN", "HUGGINGFACE_API_KEY", "AZURE_API_KEY", "COHERE_API_KEY")
_registered: set[str] = {*DEFAULT_KEY_ENV.values(), *_CONVENTIONAL}
_registered_lock = threading.Lock()
_enabled = True  # tests switch it off to prove that their planted keys would otherwise be found


def register_secret_env_names(names: Iterable[str | None]) -> None:
    """Treat the values of these environment variables as secrets from now on (in this process)."""
    with _registered_lock:
        _registered.update(name for name in names if name)


def registered_secret_env_names() -> frozenset[str]:
    """The variable names registered so far (the provider defaults included)."""
    with _registered_lock:
        return frozenset(_registered)


def secret_env_values() -> list[tuple[str, str]]:
    """(name, value) of every environment variable holding a key: registered names and key-like names."""
    # Read at call time (keys may be set after import); a pass over os.environ costs ~50 us, so callers
    # scrubbing several strings take it once.
    registered = _registered
    found = [
        (name, value)
        for name, value in os.environ.items()
        if len(value) >= MIN_SECRET_LENGTH
        and (name in registered or any(hint in name.upper() for hint in _KEY_ENV_HINTS))
    ]
    # Longest first: a value that contains another one is replaced whole.
    return sorted(found, key=lambda pair: -len(pair[1]))


def scrub_secrets(text: str) -> str:
    """Remove API keys from `text`: values of key variables, then known key shapes."""
    return scrub_with(text, secret_env_values()) if text else text


def scrub_with(text: str, secrets: list[tuple[str, str]]) -> str:
    """`scrub_secrets` with the variables already read (`secret_env_values()`), for callers scrubbing many texts."""
    if not _enabled or not text:
        return text
    for name, value in secrets:
        if value in text:
            text = text.replace(value, f"<{name} redacted>")
    text = _SHAPES.sub("<redacted>", text)
    return _PREFIXED.sub(_keep_prefix, text)


def _keep_prefix(match: re.Match[str]) -> str:
    return f"{match.group(1) or match.group(2)}<redacted>"


__all__ = [
    "DEFAULT_KEY_ENV",
    "register_secret_env_names",
    "registered_secret_env_names",
    "scrub_secrets",
    "scrub_with",
    "secret_env_values",
]
