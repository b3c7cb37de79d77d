"""Audio prompt tokens (`input_audio` parts) cost their own rate: billed at it when the provider's usage
counts them, and held at it (the media estimate of the prompt's audio) by budgets, cost caps and the
prices that choose a plan. A deployment with no known audio rate cannot price them.

Figures from litellm's cost map (model_prices_and_context_window_backup.json), per token:
gpt-4o-audio-preview-2025-06-03: text input 2.5e-6, audio input 4e-5, output 1e-5.
gemini-2.5-flash: text input 3e-7, audio input 1e-6; priority 5.4e-7 and 1.8e-6.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.config import DeploymentConfig, parse_config
from gateway.media_tokens import messages_audio_tokens, split_parts_tokens
from gateway.messages import count_messages, prompt_bound, routing_counts
from gateway.plans import Single
from gateway.plans.base import Catalog
from gateway.policy import decide, worst_case_billed, worst_case_cost
from gateway.providers.base import Usage
from gateway.providers.health import LiveView
from gateway.providers.pricing import (
    PRIORITY_MULTIPLIER,
    DeploymentPrice,
    load_litellm_cost_map,
    price_for,
    price_from_cost_map,
)
from gateway.providers.terms import PLAIN, Terms, terms_of, with_audio_input
from tests.support.policy_lab import CATALOG, policy_from, signal

AUDIO_4O = {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "input_cost_per_audio_token": 4e-05,
            "output_cost_per_audio_token": 8e-05}
FLASH = {"input_cost_per_token": 3e-07, "output_cost_per_token": 2.5e-06, "input_cost_per_audio_token": 1e-06,
         "input_cost_per_token_priority": 5.4e-07, "output_cost_per_token_priority": 4.5e-06,
         "input_cost_per_audio_token_priority": 1.8e-06, "input_cost_per_token_flex": 1.5e-07,
         "output_cost_per_token_flex": 1.25e-06}
GPT_4O = {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
          "input_cost_per_token_priority": 4.25e-06, "output_cost_per_token_priority": 1.7e-05}
CLIP = {"type": "input_audio", "input_audio": {"data": "SUQz" * 10_000, "format": "mp3"}}  # 30 KB: 960 tokens
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
HEARD = 960


def _config_price(**price: float) -> DeploymentPrice:
    raw = {"deployments": [{"name": "self", "model": "hosted_vllm/qwen-audio", "api_base": "http://x", "tier": "t",
                            "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, **price}}]}
    return price_for(parse_config(raw, "audio").deployments[0], None)


def test_audio_prompt_tokens_in_the_usage_are_billed_at_the_audio_rate() -> None:
    """1,000 prompt tokens of which 800 audio: $0.0325 at gpt-4o-audio's rates; the gateway billed all
    1,000 at the text rate, $0.0025 (8% of the bill)."""
    price = price_from_cost_map(AUDIO_4O)
    usage = Usage.from_dict({"prompt_tokens": 1_000, "completion_tokens": 10,
                             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 800}})
    assert usage.prompt_audio_tokens == 800
    assert price.cost(usage) == pytest.approx(200 * 2.5e-06 + 800 * 4e-05 + 10 * 1e-05)
    # kept through sums of calls and in the usage reported to the client
    assert (usage + usage).prompt_audio_tokens == 1_600
    assert usage.as_dict()["prompt_tokens_details"]["audio_tokens"] == 800
    assert Usage.from_dict(usage.as_dict()) == usage


def test_a_service_tier_bills_its_own_audio_rate_else_priority_at_twice_the_standard() -> None:
    flash = price_from_cost_map(FLASH)
    audio = Usage(1_000, 0, prompt_audio_tokens=1_000, service_tier="priority")
    assert flash.cost(audio) == pytest.approx(1_000 * 1.8e-06)
    assert flash.at_tier("flex").audio_input_per_token == pytest.approx(1e-06)  # flex names none: standard
    # a map entry with priority rates but none for audio; a config price with no tiers at all
    assert price_from_cost_map({**AUDIO_4O, **GPT_4O}).at_tier("priority").audio_input_per_token == \
        pytest.approx(4e-05 * PRIORITY_MULTIPLIER)
    assert _config_price(audio_input_per_mtok=40.0).at_tier("priority").audio_input_per_token == \
        pytest.approx(8e-05)


def test_a_config_price_sets_the_audio_input_rate() -> None:
    price = _config_price(audio_input_per_mtok=40.0)
    assert price.audio_input_per_token == pytest.approx(4e-05)
    assert price.cost(Usage(1_000, 0, prompt_audio_tokens=1_000)) == pytest.approx(0.04)
    assert price.under(Terms(audio_input=1_000)).estimate(1_000, 0) == pytest.approx(0.04)
    assert _config_price().audio_input_per_token is None  # not set: unknown, not the text rate


def test_the_worst_case_holds_the_prompt_s_audio_at_the_audio_rate() -> None:
    """960 audio tokens of 1,000 prompt tokens and 100 output: held at $0.0025 + $0.001 output before,
    billed up to $0.0395."""
    price = price_from_cost_map(AUDIO_4O)
    held = price.under(Terms(audio_input=HEARD)).estimate(1_000, 100)
    assert held == pytest.approx(40 * 2.5e-06 + HEARD * 4e-05 + 100 * 1e-05)
    assert held >= price.cost(Usage(1_000, 100, prompt_audio_tokens=HEARD))
    # with the other terms: priority (no priority rates here: twice everything) and audio output
    priority = price.under(Terms(tier="priority", audio=True, audio_input=HEARD)).estimate(1_000, 100)
    assert priority == pytest.approx(2 * (40 * 2.5e-06 + HEARD * 4e-05 + 100 * 8e-05))
    assert price.under(PLAIN).estimate(1_000, 100) == pytest.approx(1_000 * 2.5e-06 + 100 * 1e-05)


def test_a_prompt_s_audio_at_a_deployment_with_no_audio_rate_is_unpriced() -> None:
    """gpt-4o's cost map entry names no audio rate, nor does a config price without
    `audio_input_per_mtok`: the audio cannot be held at a known price, so it is marked unpriced (refused
    under a budget or cost cap, as an unpriced web search is), and held at the text rate meanwhile."""
    for price in (price_from_cost_map(GPT_4O), _config_price()):
        held = price.under(Terms(audio_input=HEARD))
        assert held.unpriced == "input_audio"
        assert held.estimate(1_000, 0) == pytest.approx(price.estimate(1_000, 0))
        assert price.under(PLAIN).unpriced is None
    # a search without a fee is named first, either way refused
    searching = terms_of({"web_search_options": {}})
    assert price_from_cost_map(GPT_4O).under(with_audio_input(searching, HEARD)).unpriced == "web_search_options"
    assert price_from_cost_map(AUDIO_4O).under(Terms(audio_input=HEARD)).unpriced is None


def test_the_catalog_under_an_audio_prompt_prices_every_plan_at_the_audio_rate() -> None:
    deployment = DeploymentConfig(name="a", model="openai/gpt-4o-audio-preview", tier="t", max_output_tokens=100,
                                  max_retries=1)
    catalog = Catalog({"a": deployment}, {"a": price_from_cost_map(AUDIO_4O)})
    heard = catalog.under(Terms(audio_input=HEARD))
    call = 1_000 * 2.5e-06 + HEARD * (4e-05 - 2.5e-06) + 100 * 1e-05
    assert worst_case_cost(Single("a"), 1_000, heard, None) == pytest.approx(call)
    assert worst_case_billed(Single("a"), 1_000, heard, None, within_s=1e9) == pytest.approx(2 * call)  # a retry
    # counts vary by request: each is priced apart, none is kept, nor prepared for the policy
    assert heard is not catalog.under(Terms(audio_input=HEARD)) and not catalog.priced
    assert heard.transient and not catalog.transient


def test_the_plan_chosen_for_an_audio_prompt_is_priced_with_its_audio(tmp_path: Path) -> None:
    """`large` answers better but bills audio at $100/M: for 960 audio tokens ($0.096) its utility falls
    below `small`'s (audio at its text rate). Single candidates are priced from a table prepared per
    catalog, without the request's fees: a catalog with a fee per call is priced by the plan kind."""
    prices = dict(CATALOG.prices)
    prices["large"] = replace(prices["large"], audio_input_per_token=1e-04)
    prices["small"] = replace(prices["small"], audio_input_per_token=prices["small"].input_per_token)
    catalog = Catalog(CATALOG.deployments, prices)
    policy = policy_from(tmp_path, "candidates:\n  - single: small\n  - single: large\nobjective: {value_usd: 0.002}\n")
    heard = signal(0.2, 0.9, 1_000)
    assert decide(policy, heard, catalog, LiveView()).plan.label == "single:large"
    assert decide(policy, heard, catalog.under(Terms(audio_input=HEARD)), LiveView()).plan.label == "single:small"


