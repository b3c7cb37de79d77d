"""One tenant cannot hold every upstream connection: each tenant has a cap on its requests in flight
(per worker), past which it gets a 429 at once, while other tenants are served; a stream holds its
slot until it ends."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from tests.support.lab import policies_folder, simulator_of
from tests.support.processes import running_gateway, wait_until

HI = [{"role": "user", "content": "hi"}]
TENANTS = [{"name": "greedy", "api_key_sha256": hash_key("sk-greedy"), "max_concurrent_requests": 2},
           {"name": "other", "api_key_sha256": hash_key("sk-other")}]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("inflight")
    models = [{"name": "sim-slow", "ability": 1.0, "ttft_ms": 1500, "tokens_per_s": 0, "output_tokens": 5},
              {"name": "sim-drip", "ability": 1.0, "ttft_ms": 0, "tokens_per_s": 4, "output_tokens": 40}]
    with simulator_of(models, folder) as sim:
        deployments = [{"name": name, "model": f"openai/{model}", "api_base": sim.url, "tier": name,
                        "price": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}, "max_retries": 0}
                       for name, model in (("small", "sim-slow"), ("large", "sim-slow"), ("drip", "sim-drip"))]
        raw = {"deployments": deployments, "tenants": TENANTS, "default_policy": "cost-saver"}
        app = create_app(parse_config(raw, "inflight"), policies_dir=policies_folder(folder, {}))
        with running_gateway(app) as gw:
            yield gw.base_url


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _ask(url: str, key: str) -> Any:
    return _client(url, key).chat.completions.create(model="small", messages=HI, max_tokens=5)


def test_a_tenant_past_its_cap_is_refused_at_once_and_others_are_served(url: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        held = [pool.submit(_ask, url, "sk-greedy") for _ in range(2)]  # 1.5 s each
        wait_until(lambda: _in_flight(url) >= 2, timeout_s=5, what="two requests in flight")
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as refused:
            _ask(url, "sk-greedy")
        assert time.monotonic() - started < 1.0  # refused at once, not queued behind the two
        assert refused.value.code == "concurrency_limit_exceeded"
        assert refused.value.response.headers["retry-after"] == "1"
        assert _ask(url, "sk-other").choices[0].message.content  # another tenant is served meanwhile
        assert all(f.result().choices[0].message.content for f in held)
    assert _ask(url, "sk-greedy").choices[0].message.content  # slots given back


def test_a_stream_holds_its_slot_until_its_upstream_call_ends_whether_or_not_its_client_stays(url: str) -> None:
    """A client that leaves a stream hands its upstream call over to be read on and billed (a reasoning
    model thinks on whether read or not): that call still holds an upstream connection, so its slot is
    kept until it ends, as a request given up on keeps its own (below). Else a tenant opening streams
    and leaving at once could leave any number of upstream calls running."""
    client = _client(url, "sk-greedy")
    streams = [client.chat.completions.create(model="drip", messages=HI, max_tokens=10, stream=True)
               for _ in range(2)]  # 2.5 s of tokens each: open, and not read
    with pytest.raises(openai.RateLimitError):
        _ask(url, "sk-greedy")
    started = time.monotonic()
    for s in streams:
        s.close()  # the client leaves: each upstream call is read on to its end
    with pytest.raises(openai.RateLimitError):
        _ask(url, "sk-greedy")  # still two calls running
    wait_until(lambda: _in_flight(url) == 0, timeout_s=15, what="the slots given back when the calls ended")
    assert time.monotonic() - started < 10  # when the calls ended, not at some later limit
    assert _ask(url, "sk-greedy").choices[0].message.content


def _in_flight(url: str) -> int:
    """The tenant's requests in flight, as the gateway's metrics show them."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("switchyard_requests_in_flight{") and 'tenant="greedy"' in line)


def test_a_request_given_up_on_keeps_its_slot_while_its_call_is_still_read(url: str) -> None:
    """A request that ends at its deadline leaves its upstream call running (read on, so that an
    answer on its way is billed): that call still holds an upstream connection, so it still counts
    under the cap. Else a 1 ms `x-switchyard-timeout-ms` freed the slot at once and one tenant could
    leave any number of calls running."""
    hurried = {"x-switchyard-timeout-ms": "50"}
    for _ in range(2):  # each gives up after 50 ms on a call that answers in 1.5 s
        resp = httpx.post(url + "/v1/chat/completions", headers={"authorization": "Bearer sk-greedy", **hurried},
                          json={"model": "small", "messages": HI, "max_tokens": 5}, timeout=10)
        assert resp.status_code == 504
    resp = httpx.post(url + "/v1/chat/completions", headers={"authorization": "Bearer sk-greedy", **hurried},
                      json={"model": "small", "messages": HI, "max_tokens": 5}, timeout=10)
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "concurrency_limit_exceeded"
    assert _ask(url, "sk-other").choices[0].message.content  # another tenant is served meanwhile
    wait_until(lambda: _in_flight(url) == 0, timeout_s=10, what="the slots given back when the calls ended")
    assert _ask(url, "sk-greedy").choices[0].message.content


def _slow_body(url: str, path: str, key: str) -> socket.socket:
    """A request to `path` whose head is sent and whose body is not: the gateway has it in flight."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {key}\r\n"
                 "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{".encode())
    return conn


def test_route_explanations_are_under_the_tenants_cap(url: str) -> None:
    """`POST /v1/route` reads, parses and routes a body of up to `max_body_bytes` on the event loop:
    it takes a slot as a chat completion does, so one key cannot have any number of them at once."""
    route = {"model": "router/cost-saver", "messages": HI}
    held = [_slow_body(url, "/v1/route", "sk-greedy") for _ in range(2)]
    try:
        wait_until(lambda: _in_flight(url) >= 2, timeout_s=5, what="two explanations in flight")
        resp = httpx.post(url + "/v1/route", headers={"authorization": "Bearer sk-greedy"}, json=route, timeout=10)
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"]["code"] == "concurrency_limit_exceeded"
        with pytest.raises(openai.RateLimitError):
            _ask(url, "sk-greedy")
        other = httpx.post(url + "/v1/route", headers={"authorization": "Bearer sk-other"}, json=route, timeout=10)
        assert other.status_code == 200, other.text  # another tenant is served meanwhile
    finally:
        for conn in held:
            conn.close()  # the client leaves mid-body: the slots are given back
    wait_until(lambda: _in_flight(url) == 0, timeout_s=10, what="the slots given back")
    resp = httpx.post(url + "/v1/route", headers={"authorization": "Bearer sk-greedy"}, json=route, timeout=10)
    assert resp.status_code == 200, resp.text
