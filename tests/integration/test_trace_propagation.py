"""Traces connect: the caller's `traceparent` is the request span's parent, each upstream call is a
GenAI CLIENT span whose context the upstream receives, all checked at a real OTLP/HTTP receiver."""

from __future__ import annotations

import http.server
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.integration.conftest import sim_config
from tests.support.processes import GatewayServer, Simulator, running_gateway


@dataclass(frozen=True)
class Received:
    """One span as the receiver decoded it."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status: int
    attributes: dict[str, Any]


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


class OtlpReceiver:
    """An OTLP/HTTP receiver as a collector is: POST /v1/traces with a protobuf ExportTraceServiceRequest,
    and /v1/metrics with an ExportMetricsServiceRequest (the gateway pushes its metrics to the same
    endpoint, at least once as it shuts down); each body is decoded as what its path says it is."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.metric_exports = 0
        self.paths: set[str] = set()
        lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path == "/v1/metrics":
                    ExportMetricsServiceRequest.FromString(body)  # well-formed, or the handler raises
                    with lock:
                        receiver.paths.add(self.path)
                        receiver.metric_exports += 1
                    self._reply(ExportMetricsServiceResponse().SerializeToString())
                    return
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                decoded = ExportTraceServiceRequest.FromString(body)
                with lock:
                    receiver.paths.add(self.path)
                    receiver.spans += [
                        Received(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                                 s.status.code, {a.key: _value(a.value) for a in s.attributes})
                        for rs in decoded.resource_spans for ss in rs.scope_spans for s in ss.spans]
                self._reply(ExportTraceServiceResponse().SerializeToString())

            def _reply(self, reply: bytes) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def trace(self, trace_id: str, *names: str, timeout_s: float = 10.0) -> list[Received]:
        """The spans of one trace, once those named have arrived (a name given twice: two such spans)."""
        wanted = Counter(names)
        deadline = time.monotonic() + timeout_s
        while True:
            mine = [s for s in list(self.spans) if s.trace_id == trace_id]
            if not wanted - Counter(s.name for s in mine):
                return mine
            if time.monotonic() > deadline:
                raise AssertionError(f"spans of trace {trace_id}: {[s.name for s in mine]}, expected {names}")
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def exporting(receiver: OtlpReceiver) -> Iterator[None]:
    """Gateways built inside export to the receiver, in batches sent every 50 ms."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        yield


@pytest.fixture(scope="module")
def traced(simulator: Simulator, policies_dir: Path, exporting: None) -> Iterator[GatewayServer]:
    with running_gateway(create_app(sim_config(simulator.url), policies_dir=policies_dir)) as gw:
        yield gw


def _caller() -> tuple[str, str, str]:
    """A caller's trace id, span id and its `traceparent` (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _chat(gw: GatewayServer, model: str, headers: dict[str, str], **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": f"Name a river. {uuid.uuid4().hex}"}],
            **extra}
    resp = httpx.post(gw.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
    return resp


def _received_traceparents(simulator: Simulator, trace_id: str) -> list[str]:
    return [h["traceparent"] for h in simulator.received() if h.get("traceparent", "").startswith(f"00-{trace_id}-")]


def test_an_incoming_traceparent_yields_spans_in_the_same_trace_and_the_upstream_gets_a_child(
        traced: GatewayServer, receiver: OtlpReceiver, simulator: Simulator) -> None:
    trace_id, caller_span, traceparent = _caller()
    resp = _chat(traced, "small", {"traceparent": traceparent, "tracestate": "vendor=abc"})
    assert resp.status_code == 200
    assert resp.headers["x-switchyard-trace-id"] == trace_id

    spans = {s.name: s for s in receiver.trace(trace_id, "switchyard.request", "switchyard.route", "chat sim-small")}
    request, upstream = spans["switchyard.request"], spans["chat sim-small"]
    assert request.parent_span_id == caller_span
    assert request.kind == ProtoSpan.SPAN_KIND_SERVER
    assert spans["switchyard.route"].parent_span_id == request.span_id
    assert upstream.parent_span_id == request.span_id
    # The upstream saw the upstream span as its parent, and the caller's vendor state passed through.
    assert _received_traceparents(simulator, trace_id) == [f"00-{trace_id}-{upstream.span_id}-01"]
    sent = next(h for h in simulator.received() if h.get("traceparent", "").startswith(f"00-{trace_id}-"))
    assert sent["tracestate"] == "vendor=abc"


def test_upstream_spans_follow_the_genai_semantic_conventions(
        traced: GatewayServer, receiver: OtlpReceiver, simulator: Simulator) -> None:
    trace_id, _, traceparent = _caller()
    resp = _chat(traced, "small", {"traceparent": traceparent}, temperature=0)
    usage = resp.json()["usage"]
    upstream = next(s for s in receiver.trace(trace_id, "chat sim-small") if s.name == "chat sim-small")
    sim = httpx.URL(simulator.url)
    assert upstream.kind == ProtoSpan.SPAN_KIND_CLIENT
    expected = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "sim-small", "gen_ai.response.model": "sim-small",
        "gen_ai.request.temperature": 0, "server.address": sim.host, "server.port": sim.port,
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"], "switchyard.deployment": "small",
        "switchyard.cost_usd": pytest.approx(float(resp.headers["x-switchyard-cost-usd"])),
    }
    assert {k: upstream.attributes.get(k) for k in expected} == expected
    assert "gen_ai.system" not in upstream.attributes  # deprecated, and it named our backend, not the provider
    assert upstream.status == ProtoStatus.STATUS_CODE_UNSET


