"""A deployment's predicted latency is its own pace, not the length of other clients' answers: one
client asking for long answers cannot make a latency constraint (`latency_slo_ms`) refuse, or route
elsewhere, everyone else's short ones; a deployment that is really slower than configured still is."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.lab import lab_gateway, simulator_of
from tests.support.processes import Simulator

HI = [{"role": "user", "content": "hi"}]
# Both answer 400 tokens unless cut by max_tokens. `talky` is as fast as configured (400 tokens/s);
# `sluggish` is configured at 400 tokens/s too but writes 40.
MODELS = [{"name": "sim-talky", "ability": 1.0, "ttft_ms": 20, "tokens_per_s": 400, "output_tokens": 400},
          {"name": "sim-sluggish", "ability": 1.0, "ttft_ms": 20, "tokens_per_s": 40, "output_tokens": 400}]
SLA = {"candidates": [{"single": "talky"}], "constraints": {"latency_slo_ms": 800}, "cache": {"enabled": False}}
SLOW_SLA = {**SLA, "candidates": [{"single": "sluggish"}], "constraints": {"latency_slo_ms": 200}}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with simulator_of(MODELS, tmp_path_factory.mktemp("sim")) as sim:
        yield from _gateway(sim, tmp_path_factory.mktemp("gw"))


def _gateway(sim: Simulator, folder: Path) -> Iterator[str]:
    deployments = {"talky": ("sim-talky", "small"), "sluggish": ("sim-sluggish", "large")}
    with lab_gateway(sim, folder, {"sla": SLA, "slow-sla": SLOW_SLA}, deployments, max_retries=0,
                     expected_ttft_ms=20, expected_tokens_per_s=400, expected_output_tokens=20) as base:
        yield base


def _ask(client: openai.OpenAI, model: str, max_tokens: int) -> Any:
    return client.chat.completions.create(model=model, messages=HI, max_tokens=max_tokens)


def test_long_answers_do_not_make_a_deployment_look_too_slow_for_short_ones(url: str) -> None:
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    assert _ask(client, "router/sla", 10).choices[0].message.content  # ~45 ms predicted and taken
    with ThreadPoolExecutor(8) as pool:  # one client's eight long answers, about a second each
        long = list(pool.map(lambda _: _ask(client, "talky", 400), range(8)))
    assert all(a.usage.completion_tokens == 400 for a in long)
    # Once, the deployment's predicted latency was the moving average of whole calls: ~1 s, past the
    # 800 ms objective, so every short request under the policy was refused (422).
    for _ in range(3):
        assert _ask(client, "router/sla", 10).choices[0].message.content


def test_a_deployment_slower_than_configured_is_still_predicted_slow(url: str) -> None:
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    assert _ask(client, "router/slow-sla", 10).choices[0].message.content  # nothing observed yet: ~45 ms
    for _ in range(3):  # answers at a tenth of the configured speed: ~270 ms for 10 tokens
        _ask(client, "sluggish", 10)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        _ask(client, "router/slow-sla", 10)
    assert "latency_slo_ms" in refused.value.message
