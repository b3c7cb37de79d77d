"""The OpenAI-compatible endpoint, driven by the official openai SDK over real HTTP.

Behind the gateway: the simulated models over real HTTP and a real Redis server.
"""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

PRICES = {"small": (0.2e-6, 0.4e-6), "large": (1.0e-6, 2.0e-6)}
EASY = "hi"
HARD = ("Prove that the integral of x^2 * sin(x) from 0 to pi equals pi^2 - 4, step by step, then derive "
        "the general formula for the integral of x^n * sin(x) and explain why the recursion terminates. "
        "Show the algorithm and analyse its complexity.")


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def _unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def test_answers_like_openai_with_usage_and_switchyard_headers(base_url: str) -> None:
    raw = _client(base_url).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": _unique("What is 17 + 25?")}])
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0
    for header in ("x-switchyard-model", "x-switchyard-plan", "x-switchyard-cost-usd",
                   "x-switchyard-cache", "x-request-id"):
        assert raw.headers.get(header), header
    assert raw.headers["x-switchyard-cache"] == "bypass"  # temperature absent: not safe to reuse


def test_cost_header_is_usage_times_the_deployment_price(base_url: str) -> None:
    for model in ("small", "large"):
        raw = _client(base_url).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": _unique("Name a colour.")}])
        usage = raw.parse().usage
        assert usage is not None
        price_in, price_out = PRICES[model]
        expected = usage.prompt_tokens * price_in + usage.completion_tokens * price_out
        assert raw.headers["x-switchyard-model"] == model
        assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_repeated_deterministic_request_is_a_free_cache_hit_with_the_same_content(base_url: str) -> None:
    client = _client(base_url)
    messages = [{"role": "user", "content": _unique("What is 6 * 7?")}]
    first = client.chat.completions.with_raw_response.create(model="auto", messages=messages, temperature=0)
    second = client.chat.completions.with_raw_response.create(model="auto", messages=messages, temperature=0)
    assert first.headers["x-switchyard-cache"] == "miss"
    assert float(first.headers["x-switchyard-cost-usd"]) > 0
    assert second.headers["x-switchyard-cache"] == "hit"
    assert second.headers["x-switchyard-cost-usd"] == "0"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    # an answer of its own: a client keying its records by the completion's id had two under one
    assert second.parse().id != first.parse().id and second.parse().id.startswith("chatcmpl-")
    assert second.parse().created >= first.parse().created


def test_easy_and_hard_prompts_take_different_tiers_under_the_default_policy(base_url: str) -> None:
    client = _client(base_url)
    easy = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": EASY}])
    hard = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": HARD}])
    assert easy.headers["x-switchyard-plan"] == "single:small"
    assert hard.headers["x-switchyard-plan"] == "single:large"


def test_streams_server_sent_events_with_usage_when_asked(base_url: str) -> None:
    stream = _client(base_url).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": _unique("Tell me a fact.")}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The answer is")
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    # the cost comes in the usage chunk, since a live stream's headers leave before it is known
    extra = chunks[-1].model_extra["switchyard"]
    price_in, price_out = PRICES[extra["deployment"]]
    assert extra["cost_usd"] == pytest.approx(usage.prompt_tokens * price_in + usage.completion_tokens * price_out)


def test_a_streams_cost_is_written_to_the_picodollar_as_the_cost_header_is(base_url: str) -> None:
    """Tokens times a price in floats carries noise: 0.000014760000000000001 where the header says 0.00001476."""
    written = []
    for words in range(24):
        body = {"model": "small", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": _unique("word " * words)}]}
        with httpx.stream("POST", base_url + "/chat/completions", json=body, timeout=30) as resp:
            usage = next(line for line in resp.iter_lines() if '"switchyard"' in line)
        written.append(usage.split('"cost_usd":', 1)[1].split(",", 1)[0])
    assert all(float(f"{float(w):.12f}") == float(w) for w in written), written


def test_stream_without_include_usage_sends_no_usage_chunk(base_url: str) -> None:
    chunks = list(_client(base_url).chat.completions.create(
        model="small", messages=[{"role": "user", "content": _unique("Tell me a fact.")}], stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_cached_answer_streams_too(base_url: str) -> None:
    client = _client(base_url)
    messages = [{"role": "user", "content": _unique("What is 2 + 2?")}]
    whole = client.chat.completions.create(model="auto", messages=messages, temperature=0)
    with client.chat.completions.with_streaming_response.create(
            model="auto", messages=messages, temperature=0, stream=True) as resp:
        assert resp.headers["x-switchyard-cache"] == "hit"
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text == whole.choices[0].message.content


async def test_async_client_streaming_and_not(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    whole = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert whole.choices[0].message.content
    stream = await client.chat.completions.create(model="large", messages=[{"role": "user", "content": "hi"}],
                                                  stream=True)
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts).startswith("The answer is")
    await client.close()


def test_passes_n_and_content_parts_through(base_url: str) -> None:
    completion = _client(base_url).chat.completions.create(
        model="small", n=2, temperature=0.9,
        messages=[{"role": "user", "content": [{"type": "text", "text": _unique("Pick a letter")}]}])
    assert len(completion.choices) == 2


def test_lists_entry_points_and_deployments(base_url: str) -> None:
    ids = {m.id for m in _client(base_url).models.list()}
    assert {"auto", "router/balanced", "router/cost-saver", "router/quality-first", "router/latency-sla"} <= ids
    assert {"small", "large"} <= ids


def test_health_and_readiness(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    assert httpx.get(root + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(root + "/readyz").json()
    assert ready["status"] == "ready" and ready["store"] == "up" and ready["store_kind"] == "redis"