def test_the_prompt_s_audio_is_counted_apart_where_the_prompt_is_counted() -> None:
    assert split_parts_tokens([CLIP, IMAGE, {"type": "text", "text": "hi"}]) == (HEARD + 1_600, HEARD)
    messages = [{"role": "system", "content": "Transcribe."}, {"role": "user", "content": [CLIP, IMAGE]},
                {"role": "user", "content": [CLIP]}]
    _, tokens, audio = routing_counts(messages)
    assert tokens == count_messages(messages) and audio == 2 * HEARD == messages_audio_tokens(messages)
    bound, bound_audio = prompt_bound(messages)
    assert bound >= tokens and bound_audio == 2 * HEARD
    assert routing_counts([{"role": "user", "content": "no audio"}])[2] == 0


def test_terms_with_no_audio_prompt_stay_plain() -> None:
    assert with_audio_input(PLAIN, 0) is PLAIN
    assert with_audio_input(PLAIN, 10) == Terms(audio_input=10)
    assert with_audio_input(terms_of({"service_tier": "priority"}), 10) == Terms("priority", audio_input=10)


def test_the_cost_map_file_prices_audio_input() -> None:
    cost_map = load_litellm_cost_map()
    if not cost_map:
        pytest.skip("litellm's cost map is not installed")
    assert price_from_cost_map(cost_map["gpt-4o-audio-preview-2025-06-03"]).audio_input_per_token == \
        pytest.approx(4e-05)
    assert price_from_cost_map(cost_map["gpt-4o"]).audio_input_per_token is None
