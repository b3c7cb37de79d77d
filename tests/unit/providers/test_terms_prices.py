"""Request fields that change what a provider bills: `service_tier`, `web_search_options` and audio
output, priced as the provider bills them and held at their worst case.

Figures from litellm's cost map (model_prices_and_context_window_backup.json), per token:
gpt-4o: input 2.5e-6, output 1e-5; priority input 4.25e-6, cache read 2.125e-6, output 1.7e-5.
gpt-5: input 1.25e-6, output 1e-5; flex 6.25e-7 / 5e-6; priority 2.5e-6 / 2e-5.
gpt-4.1: $0.025 a web search query at every context size.
gpt-4o-audio-preview-2024-12-17: text output 1e-5, audio output 8e-5.
"""

from __future__ import annotations

import pytest

from gateway.config import DeploymentConfig
from gateway.plans import Single
from gateway.plans.base import Catalog
from gateway.policy import worst_case_cost
from gateway.providers.base import Usage
from gateway.providers.pricing import PRIORITY_MULTIPLIER, load_litellm_cost_map, price_for, price_from_cost_map
from gateway.providers.terms import PLAIN, Terms, terms_of

GPT_4O = {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06,
          "input_cost_per_token_priority": 4.25e-06, "output_cost_per_token_priority": 1.7e-05,
          "cache_read_input_token_cost_priority": 2.125e-06, "input_cost_per_token_batches": 1.25e-06}
GPT_5 = {"input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05, "input_cost_per_token_flex": 6.25e-07,
         "output_cost_per_token_flex": 5e-06, "input_cost_per_token_priority": 2.5e-06,
         "output_cost_per_token_priority": 2e-05}
GPT_41 = {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
          "search_context_cost_per_query": {"search_context_size_low": 0.025, "search_context_size_medium": 0.025,
                                            "search_context_size_high": 0.025}}
AUDIO_PREVIEW = {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                 "output_cost_per_audio_token": 8e-05}
# a long-context model whose priority tier names no long-context rates (gpt-5.4's shape)
LONG = {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1.5e-05,
        "input_cost_per_token_above_272k_tokens": 5e-06, "output_cost_per_token_above_272k_tokens": 2.25e-05,
        "input_cost_per_token_priority": 4e-06, "output_cost_per_token_priority": 2e-05}
PRIORITY = terms_of({"service_tier": "priority"})


def test_a_priority_answer_is_billed_at_the_priority_rates() -> None:
    """1,000 prompt and 1,000 output tokens of gpt-4o: $0.0125 at the standard rates, $0.02125 billed
    at priority (the gateway billed every tier at the standard rates)."""
    price = price_from_cost_map(GPT_4O)
    assert price.cost(Usage(1_000, 1_000)) == pytest.approx(0.0125)
    assert price.cost(Usage(1_000, 1_000, service_tier="priority")) == pytest.approx(0.02125)
    # cached prompt tokens at priority's cache-read rate
    assert price.cost(Usage(1_000, 0, cached_tokens=1_000, service_tier="priority")) == pytest.approx(0.002125)


def test_the_tier_the_answer_reports_wins_over_the_one_asked() -> None:
    price = price_from_cost_map(GPT_4O)
    # asked priority, ran (and billed) at the default tier
    assert price.cost(Usage(1_000, 1_000, service_tier="default"), PRIORITY) == pytest.approx(0.0125)
    # no tier reported (a counted usage, an "auto" echo): billed at the tier asked
    assert price.cost(Usage(1_000, 1_000), PRIORITY) == pytest.approx(0.02125)
    assert price.cost(Usage(1_000, 1_000, service_tier="auto"), PRIORITY) == pytest.approx(0.02125)
    # a project whose default tier is priority: billed as the answer says, even if nobody asked
    assert price.cost(Usage(1_000, 1_000, service_tier="priority")) == pytest.approx(0.02125)


def test_flex_is_billed_at_the_flex_rates_and_never_below_standard_without_them() -> None:
    assert price_from_cost_map(GPT_5).cost(Usage(1_000, 1_000, service_tier="flex")) == pytest.approx(0.005625)
    assert price_from_cost_map(GPT_4O).cost(Usage(1_000, 1_000, service_tier="flex")) == pytest.approx(0.0125)


def test_a_deployment_without_priority_rates_bills_priority_at_twice_its_standard() -> None:
    config = DeploymentConfig(name="own", model="openai/own", tier="t",
                              price={"input_per_mtok": 1.0, "output_per_mtok": 2.0})
    price = price_for(config, None)
    assert price.cost(Usage(1_000, 1_000, service_tier="priority")) == pytest.approx(0.003 * PRIORITY_MULTIPLIER)
    assert price.under(PRIORITY).estimate(1_000, 1_000) == pytest.approx(0.003 * PRIORITY_MULTIPLIER)


def test_a_priority_tier_without_long_context_rates_is_never_below_the_standard_ones() -> None:
    price = price_from_cost_map(LONG)
    above = Usage(300_000, 1_000, service_tier="priority")
    assert price.cost(above) == pytest.approx(300_000 * 5e-06 + 1_000 * 2.25e-05)  # standard's, dearer there
    assert price.cost(Usage(1_000, 1_000, service_tier="priority")) == pytest.approx(1_000 * 4e-06 + 1_000 * 2e-05)


