"""What a tenant's request body can make the gateway spend: never more than the worst case its
budget reserved, whatever the body leaves out or adds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from gateway.api.app import create_app
from gateway.config import parse_config
from gateway.messages import prompt_bound
from gateway.state import holds_key, spend_key
from tests.support.lab import simulator_of
from tests.support.processes import ROOT, RedisServer, Simulator, running_gateway

KEY_ENV = "SY_REQUEST_BOUNDS_KEY"
API_KEY = "sk-request-bounds"
PRICE_IN, PRICE_OUT = 10.0, 100.0    # per million tokens
LIMIT = 20                           # the deployment's max_output_tokens; the model would write 400
BUDGET = 0.005                       # room for two worst cases (~$0.002 each), not for one 400-token answer
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with simulator_of([
        {"name": "sim-chatty", "ability": 2.0, "ttft_ms": 0, "tokens_per_s": 0, "output_tokens": 400},
        {"name": "sim-drip", "ability": 2.0, "ttft_ms": 10, "tokens_per_s": 10, "output_tokens": 60},
    ], tmp_path_factory.mktemp("sim")) as simulator:
        yield simulator


def _config(sim_url: str, redis_url: str, tenant: str) -> dict[str, Any]:
    return {
        "deployments": [
            {"name": "chatty", "model": "openai/sim-chatty", "api_base": sim_url, "tier": "small",
             "max_output_tokens": LIMIT, "price": {"input_per_mtok": PRICE_IN, "output_per_mtok": PRICE_OUT}},
            {"name": "large", "model": "openai/sim-chatty", "api_base": sim_url, "tier": "large"},
            # a chunk every 0.4 s: its stream runs far longer than its hold's 1 s + HOLD_MARGIN_S
            {"name": "drip", "model": "openai/sim-drip", "api_base": sim_url, "tier": "lab", "timeout_s": 1.0,
             "max_retries": 0, "price": {"input_per_mtok": PRICE_IN, "output_per_mtok": PRICE_OUT * 10}},
        ],
        "redis_url": redis_url, "policies_dir": str(ROOT / "routing_policies"),
        "tenants": [{"name": tenant, "api_key_env": KEY_ENV, "budget_usd": BUDGET}],
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_without_max_tokens_generates_no_more_than_its_reservation_allowed(
        sim: Simulator, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    """The reservation of a request without max_tokens assumes the deployment's max_output_tokens:
    the call must be held to it (it was sent without any limit, wrote 400 tokens and cost 19× its
    reservation, 8× the tenant's whole budget)."""
    tenant = f"bounds-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(KEY_ENV, API_KEY)
    worst = (prompt_bound(MESSAGES)[0] * PRICE_IN + LIMIT * PRICE_OUT) / 1e6
    app = create_app(parse_config(_config(sim.url, redis_server.url, tenant), "test"))
    with running_gateway(app) as gw:
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=API_KEY, max_retries=0)
        if stream:
            chunks = list(client.chat.completions.create(model="chatty", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
                                                         stream_options={"include_usage": True}))
            usage = next(c.usage for c in chunks if c.usage is not None)
            finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
        else:
            reply = client.chat.completions.create(model="chatty", messages=MESSAGES)  # type: ignore[arg-type]
            assert reply.usage is not None
            usage, finish = reply.usage, reply.choices[0].finish_reason
    assert usage.completion_tokens <= LIMIT
    assert finish == "length"
    store = redis.Redis.from_url(redis_server.url)
    assert not store.hgetall(holds_key(tenant))  # settled (a stream settles before its last chunk goes)
    assert float(store.get(spend_key(tenant)) or 0) <= worst


BIG = " ".join(f"field{i} holds the customer's record number {i}" for i in range(300))  # ~3,500 tokens: $0.035
TOOL = {"type": "function", "function": {"name": "lookup", "description": BIG,
                                         "parameters": {"type": "object", "properties": {}}}}
