"""Prices: cached prompt tokens, prompt-cache writes and long-context tiers, as the provider bills them.

Figures from litellm's cost map (model_prices_and_context_window_backup.json), per token:
gpt-4o: input 2.5e-6, cache read 1.25e-6, output 1e-5.
gemini/gemini-2.5-pro: input 1.25e-6, cache read 1.25e-7, output 1e-5; above 200k prompt tokens
input 2.5e-6, cache read 2.5e-7, output 1.5e-5.
claude-sonnet-4-5: input 3e-6, cache read 3e-7, cache write 3.75e-6, output 1.5e-5.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import DeploymentConfig
from gateway.providers.base import Usage
from gateway.providers.pricing import load_litellm_cost_map, price_for, price_from_cost_map

GPT_4O = {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06,
          "input_cost_per_token_batches": 1.25e-06, "output_cost_per_token_priority": 1.7e-05}
GEMINI_25_PRO = {"input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
                 "cache_read_input_token_cost": 1.25e-07, "input_cost_per_token_above_200k_tokens": 2.5e-06,
                 "output_cost_per_token_above_200k_tokens": 1.5e-05,
                 "cache_read_input_token_cost_above_200k_tokens": 2.5e-07,
                 "input_cost_per_token_above_200k_tokens_priority": 4.5e-06}
CLAUDE_SONNET_45 = {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                    "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06,
                    "cache_creation_input_token_cost_above_1hr": 6e-06}


def test_cached_prompt_tokens_are_billed_at_the_cache_read_price() -> None:
    # 250k prompt tokens, 150k of them cached, 1k out: 100k * 2.5e-6 + 150k * 1.25e-6 + 1k * 1e-5
    usage = Usage.from_dict({"prompt_tokens": 250_000, "completion_tokens": 1_000, "total_tokens": 251_000,
                             "prompt_tokens_details": {"cached_tokens": 150_000}})
    assert usage.cached_tokens == 150_000
    assert price_from_cost_map(GPT_4O).cost(usage) == pytest.approx(0.4475, abs=1e-12)
    uncached = Usage(250_000, 1_000)
    assert price_from_cost_map(GPT_4O).cost(uncached) == pytest.approx(0.635, abs=1e-12)


def test_the_shipped_cost_map_bills_gpt_4o_cached_tokens_like_the_provider() -> None:
    cost_map = load_litellm_cost_map()
    if "gpt-4o" not in cost_map:
        pytest.skip("litellm's cost map is not installed")
    gpt_4o = DeploymentConfig(name="large", model="openai/gpt-4o")
    price = price_for(gpt_4o, cost_map)
    assert price.source == "litellm"
    assert price.cost(Usage(250_000, 1_000, cached_tokens=150_000)) == pytest.approx(0.4475, abs=1e-12)


def test_a_long_prompt_is_priced_whole_at_its_tier() -> None:
    price = price_from_cost_map(GEMINI_25_PRO)
    # over 200k: 100k * 2.5e-6 + 150k cached * 2.5e-7 + 1k * 1.5e-5
    assert price.cost(Usage(250_000, 1_000, cached_tokens=150_000)) == pytest.approx(0.3025, abs=1e-12)
    # under it: 50k * 1.25e-6 + 100k cached * 1.25e-7 + 1k * 1e-5
    assert price.cost(Usage(150_000, 1_000, cached_tokens=100_000)) == pytest.approx(0.085, abs=1e-12)
    # the threshold itself is still the lower tier
    assert price.cost(Usage(200_000, 0)) == pytest.approx(200_000 * 1.25e-6)
    assert price.estimate(250_000, 1_000) == pytest.approx(250_000 * 2.5e-6 + 1_000 * 1.5e-5)


def test_prompt_cache_writes_are_billed_at_the_cache_write_price() -> None:
    # as litellm reports an Anthropic answer: prompt_tokens counts reads and writes too
    raw: dict[str, Any] = {"prompt_tokens": 16_000, "completion_tokens": 500, "total_tokens": 16_500,
                           "prompt_tokens_details": {"cached_tokens": 10_000, "cache_creation_tokens": 5_000},
                           "cache_creation_input_tokens": 5_000, "cache_read_input_tokens": 10_000}
    usage = Usage.from_dict(raw)
    assert (usage.cached_tokens, usage.cache_write_tokens) == (10_000, 5_000)
    # 1k * 3e-6 + 10k * 3e-7 + 5k * 3.75e-6 + 500 * 1.5e-5
    assert price_from_cost_map(CLAUDE_SONNET_45).cost(usage) == pytest.approx(0.03225, abs=1e-12)


def test_anthropic_style_top_level_cache_fields_are_read_without_details() -> None:
    usage = Usage.from_dict({"prompt_tokens": 100, "completion_tokens": 5, "cache_read_input_tokens": 60,
                             "cache_creation_input_tokens": 30})
    assert (usage.cached_tokens, usage.cache_write_tokens) == (60, 30)


def test_a_model_without_cache_prices_bills_cached_tokens_as_input() -> None:
    price = price_from_cost_map({"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6})
    assert price.cost(Usage(1_000, 10, cached_tokens=800, cache_write_tokens=100)) == pytest.approx(1_000e-6 + 20e-6)


def test_the_config_price_can_set_cached_and_cache_write_prices() -> None:
    dep = DeploymentConfig.model_validate({
        "name": "self", "model": "openai/llama",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cached_input_per_mtok": 0.1,
                  "cache_write_per_mtok": 1.25}})
    price = price_for(dep, None)
    assert price.source == "config"
    assert price.cost(Usage(1_000_000, 1_000_000, cached_tokens=500_000, cache_write_tokens=100_000)) == \
        pytest.approx(0.4 + 0.05 + 0.125 + 2.0)
    plain = DeploymentConfig.model_validate({"name": "p", "model": "openai/llama",
                                             "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}})
    assert price_for(plain, None).cost(Usage(1_000_000, 0, cached_tokens=500_000)) == pytest.approx(1.0)


def test_usage_keeps_cache_counts_through_sums_and_the_response_body() -> None:
    total = Usage(100, 10, cached_tokens=40) + Usage(50, 5, cached_tokens=10, cache_write_tokens=20)
    assert total == Usage(150, 15, 50, 20)
    body = total.as_dict()
    assert body["prompt_tokens_details"] == {"cached_tokens": 50, "audio_tokens": 0} and body["total_tokens"] == 165
    assert Usage.from_dict(body) == total
    # Both details objects always, as OpenAI sends them; only the nonzero ones in the gateway's brief form.
    assert Usage(3, 4).as_dict() == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                                     "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                                     "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                                   "accepted_prediction_tokens": 0,
                                                                   "rejected_prediction_tokens": 0}}
    assert Usage(3, 4).as_dict(brief=True) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


# A prompt-cache write that lives an hour costs more than a 5-minute one: Anthropic bills 2× the input
# price against 1.25×; litellm's map names it `cache_creation_input_token_cost_above_1hr`.
ANTHROPIC_SPLIT: dict[str, Any] = {  # Anthropic's own shape, beside the OpenAI counts
    "prompt_tokens": 16_000, "completion_tokens": 500, "cache_read_input_tokens": 10_000,
    "cache_creation_input_tokens": 5_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 4_000}}
LITELLM_SPLIT: dict[str, Any] = {  # as litellm's Usage dumps an Anthropic answer
    "prompt_tokens": 16_000, "completion_tokens": 500, "cache_creation_input_tokens": 5_000,
    "cache_read_input_tokens": 10_000,
    "prompt_tokens_details": {"cached_tokens": 10_000, "cache_creation_tokens": 5_000, "cache_write_tokens": 5_000,
                              "cache_creation_token_details": {"ephemeral_5m_input_tokens": 1_000,
                                                               "ephemeral_30m_input_tokens": None,
                                                               "ephemeral_1h_input_tokens": 4_000}}}
# 1k * 3e-6 + 10k * 3e-7 + 1k * 3.75e-6 + 4k * 6e-6 + 500 * 1.5e-5
SPLIT_COST = 1_000 * 3e-6 + 10_000 * 3e-7 + 1_000 * 3.75e-6 + 4_000 * 6e-6 + 500 * 1.5e-5


@pytest.mark.parametrize("raw", [ANTHROPIC_SPLIT, LITELLM_SPLIT], ids=["anthropic", "litellm"])
def test_one_hour_cache_writes_are_billed_at_the_one_hour_write_price(raw: dict[str, Any]) -> None:
    usage = Usage.from_dict(raw)
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (5_000, 4_000)
    assert price_from_cost_map(CLAUDE_SONNET_45).cost(usage) == pytest.approx(SPLIT_COST, abs=1e-12)


def test_the_shipped_cost_map_bills_one_hour_writes_like_anthropic() -> None:
    cost_map = load_litellm_cost_map()
    if "claude-sonnet-4-5" not in cost_map:
        pytest.skip("litellm's cost map is not installed")
    price = price_for(DeploymentConfig(name="sonnet", model="anthropic/claude-sonnet-4-5"), cost_map)
    assert price.cost(Usage.from_dict(ANTHROPIC_SPLIT)) == pytest.approx(SPLIT_COST, abs=1e-12)


def test_a_long_prompt_bills_one_hour_writes_at_its_tier() -> None:
    # litellm's map for Bedrock's claude-sonnet-4-5: the 1-hour write rate has its own 200k tier
    entry = {**CLAUDE_SONNET_45, "input_cost_per_token_above_200k_tokens": 6e-06,
             "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
             "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05}
    price = price_from_cost_map(entry)
    assert price.rates(250_000).cache_write_1h == pytest.approx(1.2e-5)
    assert price.cost(Usage(250_000, 0, cache_write_tokens=250_000, cache_write_1h_tokens=250_000)) == \
        pytest.approx(250_000 * 1.2e-5)
    # a tier that raises the 5-minute write rate without naming the 1-hour one never bills an hour for less
    unnamed = {k: v for k, v in entry.items() if "1hr_above" not in k}
    assert price_from_cost_map(unnamed).rates(250_000).cache_write_1h == pytest.approx(7.5e-6)


def test_the_config_price_can_set_the_one_hour_write_price_else_it_is_the_write_price() -> None:
    usage = Usage(1_000_000, 0, cache_write_tokens=1_000_000, cache_write_1h_tokens=600_000)
    given = DeploymentConfig.model_validate({
        "name": "self", "model": "openai/llama",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cache_write_per_mtok": 1.25,
                  "cache_write_1h_per_mtok": 2.0}})
    assert price_for(given, None).cost(usage) == pytest.approx(0.4 * 1.25 + 0.6 * 2.0)
    assert price_for(given, None).bound(1_000_000, 0) == pytest.approx(2.0)
    default = DeploymentConfig.model_validate({
        "name": "self", "model": "openai/llama",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cache_write_per_mtok": 1.25}})
    assert price_for(default, None).cost(usage) == pytest.approx(1.25)


def test_priority_scales_the_one_hour_write_price_too() -> None:
    price = price_from_cost_map(CLAUDE_SONNET_45)
    hour = Usage(1_000, 0, cache_write_tokens=1_000, cache_write_1h_tokens=1_000, service_tier="priority")
    assert price.cost(hour) == pytest.approx(1_000 * 6e-6 * 2)


def test_usage_keeps_one_hour_writes_through_sums_and_the_response_body() -> None:
    total = Usage.from_dict(ANTHROPIC_SPLIT) + Usage(100, 1, cache_write_tokens=50, cache_write_1h_tokens=20)
    assert (total.cache_write_tokens, total.cache_write_1h_tokens) == (5_050, 4_020)
    body = total.as_dict()
    assert body["cache_creation"] == {"ephemeral_5m_input_tokens": 1_030, "ephemeral_1h_input_tokens": 4_020}
    assert Usage.from_dict(body) == total
    # a split that counts more writes than the total is believed: no reported write goes unbilled
    over = Usage.from_dict({"prompt_tokens": 100, "completion_tokens": 0, "cache_creation_input_tokens": 10,
                            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 30}})
    assert (over.cache_write_tokens, over.cache_write_1h_tokens) == (40, 30)


def test_a_token_count_that_is_no_whole_number_of_tokens_counts_nothing() -> None:
    """An upstream's text count broke the stream's relay with a traceback, and a negative one was billed as a
    credit (a spend report that went negative): both count as a count it did not send."""
    usage = Usage.from_dict({"prompt_tokens": -1_000_000, "completion_tokens": "many", "prompt_tokens_details":
                             {"cached_tokens": float("nan")}, "completion_tokens_details": {"reasoning_tokens": True}})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens) == (0, 0, 0, 0)
    assert Usage.from_dict({"prompt_tokens": 12, "completion_tokens": 7.0}).completion_tokens == 7
    # one count that is no count: the whole usage is set aside and the call billed on the gateway's own
    # count, as one without usage (trusting the other count alone billed no prompt at all)
    assert Usage.from_dict({"prompt_tokens": "1000", "completion_tokens": 5}).total_tokens == 0
