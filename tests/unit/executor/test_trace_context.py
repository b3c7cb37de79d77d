"""Each upstream call carries its own span's W3C context, and only while spans are recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.errors import UpstreamTimeout
from gateway.executor import Deadline, Upstreams
from gateway.providers.base import ProviderFailure
from gateway.telemetry import Telemetry
from tests.support.fake_backend import Delay, answer, deployment, fake_upstreams

BODY = {"messages": [{"role": "user", "content": "hi"}]}
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _traced(up: Upstreams) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    up.telemetry = Telemetry(exporter)
    return exporter


def test_without_span_export_no_trace_headers_are_read_or_sent() -> None:
    up, backend = fake_upstreams(lambda d, b: answer(), deployment("small"))
    assert up.telemetry.extract({"traceparent": CALLER}) is None
    asyncio.run(up.call(("small",), BODY, None, deadline=Deadline.after(5)))
    assert backend.headers == [None]


def test_a_call_carries_its_span_as_the_upstream_parent_under_the_callers_trace() -> None:
    up, backend = fake_upstreams(lambda d, b: answer(), deployment("small"))
    spans = _traced(up)
    request = up.telemetry.start("switchyard.request", up.telemetry.extract({"traceparent": CALLER}),
                                 kind=SpanKind.SERVER)
    asyncio.run(up.call(("small",), BODY, request, deadline=Deadline.after(5)))
    request.end()
    (call,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert call.name == "chat small"
    assert format(call.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert backend.headers == [{"traceparent": f"00-0af7651916cd43dd8448eb211c80319c-{call.context.span_id:016x}-01"}]


def test_an_unsampled_caller_is_propagated_unsampled() -> None:
    up, backend = fake_upstreams(lambda d, b: answer(), deployment("small"))
    spans = _traced(up)
    unsampled = CALLER[:-2] + "00"
    request = up.telemetry.start("switchyard.request", up.telemetry.extract({"traceparent": unsampled}))
    asyncio.run(up.call(("small",), BODY, request, deadline=Deadline.after(5)))
    assert spans.get_finished_spans() == ()
    (sent,) = backend.headers
    assert sent is not None and sent["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert sent["traceparent"].endswith("-00")


def test_a_stream_failing_midway_ends_its_span_as_an_error_with_its_type() -> None:
    up, _ = fake_upstreams(lambda d, b: answer(model="served-model"), deployment("small"))
    spans = _traced(up)

    async def go() -> Any:
        live = await up.open_stream(("small",), BODY, None, deadline=Deadline.after(5))
        return up.close_stream(live, ProviderFailure("small: stream stalled", timeout=True))

    asyncio.run(go())
    (call,) = spans.get_finished_spans()
    assert call.attributes is not None and call.attributes["error.type"] == "timeout"
    assert call.status.status_code == StatusCode.ERROR


def test_the_headers_sent_upstream_are_what_the_w3c_propagator_writes() -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    telemetry = Telemetry(InMemorySpanExporter())
    for flags, state in (("01", None), ("00", "vendor=abc,other=1")):
        given = {"traceparent": CALLER[:-2] + flags} | ({"tracestate": state} if state else {})
        span = telemetry.start("switchyard.request", telemetry.extract(given))
        expected: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(expected, trace.set_span_in_context(span))
        assert telemetry.inject(span) == expected


def test_an_attempt_cut_short_by_the_requests_deadline_is_a_timeout_error_span() -> None:
    up, _ = fake_upstreams(lambda d, b: Delay(2), deployment("small", timeout_s=30, max_retries=0))
    spans = _traced(up)
    with pytest.raises(UpstreamTimeout):
        asyncio.run(up.call(("small",), BODY, None, deadline=Deadline.after(0.05)))
    (call,) = spans.get_finished_spans()
    assert call.attributes is not None and call.attributes["error.type"] == "timeout"
    assert call.status.status_code == StatusCode.ERROR
