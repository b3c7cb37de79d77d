"""Span batches encoded in place decode to exactly what the SDK's OTLP encoder gives."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from gateway.otlp_spans import encode_spans


def _spans() -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "switchyard"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    caller = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "abc")]))
    tracer, other = provider.get_tracer("switchyard"), provider.get_tracer("other", "1.2")
    request = tracer.start_span("switchyard.request", set_span_in_context(NonRecordingSpan(caller)),
                                kind=SpanKind.SERVER, attributes={"gen_ai.request.model": "auto", "n": 3,
                                                                  "ok": True, "cost": 0.25, "tags": ["a", "b"]})
    upstream = tracer.start_span("chat sim-small", set_span_in_context(request), kind=SpanKind.CLIENT,
                                 links=[Link(caller, {"why": "caller"})])
    upstream.add_event("retry", {"attempt": 2})
    upstream.set_status(Status(StatusCode.ERROR, "500"))
    upstream.end()
    route = other.start_span("switchyard.route", set_span_in_context(request))
    route.end()
    request.end()
    provider.shutdown()
    return memory.get_finished_spans()


def test_a_batch_decodes_to_what_the_sdk_encoder_gives() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = ExportTraceServiceRequest.FromString(sdk_encode_spans(spans).SerializePartialToString())
    assert ours == theirs
    assert sum(len(ss.spans) for rs in ours.resource_spans for ss in rs.scope_spans) == 3


def test_an_empty_batch_is_an_empty_request() -> None:
    assert ExportTraceServiceRequest.FromString(encode_spans(())) == ExportTraceServiceRequest()


def test_spans_of_equal_resources_held_apart_are_grouped_as_the_sdk_groups_them() -> None:
    # Grouping looks resources up by identity first: equal ones from two providers must still merge.
    memory = InMemorySpanExporter()
    for _ in range(2):
        provider = TracerProvider(resource=Resource.create({"service.name": "switchyard"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        for name in ("switchyard.request", "switchyard.route"):
            provider.get_tracer("switchyard").start_span(name, attributes={"n": 1, "x": 0.5, "s": "t"}).end()
    other = TracerProvider(resource=Resource.create({"service.name": "elsewhere"}))
    other.add_span_processor(SimpleSpanProcessor(memory))
    other.get_tracer("switchyard").start_span("switchyard.request").end()
    spans = memory.get_finished_spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = ExportTraceServiceRequest.FromString(sdk_encode_spans(spans).SerializePartialToString())
    assert ours == theirs
    assert [sum(len(ss.spans) for ss in rs.scope_spans) for rs in ours.resource_spans] == [4, 1]
