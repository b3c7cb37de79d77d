"""Traces carry model, tokens and cost; the litellm backend reaches a real OpenAI-compatible server."""

from __future__ import annotations

import uuid
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.integration.conftest import sim_config
from tests.support.processes import ROOT, Simulator, running_gateway


def test_a_request_span_has_route_and_upstream_children_with_cost(
        base_url: str, spans: InMemorySpanExporter) -> None:
    spans.clear()
    raw = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": f"Name a river. {uuid.uuid4().hex}"}])
    trace_id = int(raw.headers["x-switchyard-trace-id"], 16)
    mine = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_name = {s.name: s for s in mine}
    upstream = next(s for s in mine if s.kind == SpanKind.CLIENT)  # `chat {model}`, one per provider call
    assert {"switchyard.request", "switchyard.route", f"chat {upstream.attributes['gen_ai.request.model']}"} \
        <= set(by_name)
    root = by_name["switchyard.request"]
    assert upstream.parent.span_id == root.context.span_id
    assert root.attributes["switchyard.cost_usd"] == pytest.approx(float(raw.headers["x-switchyard-cost-usd"]))
    assert upstream.attributes["gen_ai.usage.output_tokens"] == raw.parse().usage.completion_tokens
    assert upstream.attributes["switchyard.deployment"] == raw.headers["x-switchyard-model"]


def test_a_cache_hits_span_names_the_plan_its_answer_came_from(base_url: str, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    ask: dict[str, Any] = {"model": "auto", "temperature": 0,
                           "messages": [{"role": "user", "content": f"Name a lake. {uuid.uuid4().hex}"}]}
    client.chat.completions.create(**ask)
    spans.clear()
    raw = client.chat.completions.with_raw_response.create(**ask)
    assert raw.headers["x-switchyard-cache"] == "hit"
    trace_id = int(raw.headers["x-switchyard-trace-id"], 16)
    root = next(s for s in spans.get_finished_spans()
                if s.context.trace_id == trace_id and s.name == "switchyard.request")
    assert root.attributes["switchyard.cache"] == "hit"
    assert root.attributes["switchyard.plan"] == raw.headers["x-switchyard-plan"]


def test_a_request_for_a_model_that_does_not_exist_is_traced_under_its_tenant(
        base_url: str, spans: InMemorySpanExporter) -> None:
    spans.clear()
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="made-up-model-xyz", messages=[{"role": "user", "content": "hi"}])
    [root] = [s for s in spans.get_finished_spans()
              if s.name == "switchyard.request" and s.attributes.get("error.type") == "NotFound"]
    assert root.attributes["switchyard.tenant"]


def test_litellm_backend_talks_to_an_openai_compatible_server(simulator: Simulator) -> None:
    config = parse_config({"deployments": [
        {"name": "small", "model": "openai/sim-small", "api_base": simulator.url, "backend": "litellm",
         "tier": "small", "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}},
        {"name": "large", "model": "openai/sim-large", "api_base": simulator.url, "backend": "litellm",
         "tier": "large", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
    ]}, "litellm test")
    with running_gateway(create_app(config, policies_dir=ROOT / "routing_policies")) as gw:
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="small", messages=[{"role": "user", "content": "What is 2 + 3?"}], temperature=0)
        usage = raw.parse().usage
        assert raw.parse().choices[0].message.content.startswith("The answer is")
        assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(
            usage.prompt_tokens * 0.2e-6 + usage.completion_tokens * 0.4e-6)
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="large", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
        assert text.startswith("The answer is")


def test_traces_are_exported_over_otlp_when_an_endpoint_is_set(
        simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    received: list[tuple[str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    collector = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    try:
        with running_gateway(create_app(sim_config(simulator.url), policies_dir=ROOT / "routing_policies")) as gw:
            client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="x", max_retries=0)
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
        # shutting the gateway down flushes the batch exporter
    finally:
        collector.shutdown()
    paths = {p for p, _ in received}
    assert paths == {"/v1/traces", "/v1/metrics"}  # metrics too: shutting down pushes their last values
    payload = b"".join(body for _, body in received)
    assert b"switchyard.request" in payload and b"chat sim-small" in payload
    assert b"gen_ai.usage.output_tokens" in payload
