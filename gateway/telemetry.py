"""OpenTelemetry set-up and the span helpers the pipeline and executor use.

Spans are `switchyard.request` (one per request, SERVER), `switchyard.route` and one CLIENT span
per provider call named as the GenAI semantic conventions say (`chat {model}`, `gen_ai.*`
attributes), plus our cost attributes. Structured attribute values are JSON.
They are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and not at all
otherwise (no console noise). With nowhere to send them, spans are not recorded either: building
spans nobody will read measurably cost throughput (benchmarks/results/overhead.md). Exported spans
go in batches of up to 2,048 (`batch_settings`); the standard `OTEL_TRACES_SAMPLER` variables
sample them (`parentbased_traceidratio` with `OTEL_TRACES_SAMPLER_ARG=0.1` keeps a tenth).

Traces connect: a caller's W3C `traceparent`/`tracestate` makes `switchyard.request` its child,
and every upstream call carries its own span's context in those headers. Both happen only while
spans are recorded; otherwise the headers are neither read nor sent.
The provider is owned by the app, never installed globally. Spans are the SDK's own; where the
configuration is the SDK's default kind, they are started without its general path
(gateway/lean_spans.py) and encoded without its protobuf messages (gateway/otlp_spans.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace import _Span as _SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import AttributeValue

from gateway.lean_spans import LeanStart

log = logging.getLogger("switchyard.telemetry")
_W3C = TraceContextTextMapPropagator()  # W3C traceparent/tracestate, whatever the global propagator is


class Telemetry:
    def __init__(self, exporter: SpanExporter | None = None, *, service_name: str = "switchyard") -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.recording = True
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from gateway.otlp_spans import InPlaceSpanExporter, export_session  # the SDK's, cheaper

            queue, batch = batch_settings()
            exporter = InPlaceSpanExporter(session=export_session())
            self.provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue,
                                                                max_export_batch_size=batch))
            log.info("exporting traces over OTLP to %s", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
        else:
            self.recording = False
        self.tracer: trace.Tracer = (self.provider.get_tracer("switchyard") if self.recording
                                     else trace.NoOpTracer())
        # A span's starting attributes are the sampler's to see; ours never look at them, so then
        # they are added once the span exists, without the SDK checking each again (`_set_clean`).
        self._attributes_after_start = ignores_attributes(self.provider.sampler)
        # The SDK's start_span, less what does nothing in this configuration (gateway/lean_spans.py).
        tracer = self.tracer
        lean = LeanStart(tracer) if self._attributes_after_start and type(tracer) is SdkTracer else None
        self._lean = lean if lean is not None and lean.usable else None

    def _begin(self, name: str, parent: Span | Context | None, kind: SpanKind,
               attributes: Mapping[str, Any]) -> Span:
        lean = self._lean
        if lean is not None:
            if type(parent) is _SdkSpan:  # ours, the usual parent
                within, context = parent._context, None
            else:  # a caller's context, another span, or none: the current context's
                within = (parent if isinstance(parent, Span) else trace.get_current_span(parent)).get_span_context()
                context = parent if isinstance(parent, Context) else None
            if lean.asks_sampler:
                context = _context(parent)
            span = lean.start(name, within, kind, context)
            if span is not None:
                if attributes and type(span) is _SdkSpan:  # else not recorded
                    _set_clean(span, attributes)
                return span
        if not self._attributes_after_start:
            return self.tracer.start_span(name, context=_context(parent), kind=kind, attributes=attributes)
        span = self.tracer.start_span(name, context=_context(parent), kind=kind)
        if attributes and span.is_recording():
            _set_clean(span, attributes)
        return span

    def start(self, name: str, parent: Span | Context | None = None, *, kind: SpanKind = SpanKind.INTERNAL,
              **attributes: Any) -> Span:
        """`parent`: a span of ours, or a caller's context from `extract`."""
        if not self.recording:
            return trace.INVALID_SPAN
        return self._begin(name, parent, kind, _clean(attributes))

    def start_client(self, name: str, parent: Span | None, attributes: Mapping[str, AttributeValue],
                     **more: Any) -> Span:
        """A CLIENT span (an upstream call) from dotted attributes computed once, plus `more`."""
        if not self.recording:
            return trace.INVALID_SPAN
        attrs = {**attributes, **_clean(more)} if more else attributes
        return self._begin(name, parent, SpanKind.CLIENT, attrs)

    def extract(self, headers: Mapping[str, str]) -> Context | None:
        """The caller's trace context from its W3C headers; None without one or while not recording."""
        if not self.recording or "traceparent" not in headers:
            return None
        return _W3C.extract(headers)

    def inject(self, span: Span) -> dict[str, str] | None:
        """The W3C headers that make an upstream call `span`'s child; None while not recording.
        Written directly (what the propagator writes, at a fifth of its cost)."""
        if not self.recording:
            return None
        trace_id, span_id, _, flags, state, valid = span.get_span_context()  # a SpanContext is a tuple
        if not valid:
            return None
        headers = {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"}
        if state is not DEFAULT_TRACE_STATE and state:  # (an empty TraceState's length is a Python call)
            headers["tracestate"] = state.to_header()
        return headers

    def span(self, name: str, parent: Span | None = None, **attributes: Any) -> _Scoped:
        """A span around a block: ended when it closes, an error status if it raises."""
        return _Scoped(self.start(name, parent, **attributes))

    def shutdown(self) -> None:
        self.provider.shutdown()


# Larger export batches than the SDK's (512 spans, every 5 s): a post costs about as much CPU
# whatever it carries, and at a thousand requests a second (three spans each) the SDK's default
# posts six times a second on the request path's core. Each OTEL_BSP_* variable still wins.
SPAN_QUEUE, SPAN_BATCH = 8192, 2048


def batch_settings() -> tuple[int | None, int | None]:
    """(max_queue_size, max_export_batch_size): ours, unless OTEL_BSP_MAX_QUEUE_SIZE or
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE is set (None lets the SDK read the variable)."""
    env = os.environ.get
    return (None if env("OTEL_BSP_MAX_QUEUE_SIZE") else SPAN_QUEUE,
            None if env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") else SPAN_BATCH)


def _context(parent: Span | Context | None) -> Context | None:
    if parent is None or isinstance(parent, Context):
        return parent
    return trace.set_span_in_context(parent)


_DOTTED: dict[str, str] = {}  # keyword name -> attribute key; the names are the code's own: a bounded set


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """Keyword names use `__` for `.` (`gen_ai__usage__input_tokens`); None values are left out;
    maps (votes, evidence) become JSON here, so only spans that are recorded pay for the encoding.
    (A loop: a comprehension is a call of its own.)"""
    clean = {}
    for name, value in attributes.items():
        if value is None:
            continue
        key = _DOTTED.get(name)
        if key is None:
            key = _DOTTED[name] = name.replace("__", ".")
        clean[key] = value if type(value) in _PLAIN else _structured(value)
    return clean


_PLAIN = frozenset({str, int, float, bool})  # most values: no isinstance check against an ABC (~1 µs each)


def _structured(value: Any) -> Any:
    return as_json(value) if isinstance(value, Mapping) else value


class _Scoped:
    """`Telemetry.span`'s context manager: a class, not a generator, as it opens on every request."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self.span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        self.span.end()


# The SDK's samplers: none of them reads a span's attributes (they pass them through unchanged).
_ATTRIBUTE_BLIND = (sampling.StaticSampler, sampling.TraceIdRatioBased)
_DELEGATES = ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
              "_local_parent_not_sampled")


def ignores_attributes(sampler: object) -> bool:
    """Whether `sampler` decides without a span's attributes: the SDK's own samplers (those that
    OTEL_TRACES_SAMPLER names without a plug-in), a parent-based one only with such delegates."""
    if type(sampler).__module__ != sampling.__name__:
        return False
    if isinstance(sampler, sampling.ParentBased):
        return all(ignores_attributes(getattr(sampler, d, None)) for d in _DELEGATES)
    return isinstance(sampler, _ATTRIBUTE_BLIND)


def trace_id_hex(span: Span) -> str | None:
    if type(span) is _SdkSpan:  # (its methods are Python calls; its context is a tuple, trace_id first)
        return f"{span._context[0]:032x}" if span._end_time is None else None  # type: ignore[index]
    return format(span.get_span_context().trace_id, "032x") if span.is_recording() else None


def set_attributes(span: Span, **attributes: Any) -> None:
    if span._end_time is None if type(span) is _SdkSpan else span.is_recording():
        _set_clean(span, _clean(attributes))


def _set_clean(span: Span, attributes: Mapping[str, Any]) -> None:
    """`span.set_attributes(attributes)` for attributes `_clean` made. The SDK's span checks every key
    and value again (a third of what recording a request's spans costs): when they are all plain (non-
    empty str keys; str, int, float, bool values) and no length limit applies, they go straight into
    its BoundedAttributes, under the locks and through the method its own `set_attributes` ends in.
    Anything else (a sequence value, a span or SDK not as known here, an ended span) takes the SDK's path."""
    bounded = getattr(span, "_attributes", None)
    if (type(span) is not _SdkSpan or type(bounded) is not BoundedAttributes or bounded.max_value_len is not None
            or bounded.maxlen == 0  # a limit of no attributes: only counted as dropped, as the SDK does
            or not _PLAIN.issuperset(map(type, attributes.values()))):
        span.set_attributes(attributes)
        return
    with span._lock:
        added = span._end_time is None and not bounded._immutable
        if added:
            with bounded._lock:
                held, limit = bounded._dict, bounded.maxlen
                if limit is not None and len(held) + len(attributes) > limit:  # some may be dropped
                    for key, value in attributes.items():
                        bounded._setitem_locked(key, value)
                else:  # what `_setitem_locked` does for each, at once: a key set again moves to the end
                    if held and not held.keys().isdisjoint(attributes):
                        for key in attributes:
                            held.pop(key, None)
                    held.update(attributes)
    if not added:
        span.set_attributes(attributes)  # the SDK's warning about an ended span


def as_json(value: Any) -> str:
    """A structured attribute value (votes, evidence) as JSON text: span attributes hold no maps, and
    a Python repr is not something a trace backend can parse. `set_attributes` and `start` encode
    maps themselves, and only for spans that are recorded."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
