"""Money over real HTTP: budgets hold under concurrency (one gateway, and two gateway processes on one
Redis), cost caps bound what a call may generate (pinned calls too), and answers without `usage`
are still billed."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml

from gateway.api.app import create_app
from gateway.config import parse_config
from gateway.messages import count_messages
from gateway.state import spend_key
from tests.support.lab import simulator_of
from tests.support.processes import (
    ROOT,
    RedisServer,
    Simulator,
    free_port,
    running_gateway,
    terminate,
    wait_until,
)

KEY_ENV = "SY_TRUST_BUDGET_KEY"
API_KEY = "sk-trust-budget"
BUDGET = 0.01
MAX_TOKENS = 40
# $25 / $50 per million tokens: one answer (a few prompt tokens, 30 output tokens) costs about $0.0016.
PRICE_IN, PRICE_OUT = 25.0, 50.0
MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with simulator_of([
        # slow enough that 50 concurrent requests are all in flight together
        {"name": "sim-small", "ability": 0.0, "ttft_ms": 150, "tokens_per_s": 0, "output_tokens": 30},
        {"name": "sim-large", "ability": 4.0, "ttft_ms": 5, "tokens_per_s": 0, "output_tokens": 40},
        {"name": "sim-bare", "ability": 2.0, "ttft_ms": 5, "tokens_per_s": 0, "output_tokens": 25, "usage": False},
    ], tmp_path_factory.mktemp("sim")) as simulator:
        yield simulator


def _raw_config(sim_url: str, redis_url: str | None, tenant: str | None) -> dict[str, Any]:
    def dep(name: str, tier: str, price_in: float, price_out: float, **kw: Any) -> dict[str, Any]:
        return {"name": name, "model": f"openai/sim-{name}", "api_base": sim_url, "tier": tier,
                "price": {"input_per_mtok": price_in, "output_per_mtok": price_out}, **kw}

    raw: dict[str, Any] = {
        "deployments": [dep("small", "small", PRICE_IN, PRICE_OUT, max_retries=0),
                        dep("large", "large", 1.0, 2.0), dep("bare", "lab", 1.0, 2.0)],
        "redis_url": redis_url, "policies_dir": str(ROOT / "routing_policies")}
    if tenant:
        raw["tenants"] = [{"name": tenant, "api_key_env": KEY_ENV, "budget_usd": BUDGET}]
    return raw


def _worst_case() -> float:
    """One request's reservation: counted prompt tokens at the input price, max_tokens at the output price."""
    return (count_messages(MESSAGES) * PRICE_IN + MAX_TOKENS * PRICE_OUT) / 1e6


async def _burst(base_urls: list[str], n: int = 50, messages: list[dict[str, str]] = MESSAGES) -> list[httpx.Response]:
    body = {"model": "small", "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0.7}
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {API_KEY}"},
                                 limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*(client.post(base_urls[i % len(base_urls)] + "/v1/chat/completions",
                                                  json=body) for i in range(n)))


def _assert_budget_held(responses: list[httpx.Response], redis_url: str, tenant: str, sim: Simulator) -> None:
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert ok, "some requests fit the budget"
    assert refused, "the budget cannot pay for all 50"
    for r in refused:
        assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded", r.text
    spent = float(redis.Redis.from_url(redis_url).get(spend_key(tenant)) or 0)
    assert spent == pytest.approx(sum(float(r.headers["x-switchyard-cost-usd"]) for r in ok))
    assert spent <= BUDGET + _worst_case()
    # refused before any upstream call: the upstream saw exactly the admitted requests
    assert sim.stats()["sim-small"]["requests"] == len(ok)


def _burst_on_one_gateway(sim: Simulator, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
                          **burst: Any) -> tuple[list[httpx.Response], str]:
    """A burst (`_burst`'s arguments) at a fresh tenant of one gateway: the responses, and the tenant."""
    sim.reset()
    tenant = f"budget-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(KEY_ENV, API_KEY)
    app = create_app(parse_config(_raw_config(sim.url, redis_server.url, tenant), "test"))
    with running_gateway(app) as gw:
        return asyncio.run(_burst([gw.base_url], **burst)), tenant


