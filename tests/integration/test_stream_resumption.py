"""Mid-stream resumption over real HTTP: the openai SDK, the gateway, the simulated models.

A deployment whose every stream breaks half-way, a healthy fallback that honours a trailing
assistant message: the client's one stream completes with the fallback's continuation, and both
calls are billed. Requests whose stream cannot be spliced (tools) fail as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gateway.simulator import count_tokens
from tests.integration.test_metrics_endpoint import scrape, total
from tests.support.lab import BUDGET_KEY, budgeted_gateway, lab_gateway, simulator_of
from tests.support.processes import Simulator, wait_until

# Able enough to answer right every time: every model's whole answer to QUESTION is the same text.
SURE = {"ability": 12.0, "ttft_ms": 2, "tokens_per_s": 0, "output_tokens": 40}
MODELS = [
    {"name": "sim-small", **SURE}, {"name": "sim-large", **SURE},
    # Paced, so that its first half is on the wire well before it breaks off (else the gateway may see
    # the break before any content, and a stream with nothing relayed simply starts afresh elsewhere).
    {"name": "sim-cut", **SURE, "tokens_per_s": 400, "faults": [{"kind": "drop_stream", "rate": 1.0}]},
    {"name": "sim-next", **SURE}, {"name": "sim-plain", **SURE},
    # Slower still: a good 200 ms of its answer come before it breaks.
    {"name": "sim-crawl", **SURE, "tokens_per_s": 100, "faults": [{"kind": "drop_stream", "rate": 1.0}]}]
QUESTION = [{"role": "user", "content": "What is 17 + 25?"}]
SPANS = InMemorySpanExporter()
TOOLS = [{"type": "function", "function": {"name": "add", "description": "add two numbers",
                                           "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with simulator_of(MODELS, tmp_path_factory.mktemp("resume")) as sim:
        yield sim


@pytest.fixture(scope="module")
def base_url(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies = {name: {"description": "a deployment whose streams break, a healthy one behind it",
                       "candidates": [{"single": first}], "fallbacks": {first: [fallback]},
                       "cache": {"enabled": False}}
                for name, first, fallback in (("resumed", "cut", "next"), ("no-prefill", "cut", "plain"),
                                              ("crawled", "crawl", "next"))}
    deployments = {"small": ("sim-small", "small"), "large": ("sim-large", "large"), "cut": ("sim-cut", "lab"),
                   "next": ("sim-next", "lab"), "plain": ("sim-plain", "lab"), "crawl": ("sim-crawl", "lab")}
    with lab_gateway(sim, tmp_path_factory.mktemp("resume-gw"), policies, deployments, span_exporter=SPANS,
                     max_retries=0, supports_prefill=lambda name: name != "plain") as url:
        yield url


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def _stream(base_url: str, policy: str, **extra: Any) -> list[Any]:
    return list(_client(base_url).chat.completions.create(model=f"router/{policy}", messages=QUESTION,  # type: ignore[call-overload]
                                                          stream=True, **extra))


def _calls(base_url: str) -> dict[str, int]:
    rows = httpx.get(base_url + "/spend", params={"group_by": "deployment"}, timeout=10).json()["data"]
    return {r["deployment"]: int(r["calls"]) for r in rows if r["calls"]}


def _billed_since(base_url: str, before: dict[str, int]) -> dict[str, int]:
    after = _calls(base_url)
    return {d: n - before.get(d, 0) for d, n in after.items() if n != before.get(d, 0)}


def test_a_stream_cut_mid_way_completes_on_the_fallback_without_repeating_itself(
        base_url: str, sim: Simulator) -> None:
    whole = _client(base_url).chat.completions.create(model="next", messages=QUESTION)  # type: ignore[arg-type]
    expected = whole.choices[0].message.content or ""
    wait_until(lambda: _calls(base_url).get("next") == 1, timeout_s=10, what="the whole answer billed")
    before = _calls(base_url)
    sim.reset()

    chunks = _stream(base_url, "resumed", stream_options={"include_usage": True})

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected  # the partial, then only the rest: no second "The answer is"
    assert text.count("The answer is") == 1
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    stats = sim.stats()
    assert stats["sim-cut"]["served"] == 1 and stats["sim-next"]["served"] == 1
    # One usage for the client, summed over both calls: two prompts (the second with the partial
    # answer in it) and every token either call produced.
    usage = chunks[-1].usage
    prompt = count_tokens(QUESTION[0]["content"])
    assert usage is not None and usage.prompt_tokens > 2 * prompt
    assert usage.completion_tokens >= count_tokens(expected)
    # Both calls are in the ledger, each under its own deployment.
    wait_until(lambda: _billed_since(base_url, before) == {"cut": 1, "next": 1}, timeout_s=10, what="both calls billed")
    # The request's span tells what the client was told and billed: both calls, not the continuation alone.
    spans = SPANS.get_finished_spans()
    request = [s for s in spans if s.name == "switchyard.request"][-1]
    calls = [s for s in spans if s.name.startswith("chat ") and s.parent is not None
             and s.parent.span_id == request.context.span_id]
    assert request.attributes is not None and len(calls) == 2
    assert request.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert request.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    told = (chunks[-1].model_extra or {})["switchyard"]["cost_usd"]
    assert request.attributes["switchyard.cost_usd"] == pytest.approx(told, rel=1e-9)
    assert told == pytest.approx(sum(float(c.attributes["switchyard.cost_usd"])  # type: ignore[arg-type,index]
                                     for c in calls), rel=1e-9)


def test_a_resumed_streams_wait_on_its_upstreams_is_not_taken_for_gateway_overhead(base_url: str) -> None:
    # The broken call's answer after its first chunk and the continuation's wait for its own first chunk are
    # time spent on upstreams, as a stream's are that does not break.
    metrics_url = base_url.removesuffix("/v1")
    chunks = _stream(base_url, "crawled")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("The answer is")
    m = scrape(metrics_url)
    took = total(m, "switchyard_request_duration_seconds_sum", policy="crawled")
    overhead = total(m, "switchyard_gateway_overhead_seconds_sum", policy="crawled")
    assert took > 0.15  # the broken call alone streamed for most of it
    assert overhead < took / 4, (overhead, took)


def test_a_stream_with_tools_fails_as_before(base_url: str, sim: Simulator) -> None:
    sim.reset()
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        _stream(base_url, "resumed", tools=TOOLS, tool_choice="required")
    assert sim.stats()["sim-next"]["requests"] == 0


def test_no_resumption_onto_a_deployment_without_prefill(base_url: str, sim: Simulator) -> None:
    sim.reset()
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        _stream(base_url, "no-prefill")
    assert sim.stats()["sim-plain"]["requests"] == 0
    # A stream that failed is a failed request on its trace, as a whole answer's failure is (an upstream's: 5xx)
    request = [s for s in SPANS.get_finished_spans() if s.name == "switchyard.request"][-1]
    assert request.attributes is not None and request.attributes["switchyard.stream_completed"] is False
    assert request.attributes["error.type"] == "ProviderFailure"
    assert request.status.status_code == StatusCode.ERROR


def test_a_budget_holds_for_both_calls_of_a_resumed_stream(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A resumed stream bills two calls: the cut one (prompt and half the answer) and its continuation
    # (the prompt again, the half as input, the other half). One call's worst case here is (the prompt's
    # bound + 40 output tokens at $2/M) ~ $0.0001: a budget of $0.00015 pays for one call, not for both
    # (~$0.00025). Before, the stream was admitted on one call's hold and spent ~$0.00013. The policy's
    # deadline is within the deployments' timeout_s, so no timed-out attempt can be billed before
    # another: only the resumption can.
    budget = 0.00015
    policy = {"candidates": [{"single": "cut"}], "fallbacks": {"cut": ["next"]}, "timeout_s": 20}
    deployments = {n: (m, {"max_retries": 0, "supports_prefill": True}) for n, m in (("cut", "sim-cut"),
                                                                                     ("next", "sim-next"))}
    with budgeted_gateway(sim, tmp_path, monkeypatch, budget, policy, deployments) as gw:
        gw.refuses(lambda: list(gw.client.chat.completions.create(model="router/thrifty", messages=QUESTION,  # type: ignore[arg-type]
                                                                  max_tokens=40, stream=True)),
                   budget, "a resumable stream")
        assert sim.stats()["sim-cut"]["requests"] == 0
        # A stream that cannot be resumed (no fallback) holds one call: the same request fits.
        chunks = list(gw.client.chat.completions.create(model="next", messages=QUESTION,  # type: ignore[arg-type]
                                                        max_tokens=40, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_cost_cap_bounds_both_calls_of_a_resumed_stream(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A resumed stream bills the cut call and its continuation, so a cost cap bounds both, as a budget
    # holds both. Under a cap that pays for one call at max_tokens 40 the stream used to be resumed
    # anyway and was billed ~1.3 times its cap; now resumption is turned off (the stream fails as one
    # without a fallback would) rather than every answer shortened. A cap that pays for both resumes it.
    policy = {"candidates": [{"single": "cut"}], "fallbacks": {"cut": ["next"]}, "timeout_s": 20}
    deployments = {n: (m, {"max_retries": 0, "supports_prefill": True}) for n, m in (("cut", "sim-cut"),
                                                                                     ("next", "sim-next"))}
    with budgeted_gateway(sim, tmp_path, monkeypatch, None, policy, deployments) as gw:
        explained = httpx.post(gw.base_url + "/v1/route", json={"model": "router/thrifty", "messages": QUESTION},
                               headers={"Authorization": f"Bearer {BUDGET_KEY}"}, timeout=10).json()
        prompt = explained["signal"]["prompt_tokens_estimate"]
        one_call = (prompt * 1 + 40 * 2) * 1e-6  # $1/M in, $2/M out

        def ask(cap: float) -> list[Any]:
            return list(gw.client.chat.completions.create(  # type: ignore[call-overload]
                model="router/thrifty", messages=QUESTION, max_tokens=40, stream=True,
                extra_headers={"x-switchyard-max-cost-usd": f"{cap:.10f}"}))

        with pytest.raises(openai.APIError, match="failed mid-stream"):
            ask(one_call * 1.01)
        assert sim.stats()["sim-next"]["requests"] == 0
        wait_until(lambda: gw.calls() == 1, timeout_s=5, what="the cut call billed")
        assert gw.spent() <= one_call * 1.01
        before = gw.spent()
        both = (prompt * 2 + 40 * 1 + 2 * 40 * 2) * 1e-6 * 1.01  # the continuation's input holds what was produced
        assert "".join(c.choices[0].delta.content or "" for c in ask(both) if c.choices)
        assert sim.stats()["sim-next"]["requests"] == 1  # resumed
        wait_until(lambda: gw.calls() == 3, timeout_s=5, what="both calls billed")
        assert gw.spent() - before <= both