@pytest.mark.parametrize("asked", ["priority", "auto", "scale", "something-new"])
def test_the_worst_case_of_a_tier_the_provider_may_pick_is_priority(asked: str) -> None:
    price = price_from_cost_map(GPT_4O)
    assert price.under(terms_of({"service_tier": asked})).estimate(1_000, 1_000) == pytest.approx(0.02125)
    assert price.under(terms_of({"service_tier": "default"})).estimate(1_000, 1_000) == pytest.approx(0.0125)


def test_a_web_search_adds_its_per_query_fee_to_the_bill_and_the_worst_case() -> None:
    """gpt-4.1 with web search, 20 prompt and 10 output tokens: $0.00012 in tokens, $0.025 for the
    query (the gateway billed the $0.00012)."""
    price = price_from_cost_map(GPT_41)
    search = terms_of({"web_search_options": {}})
    assert search == Terms(search="medium")
    assert price.cost(Usage(20, 10), search) == pytest.approx(0.02512)
    assert price.under(search).estimate(20, 10) == pytest.approx(0.02512)
    assert price.under(search).unpriced is None
    assert price.cost(Usage(20, 10)) == pytest.approx(0.00012)


def test_a_web_search_where_no_per_query_price_is_known_is_marked_unpriced() -> None:
    price = price_from_cost_map(GPT_4O)
    assert price.under(terms_of({"web_search_options": {"search_context_size": "low"}})).unpriced == \
        "web_search_options"
    assert price.under(PRIORITY).unpriced is None


def test_audio_output_tokens_are_billed_at_the_audio_rate() -> None:
    """1,000 output tokens of which 800 audio: $0.066, not the $0.01 of 1,000 text tokens."""
    price = price_from_cost_map(AUDIO_PREVIEW)
    usage = Usage.from_dict({"prompt_tokens": 0, "completion_tokens": 1_000,
                             "completion_tokens_details": {"audio_tokens": 800}})
    assert usage.audio_tokens == 800
    assert price.cost(usage) == pytest.approx(200 * 1e-05 + 800 * 8e-05)


def test_the_worst_case_of_audio_output_prices_every_output_token_as_audio() -> None:
    price = price_from_cost_map(AUDIO_PREVIEW)
    audio = terms_of({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}})
    assert audio == Terms(audio=True)
    assert price.under(audio).estimate(0, 1_000) == pytest.approx(0.08)
    assert price.under(terms_of({"modalities": ["text"]})).estimate(0, 1_000) == pytest.approx(0.01)


def test_the_cost_map_file_prices_the_tiers_search_and_audio() -> None:
    cost_map = load_litellm_cost_map()
    if not cost_map:
        pytest.skip("litellm's cost map is not installed")
    assert price_from_cost_map(cost_map["gpt-4o"]).cost(Usage(1_000, 1_000, service_tier="priority")) == \
        pytest.approx(0.02125)
    assert price_from_cost_map(cost_map["gpt-4.1"]).search_fee("medium") == pytest.approx(0.025)
    assert price_from_cost_map(cost_map["gpt-4o-audio-preview-2024-12-17"]).audio_output_per_token == \
        pytest.approx(8e-05)


def test_a_request_without_priced_fields_is_plain() -> None:
    assert terms_of({"model": "m", "messages": []}) is PLAIN
    assert terms_of({"service_tier": "default", "modalities": ["text"]}) is PLAIN
    assert terms_of({"web_search_options": None}) is PLAIN


def test_the_worst_case_of_a_plan_uses_the_catalog_under_the_request_terms() -> None:
    deployment = DeploymentConfig(name="4o", model="openai/gpt-4o", tier="t", max_output_tokens=1_000)
    catalog = Catalog({"4o": deployment}, {"4o": price_from_cost_map(GPT_4O)})
    assert catalog.under(PLAIN) is catalog
    assert worst_case_cost(Single("4o"), 1_000, catalog, None) == pytest.approx(0.0125)
    assert worst_case_cost(Single("4o"), 1_000, catalog.under(PRIORITY), None) == pytest.approx(0.02125)
    assert catalog.under(PRIORITY) is catalog.under(terms_of({"service_tier": "auto"}))  # worked out once


def test_audio_output_where_no_audio_rate_is_known_is_marked_unpriced() -> None:
    """gpt-4o's entry names no audio output rate, nor does a config price without audio_output_per_mtok:
    audio asked of them was held and billed at the text output rate (gpt-4o-audio-preview's audio is 8×)."""
    audio = terms_of({"modalities": ["text", "audio"]})
    assert price_from_cost_map(GPT_4O).under(audio).unpriced == "modalities"
    assert price_from_cost_map(AUDIO_PREVIEW).under(audio).unpriced is None
    both = terms_of({"modalities": ["audio"], "web_search_options": {}})
    assert price_from_cost_map(GPT_4O).under(both).unpriced == "web_search_options"  # named first
    config = DeploymentConfig.model_validate({"name": "voice", "model": "openai/voice", "api_base": "http://x",
                                              "price": {"input_per_mtok": 1, "output_per_mtok": 2}})
    assert price_for(config, None).under(audio).unpriced == "modalities"
    priced = config.model_copy(update={"price": config.price.model_copy(update={"audio_output_per_mtok": 16.0})})
    held = price_for(priced, None).under(audio)
    assert held.unpriced is None and held.estimate(0, 1_000) == pytest.approx(0.016)
    assert price_for(priced, None).cost(Usage.from_dict({"prompt_tokens": 0, "completion_tokens": 100,
                                                         "completion_tokens_details": {"audio_tokens": 100}})) \
        == pytest.approx(100 * 16e-6)
