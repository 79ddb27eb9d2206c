"""Budget holes: a budgeted run refuses models without a price; the plan's estimate is the client's reservation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.config import ModelZoo
from pipeline.llm.client import LLMClient
from pipeline.llm.cost import Budget, Reservation, check_prices, estimate_call_cost, estimate_cost
from pipeline.llm.errors import ConfigError
from pipeline.store import ResponseStore
from tests.conftest import FAST_RETRY, fake_alias_flag, msgs, run


def test_a_budgeted_run_refuses_a_model_without_a_price(make_zoo: Callable[..., ModelZoo]) -> None:
    zoo = make_zoo(
        fake_alias_flag("unpriced", model="openai/no-such-model-anywhere", price=None),
        fake_alias_flag("priced_front", fallbacks=["unpriced"]),
    )
    with pytest.raises(ConfigError) as info:
        check_prices(["priced_front"], zoo, 5.0)  # its fallback has no price: its calls would count as free
    message = str(info.value)
    assert "unpriced (openai/no-such-model-anywhere)" in message and "\n" not in message
    assert "--set models.unpriced.price.input_per_mtok=..." in message
    assert "--set models.unpriced.price.output_per_mtok=..." in message
    check_prices(["priced_front"], zoo, None)  # no budget: nothing to enforce
    check_prices(["fake", "local", "gpt4o_mini"], zoo, 5.0)  # explicit prices (local and fake: 0 and made up)


def test_the_estimate_is_the_dearest_model_of_the_chain_and_the_client_reserves_exactly_it(
    make_zoo: Callable[..., ModelZoo], store: ResponseStore
) -> None:
    zoo = make_zoo(
        fake_alias_flag("dear", price={"input_per_mtok": 100.0, "output_per_mtok": 400.0}),
        fake_alias_flag("cheap", fallbacks=["dear"], model="openai/fake-model-cheap"),
    )
    client = LLMClient(zoo, store, retry=FAST_RETRY)
    spec = client.spec_for("cheap", msgs("priced by its fallback"), max_tokens=100)
    estimate = estimate_call_cost(spec, zoo)
    assert estimate.priced_alias == "dear" and estimate.priced_model == "openai/fake-model"
    assert estimate.chain == ("cheap", "dear")
    assert estimate.usd == pytest.approx(estimate_cost(spec, zoo.get("dear")).usd)
    assert estimate.usd > 10 * estimate_cost(spec, zoo.get("cheap")).usd

    reserved: list[float] = []

    class Recording(Budget):
        def reserve(self, estimate_usd: float) -> Reservation:
            reserved.append(estimate_usd)
            return super().reserve(estimate_usd)

    client.budget = Recording(estimate.usd)  # exactly the plan's figure: pre-flight and the live stop agree
    try:
        result = run(client.complete(spec))
    finally:
        client.close()
    assert reserved == [estimate.usd] and not result.from_store
