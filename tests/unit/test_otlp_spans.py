"""Span batches encoded in place decode to exactly what the SDK's OTLP encoder gives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
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
from gateway.telemetry import Telemetry, set_attributes


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


def _sdk_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    data: bytes = sdk_encode_spans(spans).SerializePartialToString()
    return data


def _varied() -> tuple[ReadableSpan, ...]:
    """Spans that take every branch of the encoder: each kind and status, remote and local parents,
    trace state, varint lengths past one byte, each attribute type, events, links, dropped counts."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "switchyard", "n": 2}, "https://schema/r"),
                              span_limits=SpanLimits(max_span_attributes=6))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("switchyard", "9.9", schema_url="https://schema/s", attributes={"a": "b"})
    caller = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "abc"), ("x", "y")]))
    values: list[dict[str, Any]] = [
        {"s": "x" * 300, "empty": "", "uni": "héllo ✓", "t": True, "f": False},
        {"neg": -1, "zero": 0, "big": 2**63 - 1, "small": -(2**63), "mid": 300},
        {"nan": float("nan"), "inf": float("-inf"), "half": 0.5, "tags": ("a", "b"), "nums": (1, 2)},
        {"k" * 200: "long key", "n": 127, "m": 128},
    ]
    parent = tracer.start_span("switchyard.request", set_span_in_context(NonRecordingSpan(caller)),
                               kind=SpanKind.SERVER)
    for i, kind in enumerate(SpanKind):
        span = tracer.start_span(f"span {i} " + "n" * (i * 40), set_span_in_context(parent), kind=kind)
        span.set_attributes(values[i % len(values)])
        if i == 1:
            span.set_status(Status(StatusCode.ERROR, "upstream 500: " + "e" * 200))
        elif i == 2:
            span.set_status(Status(StatusCode.OK))
        elif i == 3:
            span.set_status(Status(StatusCode.ERROR))
        if i == 4:
            span.add_event("retry", {"attempt": 2})
            span.add_link(caller, {"why": "caller"})
        span.end()
    overfull = tracer.start_span("overfull")  # 8 attributes under a limit of 6: 2 dropped
    overfull.set_attributes({f"a{i}": i for i in range(8)})
    overfull.end()
    parent.end()
    provider.get_tracer("").start_span("").end()  # an empty scope name and span name
    provider.shutdown()
    return memory.get_finished_spans()


def test_a_batch_is_byte_for_byte_what_the_sdk_encoder_gives() -> None:
    spans = _spans() + _varied()
    assert encode_spans(spans) == _sdk_bytes(spans)
    assert encode_spans(spans) == _sdk_bytes(spans)  # again, from the strings and names kept


def test_the_gateways_own_spans_encode_as_the_sdk_encodes_them() -> None:
    memory = InMemorySpanExporter()
    telemetry = Telemetry(memory)
    span = telemetry.start("switchyard.request", None, kind=SpanKind.SERVER, gen_ai__request__model="auto",
                           switchyard__evidence={"votes": {"small": 2}})
    with telemetry.span("switchyard.route", span, switchyard__router__version="v1") as route:
        set_attributes(route, switchyard__difficulty=0.25)
    set_attributes(span, switchyard__cost_usd=9e-6, gen_ai__usage__input_tokens=30, error__type="Timeout")
    span.end()
    spans = memory.get_finished_spans()
    assert len(spans) == 2
    assert encode_spans(spans) == _sdk_bytes(spans)


def test_spans_the_encoder_does_not_write_itself_are_encoded_by_the_sdk() -> None:
    class Own(ReadableSpan):
        pass

    spans = _spans()
    own = Own(name="own", context=spans[0].get_span_context(), attributes={"x": 1}, start_time=1, end_time=2)
    out_of_range = ReadableSpan(name="big", context=spans[0].get_span_context(), attributes={"n": 2**64},
                                start_time=1, end_time=2)  # the SDK's encoder leaves such a value out
    batch = (*spans, own, out_of_range)
    assert encode_spans(batch) == _sdk_bytes(batch)
