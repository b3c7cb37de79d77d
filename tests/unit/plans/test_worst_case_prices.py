"""Worst cases are priced as calls are: a prompt past a long-context threshold at that tier's rates."""

from __future__ import annotations

import pytest

from gateway.plans import BestOfN, Catalog, Single
from gateway.policy.estimate import worst_case_cost
from gateway.providers.base import Usage
from gateway.providers.pricing import DeploymentPrice, PriceTier, Rates
from tests.support.fake_backend import deployment

BASE, LONG = Rates(1e-6, 2e-6, 1e-6, 1e-6), Rates(4e-6, 8e-6, 4e-6, 4e-6)
TIERED = DeploymentPrice(1e-6, 2e-6, "litellm", tiers=(PriceTier(200_000, LONG),))
DEPLOYMENTS = {"big": deployment("big", max_output_tokens=1000), "other": deployment("other", max_output_tokens=1000)}
CATALOG = Catalog(DEPLOYMENTS, {"big": TIERED, "other": TIERED})


@pytest.mark.parametrize("prompt_tokens", [1_000, 250_000])
def test_a_single_calls_worst_case_is_what_the_call_would_cost(prompt_tokens: int) -> None:
    billed = TIERED.cost(Usage(prompt_tokens, 1000))
    assert worst_case_cost(Single("big", ("other",)), prompt_tokens, CATALOG, None) == pytest.approx(billed)


def test_a_long_prompt_is_held_at_the_long_context_rates_for_every_plan_kind() -> None:
    long_prompt = 250_000
    rates = long_prompt * LONG.input + 1000 * LONG.output
    assert worst_case_cost(Single("big"), long_prompt, CATALOG, None) == pytest.approx(rates)
    assert worst_case_cost(BestOfN(("big", "other")), long_prompt, CATALOG, None) == pytest.approx(2 * rates)