EARLIER_CALL = [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": BIG}}]


@pytest.mark.parametrize("extra", [
    {"tools": [TOOL]},
    {"functions": [TOOL["function"]]},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {
        "type": "object", "description": BIG}}}},
    {"messages": [{"role": "user", "content": "Look me up."},
                  {"role": "assistant", "content": None, "tool_calls": EARLIER_CALL},
                  {"role": "tool", "tool_call_id": "call_1", "content": "found"},
                  {"role": "user", "content": "Thanks, and now?"}]},
], ids=["tools", "functions", "response_format", "earlier_tool_calls"])
def test_text_outside_the_messages_content_counts_toward_the_reservation(
        sim: Simulator, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any]) -> None:
    """Providers bill tool definitions, schemas and earlier tool calls as prompt tokens. They were not
    counted: a request carrying a prompt worth 7x the tenant's budget there was reserved ~$0.0002 and sent."""
    tenant = f"bounds-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(KEY_ENV, API_KEY)
    app = create_app(parse_config(_config(sim.url, redis_server.url, tenant), "test"))
    before = sim.stats()["sim-chatty"]["requests"]
    with running_gateway(app) as gw:
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(**{"model": "chatty", "messages": MESSAGES, "max_tokens": 1, **extra})
        # the same request without that text fits
        plain = client.chat.completions.create(model="chatty", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]
    assert refused.value.status_code == 429
    assert refused.value.body["code"] == "budget_exceeded"  # type: ignore[index]
    assert plain.choices
    assert sim.stats()["sim-chatty"]["requests"] == before + 1  # the refused one never reached it


@pytest.mark.parametrize("policy", ["strict-cascade", "vote5"])
def test_a_streamed_request_answered_whole_sends_no_stream_options_upstream(base_url: str, policy: str) -> None:
    """A streamed request whose plan answers whole (then replayed) asks for whole answers upstream;
    `stream_options` with `stream: false` is refused by OpenAI and vLLM, and a cascade's escalation
    sent it (the stream failed with a 400 from the upstream)."""
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    hard = [{"role": "user", "content": "Prove, step by step, what is 123 * 456 - 789 + 1011 * 12?"}]
    with client.chat.completions.with_streaming_response.create(
            model=f"router/{policy}", messages=hard, seed=11, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}) as resp:
        assert resp.status_code == 200
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("The answer is")
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_a_long_stream_keeps_its_budget_hold_until_it_ends(
        sim: Simulator, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hold lasts the plan's longest duration (its calls' timeouts) plus a margin, but a stream is
    only held to the pause between its chunks: one that ran longer lost its hold, and the budget it
    would still spend was lent again (a second stream was admitted, and the tenant overspent)."""
    import gateway.admission
    import gateway.pipeline

    monkeypatch.setattr(gateway.pipeline, "HOLD_MARGIN_S", 1.0)  # holds of 2 s: the stream runs 4 s
    monkeypatch.setattr(gateway.admission, "RENEW_EVERY_S", 0.2)
    tenant = f"bounds-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(KEY_ENV, API_KEY)
    # one stream's worst case (40 tokens at $1,000 per million) fits the budget, two do not
    raw = _config(sim.url, redis_server.url, tenant)
    raw["tenants"][0]["budget_usd"] = 0.07
    body: dict[str, Any] = {"model": "drip", "messages": MESSAGES, "max_tokens": 40}
    app = create_app(parse_config(raw, "test"))

    async def scenario(base_url: str) -> tuple[int, Exception | None]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
        first = await client.chat.completions.create(**body, stream=True)
        chunks = 0
        second: Exception | None = None
        async for _ in first:
            chunks += 1
            if chunks == 8:  # ~3 s in: the hold's first 2 s are long past
                try:
                    await client.chat.completions.create(**body)
                except openai.APIStatusError as exc:  # admitted, it would time out: a 504
                    second = exc
        return chunks, second

    with running_gateway(app) as gw:
        chunks, second = asyncio.run(scenario(gw.base_url + "/v1"))
    assert chunks > 8
    assert isinstance(second, openai.RateLimitError), "the second stream was admitted on the first one's budget"
    assert second.body["code"] == "budget_exceeded"  # type: ignore[index]
    store = redis.Redis.from_url(redis_server.url)
    assert float(store.get(spend_key(tenant)) or 0) <= 0.07
