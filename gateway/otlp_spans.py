"""The OTLP/HTTP span exporter, with batches written straight to protobuf's wire format.

The SDK's encoder builds each protobuf message from keyword arguments holding already-built
messages, and protobuf copies every such argument into its parent (serialised and parsed again).
Filling messages in place spared the copies, but each field set through protobuf's Python API still
cost a lookup and a conversion: about 90,000 instructions per span. A span is a handful of fields
and a dozen attributes, so a span of the SDK's is written here as bytes: the fixed fields packed,
each attribute key, span name and string value encoded once and kept, every message framed by its
length (about 54,000 instructions per span). Resources and scopes (a few per batch), and the rare
span with events, links, a value other than a str, bool, int64 or float, or a class of its own, are
encoded by the SDK's encoder and embedded as they serialise. The request is byte for byte what the
SDK's encoder gives (tests/unit/test_otlp_spans.py).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from typing import Any

import requests
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common._internal import _encode_instrumentation_scope, _encode_resource
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.environment_variables import (
    _OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER,
    _OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

log = logging.getLogger("switchyard.telemetry")

_KIND = {SpanKind.INTERNAL: PbSpan.SPAN_KIND_INTERNAL, SpanKind.SERVER: PbSpan.SPAN_KIND_SERVER,
         SpanKind.CLIENT: PbSpan.SPAN_KIND_CLIENT, SpanKind.PRODUCER: PbSpan.SPAN_KIND_PRODUCER,
         SpanKind.CONSUMER: PbSpan.SPAN_KIND_CONSUMER}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags: the parent's remoteness is known / it is remote

# Wire format: a field's tag is (number << 3) | type, type 0 a varint, 1 eight bytes, 2 a length-
# prefixed run, 5 four bytes. Proto3 leaves out a scalar at its default, which the SDK's encoder
# (through protobuf) does too; a oneof member (AnyValue's) and a set submessage are always written.
_U64 = (1 << 64) - 1
_INT64 = range(-(1 << 63), 1 << 63)
_SMALL = [bytes((n,)) for n in range(128)]  # every varint below 128 is its own byte
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<BBBd").pack  # KeyValue.value's tag and length, AnyValue.double_value's tag, the double
_IDS = struct.Struct(">2sQQ2sQ").pack  # trace_id's tag, its 16 bytes big-endian as two halves, span_id's tag, id
_TIMES = struct.Struct("<BQBQ").pack   # start and end time, each tag and fixed64
_FLAGS = struct.Struct("<2sI").pack    # field 16, fixed32: a two-byte tag
_TRUE, _FALSE = b"\x12\x02\x10\x01", b"\x12\x02\x10\x00"  # KeyValue.value: AnyValue{bool_value}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _framed(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: its tag, the body's length, the body."""
    n = len(body)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + body


def _text(tag: bytes, text: str) -> bytes:
    return _framed(tag, text.encode())


def _resource_ends(resource: Resource) -> tuple[bytes, bytes]:
    """A ResourceSpans' bytes before its scope_spans (field 2: the resource, field 1) and after them
    (its schema_url, field 3), as the SDK encodes them."""
    head = _framed(b"\x0a", _encode_resource(resource).SerializePartialToString())
    return head, _text(b"\x1a", resource.schema_url) if resource.schema_url else b""


