"""The OTLP/HTTP span exporter, with batches encoded in place.

The SDK's encoder builds each protobuf message from keyword arguments holding already-built
messages, and protobuf copies every such argument into its parent (serialised and parsed again):
a span's attributes are copied into the span, the spans into their scope, the scopes into the
request. On the gateway that copying was the largest part of exporting a span. Here each message
is added to its parent and filled where it lies, so every span is encoded once; the bytes decode to
what the SDK's encoder gives (tests/unit/test_otlp_spans.py). Events and links, which our spans
do not carry, are encoded by the SDK's own helpers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_events, _encode_links
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

log = logging.getLogger("switchyard.telemetry")

_KIND = {SpanKind.INTERNAL: PbSpan.SPAN_KIND_INTERNAL, SpanKind.SERVER: PbSpan.SPAN_KIND_SERVER,
         SpanKind.CLIENT: PbSpan.SPAN_KIND_CLIENT, SpanKind.PRODUCER: PbSpan.SPAN_KIND_PRODUCER,
         SpanKind.CONSUMER: PbSpan.SPAN_KIND_CONSUMER}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags: the parent's remoteness is known / it is remote


def _value(out: AnyValue, value: Any) -> None:
    # bool before int: a bool is an int to isinstance
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, Sequence):
        values = out.array_value.values
        for v in value:
            _value(values.add(), v)
    elif isinstance(value, Mapping):
        pairs = out.kvlist_value.values
        for k, v in value.items():
            kv = pairs.add()
            kv.key = str(k)
            _value(kv.value, v)
    elif value is not None:
        raise TypeError(f"invalid attribute type {type(value)} of value {value!r}")


def _attributes(out: Any, attributes: Mapping[str, Any] | None) -> None:
    if not attributes:
        return
    # A span's attributes are a read-only view of the SDK's BoundedAttributes, whose items() is a
    # Python-level __iter__ and __getitem__ per key; its copy() is a plain dict, iterated in C.
    copy = getattr(attributes, "copy", None)
    pairs = copy() if copy is not None else attributes
    add = out.add
    for key, value in pairs.items():
        kv = add()
        kv.key = key
        # Nearly every value is exactly a str, int or float: tested by type here, without a call, and
        # without the isinstance chain of `_value` (whose Sequence and Mapping checks are ABC checks).
        kind = type(value)
        if kind is str:
            kv.value.string_value = value
        elif kind is int:
            kv.value.int_value = value
        elif kind is float:
            kv.value.double_value = value
        else:
            _value(kv.value, value)


def _may_hold(span: ReadableSpan, name: str) -> bool:
    """False when the span's own list `name` (`_events`, `_links`) is there and empty. Our spans carry
    neither, and the public `events`/`links` copy the SDK's list under its lock into a tuple each time."""
    held = getattr(span, name, None)
    return held is None or len(held) > 0


def _resource(request: ExportTraceServiceRequest, resource: Any) -> ResourceSpans:
    rs: ResourceSpans = request.resource_spans.add()
    _attributes(rs.resource.attributes, resource.attributes)
    if resource.schema_url:
        rs.schema_url = resource.schema_url
    return rs


def _scope(rs: ResourceSpans, scope: Any) -> ScopeSpans:
    ss: ScopeSpans = rs.scope_spans.add()
    ss.scope.SetInParent()  # present, if empty, as the SDK's encoder writes it
    if scope is not None:
        ss.scope.name = scope.name
        if scope.version:
            ss.scope.version = scope.version
        _attributes(ss.scope.attributes, scope.attributes)
        if scope.schema_url:
            ss.schema_url = scope.schema_url
    return ss


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest of `spans`, grouped by resource and scope, serialised."""
    request = ExportTraceServiceRequest()
    resources: dict[Any, tuple[ResourceSpans, dict[Any, ScopeSpans]]] = {}
    # Spans are grouped by equal resource and scope, as the SDK's encoder groups them; but a Resource
    # hashes by encoding its attributes as JSON, so each resource and scope object is looked up by
    # identity first (the spans of a batch share a handful of objects, alive for the whole batch).
    groups: dict[tuple[int, int], ScopeSpans] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        group = groups.get((id(resource), id(scope)))
        if group is None:
            known = resources.get(resource)
            if known is None:
                known = resources[resource] = (_resource(request, resource), {})
            rs, scopes = known
            group = scopes.get(scope)
            if group is None:
                group = scopes[scope] = _scope(rs, scope)
            groups[(id(resource), id(scope))] = group
        out = group.spans.add()
        ctx = span.get_span_context()
        assert ctx is not None
        out.trace_id = ctx.trace_id.to_bytes(16, "big")
        out.span_id = ctx.span_id.to_bytes(8, "big")
        if ctx.trace_state:
            out.trace_state = ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())
        parent, flags = span.parent, _HAS_IS_REMOTE
        if parent is not None:
            out.parent_span_id = parent.span_id.to_bytes(8, "big")
            if parent.is_remote:
                flags |= _IS_REMOTE
        out.flags = flags
        out.name = span.name
        out.kind = _KIND[span.kind]
        out.start_time_unix_nano = span.start_time or 0
        out.end_time_unix_nano = span.end_time or 0
        _attributes(out.attributes, span.attributes)
        if _may_hold(span, "_events") and (events := span.events):
            out.events.extend(_encode_events(events) or ())
        if _may_hold(span, "_links") and (links := span.links):
            out.links.extend(_encode_links(links) or ())
        out.status.code = span.status.status_code.value
        if span.status.description:
            out.status.message = span.status.description
        out.dropped_attributes_count = span.dropped_attributes
        out.dropped_events_count = span.dropped_events
        out.dropped_links_count = span.dropped_links
    data: bytes = request.SerializePartialToString()
    return data


class InPlaceSpanExporter(OTLPSpanExporter):
    """`OTLPSpanExporter` (its endpoint, headers, compression, retries, OTEL_* variables), with our
    encoder; should the SDK's internals it posts through change, it falls back to the SDK's export."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        limit = getattr(self, "_max_request_size", None)
        if getattr(self, "_shutdown", True) or client is None or not hasattr(client, "export"):
            return super().export(spans)
        try:
            data = encode_spans(spans)
        except Exception as exc:  # what the SDK does with a batch it cannot encode: drop it, said once
            log.error("failed to encode a span batch: %s", exc)
            return SpanExportResult.FAILURE
        if limit is not None and len(data) > limit:
            return super().export(spans)  # the SDK's own handling of an oversized batch
        return SpanExportResult.SUCCESS if client.export(data).success else SpanExportResult.FAILURE
