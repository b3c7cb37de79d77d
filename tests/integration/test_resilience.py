"""Faults the gateway survives: clients that hang up mid-stream, a Redis that dies."""

from __future__ import annotations

import time

import httpx
import openai

from gateway.api.app import create_app
from tests.integration.conftest import sim_config
from tests.support.processes import Simulator, running_gateway, start_redis


def _streamy_requests(base_url: str) -> int:
    rows = httpx.get(base_url + "/spend", params={"group_by": "deployment"}).json()["data"]
    return sum(r["requests"] for r in rows if r["deployment"] == "streamy")


def test_client_that_disconnects_mid_stream_leaves_the_gateway_serving(base_url: str) -> None:
    body = {"model": "streamy", "stream": True, "messages": [{"role": "user", "content": "Tell me a long story."}]}
    before = _streamy_requests(base_url)
    for _ in range(3):
        with httpx.stream("POST", base_url + "/chat/completions", json=body, timeout=10) as resp:
            assert resp.status_code == 200
            for _ in resp.iter_bytes(64):
                break  # hang up after the first bytes
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    assert client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}]).choices
    # every abandoned stream is still billed for what it used
    deadline = time.monotonic() + 5
    while _streamy_requests(base_url) < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _streamy_requests(base_url) == before + 3


def test_keeps_serving_when_redis_dies(simulator: Simulator, policies_dir) -> None:
    redis = start_redis()
    app = create_app(sim_config(simulator.url, redis.url), policies_dir=policies_dir)
    try:
        with running_gateway(app) as gw:
            client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="x", max_retries=0)
            messages = [{"role": "user", "content": "What is 3 + 4?"}]
            first = client.chat.completions.with_raw_response.create(model="auto", messages=messages, temperature=0)
            assert first.headers["x-switchyard-cache"] == "miss"
            redis.stop()
            after = client.chat.completions.with_raw_response.create(model="auto", messages=messages, temperature=0)
            assert after.headers["x-switchyard-cache"] == "miss"  # the cache is gone, the answer is not
            assert after.parse().choices[0].message.content
            ready = httpx.get(gw.base_url + "/readyz", timeout=5)  # no budgets to refuse: still serving
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            assert ready.json()["store"] == "down"
    finally:
        redis.stop()
