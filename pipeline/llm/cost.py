"""Cost: estimates before a call, actual cost after it, and the run budget.

Estimates are deliberately upper bounds: prompt tokens (tiktoken for OpenAI models; characters / 3.5 for
the rest, which over-counts English for Anthropic's and Gemini's tokenizers) plus the call's full
`max_tokens` as output. The budget reserves each call's estimate before sending it, so concurrent calls
can never jointly cross the limit on estimates. Worst-case overshoot of *actual* spend: only where a
provider bills more tokens than estimated, i.e. when the non-OpenAI approximation under-counts a
prompt; for OpenAI models it is zero. Finished responses are never discarded when the budget stops a run.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.calls import CallSpec
from pipeline.config import ModelConfig, ModelZoo
from pipeline.llm.errors import BudgetExceeded, ConfigError

log = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT_TOKENS = 1024  # used for estimates when a call sets no max_tokens
CHARS_PER_TOKEN_APPROX = 3.5
TOKENS_PER_MESSAGE = 4  # role and separators, as OpenAI's cookbook counts them


@dataclass(frozen=True)
class CostEstimate:
    """Upper-bound estimate of one call."""

    prompt_tokens: int
    max_output_tokens: int
    usd: float
    method: str  # "tiktoken:<encoding>" or "chars/3.5"

    @property
    def total_tokens(self) -> int:
        """Prompt tokens plus the most output tokens the call may produce (what a tpm limit counts)."""
        return self.prompt_tokens + self.max_output_tokens


@dataclass(frozen=True)
class Usage:
    """Tokens billed for one call."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """prompt + completion."""
        return self.prompt_tokens + self.completion_tokens


@lru_cache(maxsize=8)
def _encoding(name: str) -> Any:
    # tiktoken downloads its encodings unless TIKTOKEN_CACHE_DIR holds them. litellm ships them and points
    # that variable at its copy when imported, but importing litellm takes ~4 s and planning needs none of
    # it (the calls run in a worker process): point at its copy without the import.
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        folder = os.environ.get("CUSTOM_TIKTOKEN_CACHE_DIR") or _litellm_tokenizers()
        if folder:
            os.environ["TIKTOKEN_CACHE_DIR"] = folder
    import tiktoken

    return tiktoken.get_encoding(name)


def _litellm_tokenizers() -> str | None:
    spec = importlib.util.find_spec("litellm")  # finds the package without running it
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "litellm_core_utils" / "tokenizers"
        if folder.is_dir():
            return str(folder)
    return None


def _encoding_name(model: str) -> str | None:
    provider, _, name = model.partition("/")
    if provider != "openai":
        return None
    return "o200k_base" if name.startswith(("gpt-4o", "gpt-4.1", "o1", "o3", "o4", "gpt-5")) else "cl100k_base"


def count_prompt_tokens(spec: CallSpec) -> tuple[int, str]:
    """Prompt tokens of `spec` and the method used to count them."""
    text_parts = [message["content"] for message in spec.messages]
    if spec.response_format is not None:
        text_parts.append(str(spec.response_format))  # schemas are sent along and billed
    encoding_name = _encoding_name(spec.model)
    if encoding_name is not None:
        encoding = _encoding(encoding_name)
        tokens = sum(len(encoding.encode(part)) for part in text_parts)
        method = f"tiktoken:{encoding_name}"
    else:
        tokens = math.ceil(sum(len(part) for part in text_parts) / CHARS_PER_TOKEN_APPROX)
        method = f"chars/{CHARS_PER_TOKEN_APPROX}"
    return tokens + TOKENS_PER_MESSAGE * len(spec.messages) + 3, method


_PRICE_PROBE_TOKENS = 1_000


def known_price(config: ModelConfig) -> tuple[float, float] | None:
    """USD per prompt token and per completion token: the zoo's price, else litellm's table, else None."""
    if config.price is not None:
        return config.price.input_per_mtok / 1e6, config.price.output_per_mtok / 1e6
    try:
        import litellm

        # A short call's price: a million tokens would hit tiered prices (gemini-2.5-pro doubles above 200k).
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=config.model, prompt_tokens=_PRICE_PROBE_TOKENS, completion_tokens=_PRICE_PROBE_TOKENS
        )
    except Exception:  # noqa: BLE001 - litellm raises plain Exception for unmapped models
        return None
    return prompt_cost / _PRICE_PROBE_TOKENS, completion_cost / _PRICE_PROBE_TOKENS


def price_per_token(config: ModelConfig) -> tuple[float, float]:
    """USD per prompt token and per completion token: the zoo's price, else litellm's table, else 0."""
    price = known_price(config)
    if price is None:
        log.warning("no price known for %s: cost counted as 0 (set price: in configs/models.yaml)", config.model)
        return 0.0, 0.0
    return price


def check_prices(aliases: Iterable[str], zoo: ModelZoo, budget_usd: float | None) -> None:
    """Refuse a budgeted run on a model without a known price: its calls would count as free.

    Every alias and every fallback it may fall back to is checked (a fallback answers, and is billed, too).
    Nothing is checked without a budget. `local` and `fake` carry explicit prices in configs/models.yaml.
    Raises ConfigError naming the `--set` flags that give the missing prices.
    """
    if budget_usd is None:
        return
    unpriced: list[str] = []
    for alias in aliases:
        for name in (alias, *zoo.get(alias).fallbacks):
            if name not in unpriced and known_price(zoo.get(name)) is None:
                unpriced.append(name)
    if unpriced:
        flags = " ".join(
            f"--set models.{name}.price.input_per_mtok=... --set models.{name}.price.output_per_mtok=..."
            for name in unpriced
        )
        models = ", ".join(f"{name} ({zoo.get(name).model})" for name in unpriced)
        raise ConfigError(
            f"--max-cost ${budget_usd:.2f} cannot be enforced: no price is known for {models}, so its calls "
            f"would count as free; give the price in USD per million tokens: {flags} "
            "(or a price: entry in configs/models.yaml), or run without --max-cost"
        )


@dataclass(frozen=True)
class CallEstimate:
    """What the budget holds for one call before it is sent: the dearest model of its fallback chain.

    Attributes:
        usd: upper-bound cost (prompt tokens + the call's full max_tokens at the priced model's rates).
        priced_alias / priced_model: the alias (and litellm id) whose price gave `usd`.
        prompt_tokens, max_output_tokens, method: as in CostEstimate.
        chain: the aliases that may answer, in the order they are tried.
    """

    usd: float
    priced_alias: str
    priced_model: str
    prompt_tokens: int
    max_output_tokens: int
    method: str
    chain: tuple[str, ...]

    @property
    def total_tokens(self) -> int:
        """Prompt tokens plus the most output tokens the call may produce."""
        return self.prompt_tokens + self.max_output_tokens


def estimate_call_cost(spec: CallSpec, zoo: ModelZoo, counted: tuple[int, str] | None = None) -> CallEstimate:
    """The estimate the client reserves for `spec` (and the plan should add up): the dearest of its chain.

    Any model of the alias's fallback chain may end up answering, so the client holds the dearest one's
    estimate; a plan that priced only the primary would pass pre-flight and then stop "out of budget" far
    below the limit. The first alias wins a tie. `counted` as in `estimate_cost`.
    """
    counted = counted if counted is not None else count_prompt_tokens(spec)
    chain = (spec.alias, *zoo.get(spec.alias).fallbacks)
    best: tuple[str, ModelConfig, CostEstimate] | None = None
    for alias in chain:
        config = zoo.get(alias)
        estimate = estimate_cost(spec, config, counted)
        if best is None or estimate.usd > best[2].usd:
            best = (alias, config, estimate)
    assert best is not None
    alias, config, estimate = best
    return CallEstimate(
        usd=estimate.usd,
        priced_alias=alias,
        priced_model=config.model,
        prompt_tokens=estimate.prompt_tokens,
        max_output_tokens=estimate.max_output_tokens,
        method=estimate.method,
        chain=chain,
    )


def estimate_cost(spec: CallSpec, config: ModelConfig, counted: tuple[int, str] | None = None) -> CostEstimate:
    """Upper-bound cost of `spec` on `config`'s model.

    `counted` is `count_prompt_tokens(spec)` when the caller has it already (tokenizing is most of the cost
    of an estimate, and the count does not depend on which model of a fallback chain is priced).
    """
    prompt_tokens, method = counted if counted is not None else count_prompt_tokens(spec)
    max_output = spec.max_tokens or DEFAULT_MAX_OUTPUT_TOKENS
    per_in, per_out = price_per_token(config)
    return CostEstimate(prompt_tokens, max_output, prompt_tokens * per_in + max_output * per_out, method)


def actual_cost(usage: Usage, config: ModelConfig) -> float:
    """Cost of a finished call: usage x price."""
    per_in, per_out = price_per_token(config)
    return usage.prompt_tokens * per_in + usage.completion_tokens * per_out


@dataclass
class Reservation:
    """Budget held for one call in flight."""

    usd: float
    released: bool = False


class Budget:
    """A hard spending limit shared by all concurrent calls of a run (thread- and task-safe).

    `reserve` refuses the call whose estimate would take spent + reserved past the limit; `settle`
    replaces the reservation with the actual cost once the call is done (or releases it on failure).
    """

    def __init__(self, limit_usd: float | None, already_spent_usd: float = 0.0) -> None:
        if limit_usd is not None and limit_usd < 0:
            raise ConfigError(f"budget must be >= 0 USD, found {limit_usd}; use e.g. --max-cost 5.00")
        self.limit_usd = limit_usd
        self.spent_usd = already_spent_usd
        self.reserved_usd = 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate_usd: float) -> Reservation:
        """Hold `estimate_usd` for a call, or raise BudgetExceeded without holding anything."""
        with self._lock:
            if self.limit_usd is not None and self.spent_usd + self.reserved_usd + estimate_usd > self.limit_usd:
                raise BudgetExceeded(
                    f"budget ${self.limit_usd:.4f} would be exceeded: spent ${self.spent_usd:.4f}, "
                    f"in flight ${self.reserved_usd:.4f}, next call up to ${estimate_usd:.4f}. "
                    "Finished responses are stored; resume with a larger --max-cost.",
                    spent_usd=self.spent_usd,
                    budget_usd=self.limit_usd,
                    next_estimate_usd=estimate_usd,
                )
            self.reserved_usd += estimate_usd
            return Reservation(estimate_usd)

    def settle(self, reservation: Reservation, actual_usd: float | None) -> None:
        """Release `reservation`; add `actual_usd` to spend (None: the call failed, nothing billed)."""
        with self._lock:
            if reservation.released:
                return
            reservation.released = True
            self.reserved_usd = max(0.0, self.reserved_usd - reservation.usd)
            if actual_usd:
                self.spent_usd += actual_usd

    @property
    def remaining_usd(self) -> float | None:
        """Budget left after spend and reservations; None when unlimited."""
        if self.limit_usd is None:
            return None
        return self.limit_usd - self.spent_usd - self.reserved_usd
