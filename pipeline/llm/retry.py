"""Error classification and the retry policy: the only place Assay decides what is worth retrying.

`classify` maps whatever litellm (or the transport under it) raised onto Assay's hierarchy; the client
retries RateLimited and TransientProviderError with tenacity and gives up at once on the rest.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from pipeline.llm.errors import (
    FatalProviderError,
    MissingCredentials,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from pipeline.secrets import scrub_secrets


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff settings (the attempt count is per model alias, `ModelConfig.max_attempts`).

    Attributes:
        base_s: first backoff step; attempt n waits a random time in [0, base_s * 2**n] ("full jitter").
        max_backoff_s: cap of one backoff wait.
        max_retry_after_s: cap on a provider's Retry-After (a provider asking for an hour is not obeyed).
    """

    base_s: float = 1.0
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 60.0

    def wait_s(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            # Honour Retry-After, plus a little jitter so clients told the same time don't stampede.
            return min(float(retry_after), self.max_retry_after_s) + random.uniform(0, self.base_s / 10)
        return random.uniform(0, min(self.max_backoff_s, self.base_s * 2 ** (attempt - 1)))


def _retry_after(exc: BaseException) -> float | None:
    headers: Any = None
    response = getattr(exc, "response", None)
    if response is not None:
        headers = getattr(response, "headers", None)
    headers = headers or getattr(exc, "litellm_response_headers", None)
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def classify(exc: BaseException, *, model: str, key_env: str | None) -> ProviderError | BaseException:
    """Map an exception from a litellm call to RateLimited / TransientProviderError / FatalProviderError.

    Exceptions that are not provider failures (programming errors) are returned unchanged.
    """
    import litellm

    status = getattr(exc, "status_code", None)
    # Scrubbed before it is cut: a provider may echo the request (its Authorization header, the URL with a
    # ?key=) in its error body, and this message goes to traces, logs and run folders.
    text = scrub_secrets(str(exc))
    message = text.splitlines()[0][:500] if text else type(exc).__name__
    detail = f"{model}: {type(exc).__name__}: {message}"
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, litellm.RateLimitError) or status == 429:
        return RateLimited(detail, model=model, status_code=429, retry_after=_retry_after(exc))
    if isinstance(exc, litellm.AuthenticationError) or status == 401:
        hint = (
            f"set {key_env} to a valid key"
            if key_env
            else "this alias sends no key (needs_key: false); if the server wants one, set api_key_env for it"
        )
        return MissingCredentials(
            f"{model}: the provider rejected the API key (HTTP 401); {hint}", model=model, status_code=401
        )
    if isinstance(exc, litellm.Timeout | asyncio.TimeoutError | TimeoutError):
        return TransientProviderError(f"{model}: timed out ({message})", model=model, status_code=status)
    if isinstance(exc, litellm.APIConnectionError) and (status is None or status >= 500):
        # Dropped connections and bodies that are not JSON both land here.
        return TransientProviderError(detail, model=model, status_code=status)
    if isinstance(status, int) and status >= 500:
        return TransientProviderError(detail, model=model, status_code=status)
    if isinstance(status, int) and 400 <= status < 500:
        return FatalProviderError(detail, model=model, status_code=status)
    if isinstance(exc, litellm.exceptions.APIError | litellm.APIConnectionError):
        return TransientProviderError(detail, model=model, status_code=status)
    return exc
