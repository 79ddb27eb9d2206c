"""The error hierarchy of Assay's call layer.

Providers only *classify* failures into these types; the one client wrapper decides what to retry
(`RateLimited` and `TransientProviderError`) and what to give up on at once (`FatalProviderError`).
Every message names the bad value, what was expected and how to fix it.
"""

from __future__ import annotations


class AssayError(Exception):
    """Base class of every error Assay raises on purpose."""


class ConfigError(AssayError):
    """A configuration file, flag or value is wrong; the message says which and how to fix it."""


class ProviderError(AssayError):
    """A model provider refused or failed a call.

    Attributes:
        model: the litellm model id that was called.
        status_code: the HTTP status, when there was one.
        retry_after: seconds the provider asked us to wait (Retry-After), when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status_code = status_code
        self.retry_after = retry_after


class RateLimited(ProviderError):
    """HTTP 429: retried after Retry-After (or backoff); also lowers the adaptive concurrency."""


class TransientProviderError(ProviderError):
    """5xx, timeouts, dropped connections, unparseable bodies: worth retrying."""


class FatalProviderError(ProviderError):
    """400/401/403/404 and friends: retrying cannot help, so the call fails at once."""


class MissingCredentials(FatalProviderError):
    """No API key (or a rejected one) for a provider; the message names the variable to set."""


class OutputValidationError(AssayError):
    """A model answer does not satisfy the experiment's schema or business rules."""


class BudgetExceeded(AssayError):
    """The next call's estimated cost would cross the budget; finished responses are kept."""

    def __init__(self, message: str, *, spent_usd: float, budget_usd: float, next_estimate_usd: float) -> None:
        super().__init__(message)
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd
        self.next_estimate_usd = next_estimate_usd


class StoreWriteFailed(AssayError):
    """A paid response could not be made durable (a full disk, say). The run stops starting calls; the bytes
    are kept (in memory, and in ASSAY_STORE_SPILL_DIR when set) and stored first by the next run.

    Attributes:
        kept_in: where the unwritten bytes are kept ("memory" or the spill folder).
    """

    def __init__(self, message: str, *, kept_in: str = "memory") -> None:
        super().__init__(message)
        self.kept_in = kept_in


class StoreUnavailable(StoreWriteFailed):
    """A call not sent because an earlier response of this client could not be stored (nothing was paid)."""
