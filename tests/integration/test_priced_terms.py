"""Request fields that change what the provider bills (`service_tier`, `web_search_options`), over
real HTTP with the `openai` SDK: billed and reported at what the provider charges, and held at their
worst case before any upstream call.

The deployments carry no `price:`: they are priced from litellm's cost map, as gpt-4o and gpt-4.1
(simulated models of those names answer; the simulator reports the tier it was asked for).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.providers.pricing import load_litellm_cost_map
from tests.support.lab import BUDGET_KEY, budgeted_gateway, simulator_of
from tests.support.processes import Simulator

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
DEPLOYMENTS = {"4o": ("gpt-4o", {"price": None, "max_retries": 0}),
               "41": ("gpt-4.1", {"price": None, "max_retries": 0})}
POLICY = {"candidates": [{"single": "4o"}]}

pytestmark = pytest.mark.skipif(not load_litellm_cost_map(), reason="litellm's cost map is not installed")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    models = [{"name": n, "ability": 2.0, "ttft_ms": 0, "tokens_per_s": 0, "output_tokens": 30}
              for n in ("gpt-4o", "gpt-4.1")]
    with simulator_of(models, tmp_path_factory.mktemp("sim")) as simulator:
        yield simulator


def test_a_priority_request_is_reported_and_billed_at_the_priority_rates(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-4o at priority bills input 4.25e-6 and output 1.7e-5 a token (standard: 2.5e-6, 1e-5): the
    gateway reported and charged the standard rates, 59% of the bill."""
    with budgeted_gateway(sim, tmp_path, monkeypatch, 10.0, POLICY, DEPLOYMENTS) as gw:
        raw = gw.client.chat.completions.with_raw_response.create(
            model="4o", messages=QUESTION, max_tokens=30, service_tier="priority")  # type: ignore[arg-type]
        reply = raw.parse()
        assert reply.service_tier == "priority" and reply.usage is not None
        usage = reply.usage
        priority = usage.prompt_tokens * 4.25e-6 + usage.completion_tokens * 1.7e-5
        assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(priority, rel=1e-6)
        assert gw.spent() == pytest.approx(priority, rel=1e-6)
        # flex is not offered for gpt-4o in the cost map: billed at the standard rates, never below
        raw = gw.client.chat.completions.with_raw_response.create(
            model="4o", messages=QUESTION, max_tokens=30, service_tier="flex")  # type: ignore[arg-type]
        usage = raw.parse().usage  # type: ignore[assignment]
        standard = usage.prompt_tokens * 2.5e-6 + usage.completion_tokens * 1e-5
        assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(standard, rel=1e-6)


def test_a_priority_request_whose_worst_case_exceeds_the_budget_is_refused_before_any_call(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 output tokens of gpt-4o: ~$0.00104 held at the standard rates, ~$0.00177 at priority. On a
    $0.0015 budget the priority request was held at the standard rates, admitted and sent."""
    budget = 0.0015
    with budgeted_gateway(sim, tmp_path, monkeypatch, budget, POLICY, DEPLOYMENTS) as gw:
        sim.reset()
        with pytest.raises(openai.RateLimitError) as refused:
            gw.client.chat.completions.create(model="4o", messages=QUESTION, max_tokens=100,  # type: ignore[arg-type]
                                              service_tier="priority")
        assert refused.value.status_code == 429 and refused.value.code == "budget_exceeded"
        assert sim.stats()["gpt-4o"]["requests"] == 0
        # The SDK's default retries would only be refused again: the answer tells it not to send them.
        sent: list[httpx.Request] = []
        retrying = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=BUDGET_KEY, max_retries=2,
                                 http_client=httpx.Client(event_hooks={"request": [sent.append]}))
        with pytest.raises(openai.RateLimitError) as again:
            retrying.chat.completions.create(model="4o", messages=QUESTION, max_tokens=100,  # type: ignore[arg-type]
                                             service_tier="priority")
        assert again.value.response.headers["x-should-retry"] == "false" and len(sent) == 1
        # the same request at the standard tier fits
        gw.client.chat.completions.create(model="4o", messages=QUESTION, max_tokens=100)  # type: ignore[arg-type]
        assert sim.stats()["gpt-4o"]["requests"] == 1


def test_a_web_search_is_billed_its_per_query_fee(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-4.1 bills $0.025 a search query on top of the tokens (~$0.0003 here): it counted $0."""
    with budgeted_gateway(sim, tmp_path, monkeypatch, 10.0, POLICY, DEPLOYMENTS) as gw:
        raw = gw.client.chat.completions.with_raw_response.create(
            model="41", messages=QUESTION, max_tokens=30, web_search_options={})  # type: ignore[arg-type]
        usage = raw.parse().usage
        assert usage is not None
        billed = usage.prompt_tokens * 2e-6 + usage.completion_tokens * 8e-6 + 0.025
        assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(billed, rel=1e-6)
        assert gw.spent() == pytest.approx(billed, rel=1e-6)


def test_a_web_search_the_budget_cannot_price_is_refused_with_a_400(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-4o has no per-query price in the cost map: on a budget, the search is refused, not sent."""
    with budgeted_gateway(sim, tmp_path, monkeypatch, 10.0, POLICY, DEPLOYMENTS) as gw:
        sim.reset()
        with pytest.raises(openai.BadRequestError) as refused:
            gw.client.chat.completions.create(model="4o", messages=QUESTION, max_tokens=30,  # type: ignore[arg-type]
                                              web_search_options={"search_context_size": "low"})
        assert refused.value.status_code == 400
        body = refused.value.body
        assert isinstance(body, dict) and body["param"] == "web_search_options"
        assert body["type"] == "invalid_request_error"
        assert sim.stats()["gpt-4o"]["requests"] == 0


def test_a_priority_stream_is_billed_at_the_priority_rates(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream's usage chunk says the tier it ran under: its bill (the `switchyard` cost on that chunk
    and the tenant's spend) is at the priority rates."""
    with budgeted_gateway(sim, tmp_path, monkeypatch, 10.0, POLICY, DEPLOYMENTS) as gw:
        chunks = list(gw.client.chat.completions.create(
            model="4o", messages=QUESTION, max_tokens=30, service_tier="priority", stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}))
        last = next(c for c in chunks if c.usage is not None)
        assert last.usage is not None
        priority = last.usage.prompt_tokens * 4.25e-6 + last.usage.completion_tokens * 1.7e-5
        assert (last.model_extra or {})["switchyard"]["cost_usd"] == pytest.approx(priority, rel=1e-6)
        assert gw.spent() == pytest.approx(priority, rel=1e-6)


def test_without_a_budget_a_web_search_is_refused_under_a_cost_cap_and_else_sent(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No bound on spend, nothing to understate: the search is sent (and logged). A cost cap cannot
    bound a fee it does not know: refused, param `web_search_options`."""
    with budgeted_gateway(sim, tmp_path, monkeypatch, None, POLICY, DEPLOYMENTS) as gw:
        sim.reset()
        with pytest.raises(openai.BadRequestError) as refused:
            gw.client.chat.completions.create(model="4o", messages=QUESTION, max_tokens=30,  # type: ignore[arg-type]
                                              web_search_options={}, extra_headers={"x-switchyard-max-cost-usd": "1"})
        assert refused.value.code == "invalid_request" and refused.value.param == "web_search_options"
        assert sim.stats()["gpt-4o"]["requests"] == 0
        gw.client.chat.completions.create(model="4o", messages=QUESTION, max_tokens=30,  # type: ignore[arg-type]
                                          web_search_options={})
        assert sim.stats()["gpt-4o"]["requests"] == 1