def test_budget_holds_under_50_concurrent_requests_on_one_gateway(
        sim: Simulator, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    responses, tenant = _burst_on_one_gateway(sim, redis_server, monkeypatch)
    _assert_budget_held(responses, redis_server.url, tenant, sim)


def test_budget_holds_for_a_prompt_the_upstream_counts_many_times_over_the_gateways_count(
        sim: Simulator, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # 200 "!" are 13 tokens to tiktoken and 200 to the upstream (a token per punctuation mark, as the
    # simulator counts): each request was held at a sixth of what it cost, and a burst spent 2.6 times
    # the budget. A budget holds the prompt's byte count, which no upstream's token count exceeds.
    responses, tenant = _burst_on_one_gateway(sim, redis_server, monkeypatch, n=20,
                                              messages=[{"role": "user", "content": "!" * 200}])
    ok = [r for r in responses if r.status_code == 200]
    assert ok and all(r.status_code == 429 for r in responses if r.status_code != 200)
    assert int(ok[0].json()["usage"]["prompt_tokens"]) > 5 * count_messages([{"role": "user", "content": "!" * 200}])
    spent = float(redis.Redis.from_url(redis_server.url).get(spend_key(tenant)) or 0)
    assert spent == pytest.approx(sum(float(r.headers["x-switchyard-cost-usd"]) for r in ok))
    assert spent <= BUDGET


def _serve(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), KEY_ENV: API_KEY},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


def test_budget_holds_across_two_gateway_processes_sharing_redis(
        sim: Simulator, redis_server: RedisServer, tmp_path: Path) -> None:
    sim.reset()
    tenant = f"budget-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(_raw_config(sim.url, redis_server.url, tenant)))
    replicas = [_serve(config), _serve(config)]
    try:
        for process, url in replicas:
            wait_until(lambda url=url: httpx.get(url + "/healthz", timeout=1).status_code == 200,  # type: ignore[misc]
                       timeout_s=60, what="gateway replica")
            assert process.poll() is None
        responses = asyncio.run(_burst([url for _, url in replicas]))
    finally:
        for process, _ in replicas:
            terminate(process)
    _assert_budget_held(responses, redis_server.url, tenant, sim)


@pytest.fixture(scope="module")
def open_gateway(sim: Simulator) -> Iterator[str]:
    app = create_app(parse_config(_raw_config(sim.url, None, None), "test"))
    with running_gateway(app) as gw:
        yield gw.base_url


def test_a_pinned_request_under_a_cost_cap_gets_a_bounded_max_tokens(open_gateway: str) -> None:
    client = openai.OpenAI(base_url=open_gateway + "/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "Explain why the sky is blue."}]
    # large: $1 in / $2 out per million; room for the prompt and 10 output tokens (it would write 40)
    cap = (count_messages(messages) * 1.0 + 10 * 2.0) / 1e6
    raw = client.chat.completions.with_raw_response.create(
        model="large", messages=messages, extra_headers={"x-switchyard-max-cost-usd": f"{cap:.12f}"})
    reply = raw.parse()
    assert reply.usage is not None and reply.usage.completion_tokens <= 10
    assert reply.choices[0].finish_reason == "length"
    assert float(raw.headers["x-switchyard-cost-usd"]) <= cap
    # a client's own smaller max_tokens stands
    small = client.chat.completions.create(model="large", messages=messages, max_tokens=3,
                                           extra_headers={"x-switchyard-max-cost-usd": f"{cap:.12f}"})
    assert small.usage is not None and small.usage.completion_tokens <= 3


def test_a_cost_cap_too_small_for_the_prompt_is_a_422_before_any_call(open_gateway: str, sim: Simulator) -> None:
    before = sim.stats()["sim-large"]["requests"]
    resp = httpx.post(open_gateway + "/v1/chat/completions", headers={"x-switchyard-max-cost-usd": "0.0000001"},
                      json={"model": "large", "messages": [{"role": "user", "content": "Explain the tides."}]})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "constraint_unsatisfiable"
    assert "cost cap" in resp.json()["error"]["message"]
    assert sim.stats()["sim-large"]["requests"] == before


def test_an_answer_without_usage_is_billed_from_counted_tokens(open_gateway: str) -> None:
    client = openai.OpenAI(base_url=open_gateway + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="bare", messages=[{"role": "user", "content": "Name a prime number."}])
    reply = raw.parse()
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(
        (reply.usage.prompt_tokens * 1.0 + reply.usage.completion_tokens * 2.0) / 1e6)


def test_an_answer_without_usage_bills_the_tools_sent_with_a_pinned_call(open_gateway: str) -> None:
    # A pinned call's prompt is not counted when it is sent: an answer without usage billed the messages
    # alone (8 tokens), and the client's 5,000 tokens of tool definitions went free, as routed ones do not.
    tools = [{"type": "function", "function": {"name": "f", "description": "d " * 5_000,
                                               "parameters": {"type": "object", "properties": {}}}}]
    client = openai.OpenAI(base_url=open_gateway + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(model="bare", messages=[{"role": "user", "content": "hi"}],
                                           tools=tools, max_tokens=5)  # type: ignore[list-item]
    assert reply.usage is not None and reply.usage.prompt_tokens > 5_000


def test_a_stream_without_usage_is_billed_from_counted_tokens(open_gateway: str) -> None:
    def billed() -> float:
        rows = httpx.get(open_gateway + "/v1/spend", params={"group_by": "deployment"}).json()["data"]
        return sum(r["cost_usd"] for r in rows if r["deployment"] == "bare")

    before = billed()
    client = openai.OpenAI(base_url=open_gateway + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="bare", messages=[{"role": "user", "content": "Count to five."}],
                                            stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    wait_until(lambda: billed() > before, timeout_s=5, what="stream settlement")


CLIENT_TIMEOUT_S = 5.0
HOLD_TTL_S = 1.0


def test_redis_holds_are_atomic_under_concurrency_and_expire_when_never_settled(redis_server: RedisServer) -> None:
    from gateway.state import Budget, Rate, RedisStore, holds_key, rate_key

    tenant = f"holds-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        # The request path's 0.5 s timeout is for failing fast; here 50 reservations open 50 connections
        # at once, which on a loaded machine can take longer. What is tested is atomicity, not latency.
        store = RedisStore(redis_server.url, timeout_s=CLIENT_TIMEOUT_S)
        try:
            def budget(amount: float, ttl_s: float = 30.0) -> Budget:
                return Budget(spend_key(tenant), holds_key(tenant), uuid.uuid4().hex, amount, 0.01, ttl_s)

            got = await asyncio.gather(*(store.reserve(budget(0.0025), Rate(rate_key(tenant, 0), 100))
                                         for _ in range(50)))
            assert [g.verdict for g in got].count("ok") == 4
            assert [g.verdict for g in got].count("budget") == 46
            assert max(g.requests for g in got) == 4  # refused requests are not counted in the window
            # a settled hold turns into spend; an unsettled one (a replica that died) expires
            first = budget(0.002)
            client = redis.Redis.from_url(redis_server.url)
            client.delete(holds_key(tenant))  # start over
            # long enough a hold that a slow machine still makes the next call while it lasts
            assert (await store.reserve(budget(0.009, ttl_s=HOLD_TTL_S), None)).verdict == "ok"
            assert (await store.reserve(first, None)).verdict == "budget"
            await asyncio.sleep(HOLD_TTL_S + 0.1)
            assert (await store.reserve(first, None)).verdict == "ok"
            await store.settle(spend_key(tenant), holds_key(tenant), first.hold_id, 0.0007)
            assert float(client.get(spend_key(tenant)) or 0) == pytest.approx(0.0007)
            assert client.hget(holds_key(tenant), first.hold_id) is None
        finally:
            await store.close()

    asyncio.run(scenario())


def _sparse_where_sampled(chars: int) -> str:
    """A prompt dense in tokens (~0.66 a character in o200k_base) except for runs of spaces at its start,
    middle and end, where a count that samples fixed places would look, and find ~0.01 a character."""
    rng = random.Random(7)
    dense = "".join(rng.choice("!#$%&()*+,-./:;<=>?@[]^_{|}~") for _ in range(chars))
    gap = " " * 400
    half = chars // 2
    return gap + dense[:half - 600] + gap + dense[half:chars - 600] + gap


def test_a_cost_cap_holds_for_a_long_prompt_shaped_against_a_sampled_count(open_gateway: str) -> None:
    """A long prompt is counted from samples; a client who knew where they fall could shape the text
    so that the count, and so the worst case a cost cap checks, says a third of what it is billed."""
    messages = [{"role": "user", "content": _sparse_where_sampled(100_000)}]
    cap = 0.04  # large: $1 per million input tokens; the prompt is ~66k tokens in o200k_base, 25k by the samples
    resp = httpx.post(open_gateway + "/v1/chat/completions", timeout=30,
                      headers={"x-switchyard-max-cost-usd": str(cap)},
                      json={"model": "large", "messages": messages, "max_tokens": 1})
    if resp.status_code == 200:
        assert float(resp.headers["x-switchyard-cost-usd"]) <= cap, "the cost cap was exceeded"
    else:
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "constraint_unsatisfiable"