def test_a_streamed_upstream_span_names_the_response_model_and_the_upstream_gets_a_child(
        traced: GatewayServer, receiver: OtlpReceiver, simulator: Simulator) -> None:
    trace_id, _, traceparent = _caller()
    resp = _chat(traced, "streamy", {"traceparent": traceparent}, stream=True)
    assert resp.status_code == 200 and resp.text.rstrip().endswith("data: [DONE]")
    spans = {s.name: s for s in receiver.trace(trace_id, "chat sim-streamy", "switchyard.request")}
    upstream = spans["chat sim-streamy"]
    assert upstream.attributes["gen_ai.response.model"] == "sim-streamy"
    assert upstream.attributes["gen_ai.usage.output_tokens"] > 0
    # the request's span says whether its answer was cacheable, as a whole answer's does
    assert spans["switchyard.request"].attributes["switchyard.cache"] == resp.headers["x-switchyard-cache"]
    assert _received_traceparents(simulator, trace_id) == [f"00-{trace_id}-{upstream.span_id}-01"]


def test_each_failed_attempt_is_an_error_span_with_its_error_type_and_its_own_child_traceparent(
        traced: GatewayServer, receiver: OtlpReceiver, simulator: Simulator) -> None:
    trace_id, _, traceparent = _caller()
    resp = _chat(traced, "broken", {"traceparent": traceparent})
    assert resp.status_code == 502
    attempts = [s for s in receiver.trace(trace_id, "chat sim-broken", "chat sim-broken")
                if s.name == "chat sim-broken"]
    assert len(attempts) == 2  # max_retries: 1
    assert {s.attributes["error.type"] for s in attempts} == {"500"}
    assert {s.status for s in attempts} == {ProtoStatus.STATUS_CODE_ERROR}
    assert sorted(_received_traceparents(simulator, trace_id)) == sorted(
        f"00-{trace_id}-{s.span_id}-01" for s in attempts)


def test_a_request_that_fails_on_the_gateway_side_is_an_error_span_and_a_refusal_is_not(
        traced: GatewayServer, receiver: OtlpReceiver) -> None:
    # As the HTTP conventions say of a SERVER span: a 5xx is an error of the request, a 4xx the caller's.
    outcomes = {}
    for model, status in (("broken", 502), ("slow", 504), ("router/tight", 422)):
        trace_id, _, traceparent = _caller()
        assert _chat(traced, model, {"traceparent": traceparent}).status_code == status
        request = next(s for s in receiver.trace(trace_id, "switchyard.request") if s.name == "switchyard.request")
        outcomes[status] = (request.status, request.attributes.get("error.type"))
    assert outcomes == {502: (ProtoStatus.STATUS_CODE_ERROR, "UpstreamError"),
                        504: (ProtoStatus.STATUS_CODE_ERROR, "UpstreamTimeout"),
                        422: (ProtoStatus.STATUS_CODE_UNSET, "ConstraintUnsatisfiable")}