def _scope_ends(scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
    """The same for a ScopeSpans and its spans (field 2): the scope, field 1; its schema_url, field 3."""
    head = _framed(b"\x0a", _encode_instrumentation_scope(scope).SerializePartialToString())  # type: ignore[arg-type]
    return head, _text(b"\x1a", scope.schema_url) if scope is not None and scope.schema_url else b""


_KIND_OF = {id(kind): b"\x30" + _SMALL[value] for kind, value in _KIND.items()}  # field 6; an Enum hashes in Python
_CODE_OF = {id(code): code.value for code in StatusCode}
_UNSET = _framed(b"\x7a", b"")


class _Spans:
    """Span messages as bytes. Keys repeat across spans (a few dozen names), and so do names and most
    string values (models, deployments, tenants, plans): each is encoded once and kept, up to a bound
    (values such as error types and JSON evidence vary: past `KEEP` entries the memory starts again).
    A (key, value) item with a str value is looked up as it is: no other value equals a str, so a hit
    is always that string (a str subclass's equal text encodes the same)."""

    KEEP = 4096

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._strings: dict[tuple[str, Any], bytes] = {}
        self._names: dict[str, bytes] = {}

    def encode(self, span: ReadableSpan) -> bytes:
        """`span` as a Span message: a span of the SDK's as the SDK records it, written here; anything
        else (a class of its own, events, links, a value other than a str, bool, int64 or float), as
        the SDK's encoder builds it."""
        try:
            fast = self._plain(span) if type(span) is ReadableSpan else None
        except (AttributeError, TypeError):  # not laid out as known here, or an unhashable value
            fast = None
        if fast is not None:
            return fast
        data: bytes = _encode_span(span).SerializePartialToString()
        return data

    def _plain(self, span: ReadableSpan) -> bytes | None:
        events, links, attributes = span._events, span._links, span._attributes
        # (an SDK list's length is a Python-level call: its deque is read directly, as is the rest here)
        if ((type(events) is not BoundedList or events._dq) or (type(links) is not BoundedList or links._dq)  # type: ignore[attr-defined]
                or type(attributes) is not BoundedAttributes or events.dropped or links.dropped):
            return None
        ctx, parent = span._context, span._parent
        if type(ctx) is not SpanContext:
            return None
        trace_id = ctx[0]
        parts = [_IDS(b"\x0a\x10", trace_id >> 64, trace_id & _U64, b"\x12\x08", ctx[1])]
        if ctx[4] is not DEFAULT_TRACE_STATE and (state := ctx[4]):
            parts.append(_text(b"\x1a", ",".join(f"{k}={v}" for k, v in state.items())))
        flags = _HAS_IS_REMOTE
        if parent is not None:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
            if parent.is_remote:
                flags |= _IS_REMOTE
        if name := span._name:
            named = self._names.get(name)
            if named is None:
                if len(self._names) >= self.KEEP:
                    self._names.clear()
                named = self._names[name] = _text(b"\x2a", name)
            parts.append(named)
        parts.append(_KIND_OF[id(span._kind)])
        start, end = span._start_time, span._end_time
        if start and end:
            parts.append(_TIMES(0x39, start, 0x41, end))
        else:
            if start:
                parts.append(b"\x39" + _FIXED64(start))
            if end:
                parts.append(b"\x41" + _FIXED64(end))
        if attributes._dict:
            encoded = self._attributes(attributes._dict.items())
            if encoded is None:
                return None
            parts += encoded
        if attributes.dropped:
            parts.append(b"\x50" + _varint(attributes.dropped))
        status = span._status
        code, description = _CODE_OF[id(status._status_code)], status._description
        if code or description:
            message = _text(b"\x12", description) if description else b""
            parts.append(_framed(b"\x7a", message + b"\x18" + _varint(code) if code else message))
        else:
            parts.append(_UNSET)
        parts.append(_FLAGS(b"\x85\x01", flags))
        return b"".join(parts)

    def _key(self, key: str) -> bytes:
        """KeyValue.key as a field (tag, length, UTF-8)."""
        done = self._keys.get(key)
        if done is None:
            if len(self._keys) >= self.KEEP:
                self._keys.clear()
            done = self._keys[key] = _text(b"\x0a", key)
        return done

    def _attributes(self, items: Any) -> list[bytes] | None:
        """Each (key, value) item as a framed Span.attributes entry (field 9); None if a value is not a
        plain str, bool, int (int64) or float."""
        strings = self._strings
        out: list[Any] = list(map(strings.get, items))  # in C: most items are kept strings
        if None not in out:
            return out
        for i, (key, value) in enumerate(items):  # the rest: numbers, and strings not yet kept
            if out[i] is not None:
                continue
            kind = type(value)
            if kind is str:
                if len(strings) >= self.KEEP:
                    strings.clear()
                kv = self._key(key) + _framed(b"\x12", _text(b"\x0a", value))
                out[i] = strings[(key, value)] = _framed(b"\x4a", kv)
                continue
            if kind is int:
                if value not in _INT64:
                    return None
                number = value & _U64
                any_value = b"\x18" + (_SMALL[number] if number < 0x80 else _varint(number))
                kv = self._key(key) + b"\x12" + _SMALL[len(any_value)] + any_value
            elif kind is float:
                kv = self._key(key) + _DOUBLE(0x12, 9, 0x21, value)
            elif kind is bool:
                kv = self._key(key) + (_TRUE if value else _FALSE)
            else:
                return None
            n = len(kv)
            out[i] = b"\x4a" + (_SMALL[n] if n < 0x80 else _varint(n)) + kv
        return out


class _Group:
    __slots__ = ("ends", "spans")

    def __init__(self, ends: tuple[bytes, bytes]) -> None:
        self.ends = ends
        self.spans: list[bytes] = []


_SPANS = _Spans()  # what it keeps serves every batch; only the exporter's thread encodes


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest of `spans`, grouped by resource and scope, serialised."""
    resources: dict[Any, tuple[tuple[bytes, bytes], dict[Any, _Group]]] = {}
    # Spans are grouped by equal resource and scope, as the SDK's encoder groups them; but a Resource
    # hashes by encoding its attributes as JSON, so each resource and scope object is looked up by
    # identity first (the spans of a batch share a handful of objects, alive for the whole batch).
    groups: dict[tuple[int, int], _Group] = {}
    encode = _SPANS.encode
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        group = groups.get((id(resource), id(scope)))
        if group is None:
            known = resources.get(resource)
            if known is None:
                known = resources[resource] = (_resource_ends(resource), {})
            scopes = known[1]
            group = scopes.get(scope)
            if group is None:
                group = scopes[scope] = _Group(_scope_ends(scope))
            groups[(id(resource), id(scope))] = group
        group.spans.append(_framed(b"\x12", encode(span)))
    out = []
    for (head, tail), scopes in resources.values():
        body = [head]
        for group in scopes.values():
            scope_head, scope_tail = group.ends
            body.append(_framed(b"\x12", b"".join((scope_head, *group.spans, scope_tail))))
        body.append(tail)
        out.append(_framed(b"\x0a", b"".join(body)))
    return b"".join(out)


class SettledSession(requests.Session):
    """The span exporter's session. For each post, requests works out what the environment says of the
    endpoint (the proxy variables, every variable scanned twice over, and the CA bundle variables):
    about a third of what posting a batch costs. A process's environment is its own and is read at
    start-up, so here the answer is worked out once per endpoint and settings; the .netrc file,
    which can change while the gateway runs, is still read for each post, as requests does."""

    def __init__(self) -> None:
        super().__init__()
        self._settled: dict[Any, dict[str, Any]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        key = (url, stream, verify, cert, self.trust_env, self.stream, self.verify, self.cert,
               tuple(self.proxies.items()))
        if proxies:  # proxies of the call's own: merged as requests merges them
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        settled = self._settled.get(key)
        if settled is None:
            settled = self._settled[key] = super().merge_environment_settings(url, {}, stream, verify, cert)
        return {**settled, "proxies": dict(settled["proxies"])}  # copies: requests may change them


def export_session() -> requests.Session | None:
    """A SettledSession for the exporter, unless a credential provider is to supply the session."""
    if os.environ.get(_OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER) or os.environ.get(
            _OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER):
        return None
    return SettledSession()


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
