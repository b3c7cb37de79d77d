"""Worst cases are priced as calls are: a prompt past a long-context threshold at that tier's rates."""

from __future__ import annotations

import pytest

from gateway.plans import BestOfN, Catalog, Single
from gateway.policy.estimate import worst_case_cost
from gateway.providers.base import Usage
from gateway.providers.pricing import DeploymentPrice, PriceTier, Rates
from tests.support.fake_backend import deployment

BASE, LONG = Rates(1e-6, 2e-6, 1e-6, 1e-6, 1e-6), Rates(4e-6, 8e-6, 4e-6, 4e-6, 4e-6)
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


# Anthropic's rates for claude-sonnet-4-5 (litellm's cost map): a prompt written to its cache is
# billed 1.25× the input price, and a client asks for that with `cache_control` on its messages.
WRITING = DeploymentPrice(3e-6, 15e-6, "litellm", cache_read_per_token=3e-7, cache_write_per_token=3.75e-6)
WRITING_CATALOG = Catalog(DEPLOYMENTS, {"big": WRITING, "other": WRITING})


@pytest.mark.parametrize("plan", [Single("big", ("other",)), BestOfN(("big", "other"))])
def test_a_prompt_the_provider_writes_to_its_cache_is_held_at_the_cache_write_price(
        plan: Single | BestOfN) -> None:
    prompt = 100_000
    every_call_writes = WRITING.cost(Usage(prompt, 1000, cache_write_tokens=prompt)) * (
        1 if isinstance(plan, Single) else 2)
    assert worst_case_cost(plan, prompt, WRITING_CATALOG, None) >= every_call_writes


# claude-sonnet-4-5 again: a prompt written to live an hour is billed 2× the input price.
HOUR = DeploymentPrice(3e-6, 15e-6, "litellm", cache_read_per_token=3e-7, cache_write_per_token=3.75e-6,
                       cache_write_1h_per_token=6e-6)
HOUR_CATALOG = Catalog(DEPLOYMENTS, {"big": HOUR, "other": HOUR})


@pytest.mark.parametrize("plan", [Single("big", ("other",)), BestOfN(("big", "other"))])
def test_a_prompt_written_to_live_an_hour_is_held_at_the_one_hour_write_price(plan: Single | BestOfN) -> None:
    prompt = 100_000
    every_call_writes_for_an_hour = HOUR.cost(
        Usage(prompt, 1000, cache_write_tokens=prompt, cache_write_1h_tokens=prompt)) * (
        1 if isinstance(plan, Single) else 2)
    assert worst_case_cost(plan, prompt, HOUR_CATALOG, None) >= every_call_writes_for_an_hour