def test_a_request_refused_before_it_is_read_whole_is_a_span_of_the_callers_trace(
        traced: GatewayServer, receiver: OtlpReceiver) -> None:
    # A body the gateway refuses (here a temperature out of range) is counted and logged as a request:
    # it is traced as one too, under the caller's span, an error of the caller's (status unset).
    trace_id, caller_span, traceparent = _caller()
    assert _chat(traced, "small", {"traceparent": traceparent}, temperature=9).status_code == 400
    (request,) = [s for s in receiver.trace(trace_id, "switchyard.request") if s.name == "switchyard.request"]
    assert request.parent_span_id == caller_span and request.kind == ProtoSpan.SPAN_KIND_SERVER
    assert request.attributes["error.type"] == "InvalidRequest"
    assert request.status == ProtoStatus.STATUS_CODE_UNSET


def test_an_error_names_its_trace_as_an_answer_does(traced: GatewayServer) -> None:
    # The trace of a failed request is the one an operator looks up: its error says it, refused or failed.
    for model, extra, status in (("broken", {}, 502), ("nope", {}, 404), ("small", {"temperature": 9}, 400)):
        trace_id, _, traceparent = _caller()
        resp = _chat(traced, model, {"traceparent": traceparent}, **extra)
        assert resp.status_code == status
        assert resp.headers.get("x-switchyard-trace-id") == trace_id, (model, status)


def test_structured_span_attributes_are_json(traced: GatewayServer, receiver: OtlpReceiver) -> None:
    trace_id, _, traceparent = _caller()
    resp = _chat(traced, "router/vote5", {"traceparent": traceparent})
    assert resp.status_code == 200
    request = next(s for s in receiver.trace(trace_id, "switchyard.request") if s.name == "switchyard.request")
    votes = orjson.loads(request.attributes["switchyard.votes"])
    evidence = orjson.loads(request.attributes["switchyard.evidence"])
    assert evidence["selector"] == "vote" and evidence["samples"] == 5
    # the votes are the samples' extracted answers counted, and the winner's share is the agreement
    assert votes == dict(Counter(a for a in evidence["answers"] if a is not None))
    assert max(votes.values()) / 5 == pytest.approx(evidence["agreement"])


def test_a_request_without_traceparent_starts_its_own_trace(
        traced: GatewayServer, receiver: OtlpReceiver, simulator: Simulator) -> None:
    resp = _chat(traced, "small", {})
    trace_id = resp.headers["x-switchyard-trace-id"]
    spans = {s.name: s for s in receiver.trace(trace_id, "switchyard.request", "chat sim-small")}
    assert spans["switchyard.request"].parent_span_id == ""
    (sent,) = _received_traceparents(simulator, trace_id)
    assert sent.startswith(f"00-{trace_id}-{spans['chat sim-small'].span_id}-")
    assert int(sent[-2:], 16) & 1  # sampled (the SDK may also set the random-trace-id flag)


def test_litellm_calls_carry_a_child_traceparent_upstream(
        simulator: Simulator, receiver: OtlpReceiver, exporting: None) -> None:
    config = parse_config({"deployments": [
        {"name": "small", "model": "openai/sim-small", "api_base": simulator.url, "backend": "litellm",
         "tier": "small", "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}},
        {"name": "large", "model": "openai/sim-large", "api_base": simulator.url, "backend": "litellm",
         "tier": "large", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
    ]}, "litellm test")
    with running_gateway(create_app(config)) as gw:
        for model, stream in (("small", False), ("large", True)):
            trace_id, caller_span, traceparent = _caller()
            resp = _chat(gw, model, {"traceparent": traceparent}, stream=stream)
            assert resp.status_code == 200, resp.text
            spans = {s.name: s for s in receiver.trace(trace_id, "switchyard.request", f"chat sim-{model}")}
            upstream = spans[f"chat sim-{model}"]
            assert spans["switchyard.request"].parent_span_id == caller_span
            assert upstream.attributes["gen_ai.provider.name"] == "openai"
            assert upstream.attributes["gen_ai.response.model"] == f"sim-{model}"
            assert _received_traceparents(simulator, trace_id) == [f"00-{trace_id}-{upstream.span_id}-01"]
    # shutting down pushes the metrics once more, to the same collector, as metrics
    assert receiver.metric_exports >= 1 and receiver.paths == {"/v1/traces", "/v1/metrics"}
