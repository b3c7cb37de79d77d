"""GET /metrics over real HTTP after real traffic: requests, cost (equal to what the responses said),
tokens, cache, routing mix, latency histograms, circuit states, feedback; who may scrape; OTLP push."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from gateway.metrics import Metrics
from tests.integration.conftest import sim_config
from tests.support.processes import GatewayServer, Simulator, running_gateway, wait_until

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(base: str, **headers: str) -> Samples:
    response = httpx.get(base + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[s.name].append((dict(s.labels), s.value))
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == x for k, x in labels.items()))


@pytest.fixture(scope="module")
def gw(simulator: Simulator, policies_dir: Path) -> Iterator[GatewayServer]:
    """A gateway of its own (in-memory store), so that its counters start at zero."""
    app = create_app(sim_config(simulator.url), policies_dir=policies_dir)
    with running_gateway(app) as server:
        yield server


def _stream(client: openai.OpenAI, **kw: Any) -> float:
    """Relay a stream; the cost its usage chunk carries."""
    with client.chat.completions.with_streaming_response.create(
            stream=True, stream_options={"include_usage": True}, **kw) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    return float(next(c for c in chunks if c.get("usage"))["switchyard"]["cost_usd"])


def test_metrics_after_traffic_count_requests_tokens_cache_routing_and_cost(gw: GatewayServer) -> None:
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="none", max_retries=0)
    header_costs, prompt_tokens, completion_tokens = [], 0, 0
    for i in range(6):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"What is {i} + {i * 3}?"}], temperature=0)
        header_costs.append(float(raw.headers["x-switchyard-cost-usd"]))
        usage = raw.parse().usage
        assert usage is not None
        prompt_tokens += usage.prompt_tokens
        completion_tokens += usage.completion_tokens
    again = client.chat.completions.with_raw_response.create(  # the first one again: a cache hit, free
        model="auto", messages=[{"role": "user", "content": "What is 0 + 0?"}], temperature=0)
    assert again.headers["x-switchyard-cache"] == "hit"
    header_costs.append(float(again.headers["x-switchyard-cost-usd"]))
    stream_costs = [_stream(client, model="streamy", messages=[{"role": "user", "content": f"story {i}"}])
                    for i in range(2)]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])

    m = scrape(gw.base_url)
    assert total(m, "switchyard_requests_total", status="200") == 9
    assert total(m, "switchyard_requests_total", status="200", plan_kind="cache") == 1
    assert total(m, "switchyard_requests_total", status="200", deployment="streamy", policy="pinned") == 2
    assert total(m, "switchyard_requests_total", status="404") == 1
    assert total(m, "switchyard_requests_total", tenant="default", policy="balanced", status="200") == 7
    # the cost counter is what the responses said, to the last digit they carry
    assert total(m, "switchyard_cost_usd_total") == pytest.approx(sum(header_costs) + sum(stream_costs),
                                                                  rel=1e-9, abs=1e-12)
    assert total(m, "switchyard_cost_usd_total", deployment="streamy") == pytest.approx(sum(stream_costs))
    assert total(m, "switchyard_cache_lookups_total", result="hit") == 1
    assert total(m, "switchyard_cache_lookups_total", result="miss") == 6
    decisions = total(m, "switchyard_router_decisions_total", policy="balanced")
    assert decisions == 6
    assert decisions == sum(total(m, "switchyard_router_decisions_total", policy="balanced", tier=t)
                            for t in ("small", "large"))
    # tokens: the GenAI histogram per upstream call, and the billed counter
    usage = "gen_ai_client_token_usage_sum"
    routed = [d for d in ("small", "large")]
    assert sum(total(m, usage, gen_ai_token_type="input", switchyard_deployment=d) for d in routed) == prompt_tokens
    assert sum(total(m, usage, gen_ai_token_type="output", switchyard_deployment=d) for d in routed) \
        == completion_tokens
    assert total(m, "switchyard_tokens_total", type="output", policy="balanced") == completion_tokens
    assert total(m, "gen_ai_client_operation_duration_seconds_count", gen_ai_provider_name="openai") == 8
    assert total(m, "gen_ai_client_operation_time_to_first_chunk_seconds_count", switchyard_deployment="streamy") == 2
    # every request, the error too, is in the latency histograms
    assert total(m, "switchyard_gateway_overhead_seconds_count") == 10
    assert total(m, "switchyard_request_duration_seconds_count") == 10
    assert total(m, "switchyard_gateway_overhead_seconds_sum") < total(m, "switchyard_request_duration_seconds_sum")
    states = {labels["deployment"]: v for labels, v in m["switchyard_circuit_state"]}
    assert states["small"] == 0 and set(states) >= {"small", "large", "broken", "streamy"}
    for name in m:  # bounded labels: never a request id or a prompt
        assert not any("req_" in v or "What is" in v for labels, _ in m[name] for v in labels.values())


def test_the_circuit_gauge_and_failure_counter_show_a_failing_deployment(gw: GatewayServer) -> None:
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="none", max_retries=0)
    statuses = []
    for _ in range(4):  # two attempts each; the circuit opens at the fifth failure, the fourth call is refused
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
        statuses.append(failed.value.status_code)
    assert statuses == [502, 502, 502, 503]
    m = scrape(gw.base_url)
    states = {labels["deployment"]: v for labels, v in m["switchyard_circuit_state"]}
    assert states["broken"] == 2  # open
    assert total(m, "switchyard_upstream_failures_total", deployment="broken", error_type="500") == 5
    assert total(m, "gen_ai_client_operation_duration_seconds_count", switchyard_deployment="broken",
                 error_type="500") == 5
    assert total(m, "switchyard_requests_total", deployment="none", policy="pinned", status="502") == 3
    assert total(m, "switchyard_requests_total", status="503") == 1


def test_feedback_labels_are_counted_by_source(gw: GatewayServer) -> None:
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="none", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="auto",
                                                           messages=[{"role": "user", "content": "Rate me."}])
    given = httpx.post(gw.base_url + "/v1/feedback", json={"request_id": raw.headers["x-request-id"], "score": 1.0},
                       timeout=10)
    assert given.status_code == 200, given.text
    m = scrape(gw.base_url)
    assert total(m, "switchyard_feedback_total", source="user") == 1
    assert total(m, "switchyard_feedback_total", source="user", origin="client") == 1  # posted, not the gateway's
    assert total(m, "switchyard_feedback_total", source="user", origin="gateway") == 0
    assert total(m, "switchyard_request_log_records_total", outcome="written") >= 1
    assert "switchyard_shadow_jobs_total" in m or "switchyard_shadow_jobs" in {n.removesuffix("_total") for n in m}


TENANTS = [{"name": "acme", "api_key_env": "SY_METRICS_TENANT_KEY"}]


def _tenant_app(simulator: Simulator, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> Any:
    monkeypatch.setenv("SY_METRICS_TENANT_KEY", "sk-metrics-tenant")
    raw = sim_config(simulator.url).model_dump(mode="json") | {"tenants": TENANTS, **extra}
    return create_app(parse_config(raw, "test"), watch_policies_s=None, watch_router_s=None)


async def test_metrics_with_tenants_need_a_loopback_caller_or_the_metrics_token(
        simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_METRICS_TOKEN", "scrape-secret")
    app = _tenant_app(simulator, monkeypatch, metrics_token_env="SY_METRICS_TOKEN")
    remote = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=remote, base_url="http://gw") as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers={"authorization": "Bearer sk-metrics-tenant"})).status_code == 401
        assert (await c.get("/metrics", headers={"authorization": "Bearer wrong"})).status_code == 401
        ok = await c.get("/metrics", headers={"authorization": "Bearer scrape-secret"})
        assert ok.status_code == 200 and "switchyard_circuit_state" in ok.text
    local = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=local, base_url="http://gw") as c:
        assert (await c.get("/metrics")).status_code == 200


async def test_metrics_with_tenants_and_no_token_configured_are_loopback_only(
        simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _tenant_app(simulator, monkeypatch)
    remote = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=remote, base_url="http://gw") as c:
        assert (await c.get("/metrics", headers={"authorization": "Bearer "})).status_code == 401


class _Receiver(BaseHTTPRequestHandler):
    posts: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length") or 0)
        _Receiver.posts.append((self.path, self.rfile.read(size)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def otlp_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bytes]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    _Receiver.posts = []
    yield _Receiver.posts
    server.shutdown()
    server.server_close()


def test_metrics_are_pushed_over_otlp_when_an_endpoint_is_set(otlp_receiver: list[tuple[str, bytes]]) -> None:
    metrics = Metrics()
    try:
        metrics.requests.add(("default", "balanced", "single", "small", "200"))
        metrics.overhead.record(("balanced",), 0.0004)
        wait_until(lambda: any(path == "/v1/metrics" and b"switchyard.requests" in body
                               and b"switchyard.gateway.overhead" in body for path, body in otlp_receiver),
                   timeout_s=10, what="an OTLP metrics export with the counters and histograms")
    finally:
        metrics.shutdown()


def test_requests_refused_at_admission_are_not_counted_as_router_decisions(
        simulator: Simulator, policies_dir: Path) -> None:
    """The decision counter says how traffic was routed: a request refused by its rate limit (or budget)
    was routed only to size its reservation, and is counted in `switchyard_requests_total` as a 429."""
    tenants = [{"name": "capped", "api_key_sha256": hash_key("sk-capped"), "requests_per_minute": 2}]
    app = create_app(sim_config(simulator.url, tenants=tenants), policies_dir=policies_dir, watch_policies_s=None)
    with running_gateway(app) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="sk-capped", max_retries=0)
        for i in range(2):
            client.chat.completions.create(model="auto", messages=[{"role": "user", "content": f"Sum {i} and 1."}])
        for i in range(3):
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="auto", messages=[{"role": "user", "content": f"Add {i}."}])
        m = scrape(server.base_url)
    assert total(m, "switchyard_requests_total", status="429") == 3
    assert total(m, "switchyard_router_decisions_total") == 2
