"""Spans started on the lean path are the spans the SDK's `start_span` makes, field for field, under
every sampler the OTEL_TRACES_SAMPLER variable names; a configuration the lean path does not know
(an operator's span processor, a plug-in sampler) is left to the SDK."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, _Span
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from gateway.telemetry import Telemetry, set_attributes

CLIENT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "sim-small", "server.port": 8000}
CALLERS = {
    "sampled": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "tracestate": "vendor=abc,x=y"},
    "not sampled": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
    "random": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"},
}
SAMPLERS = ["", "always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio"]


class Counting(IdGenerator):
    """Ids in a fixed sequence, so that both paths are given the same ones."""

    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return 0x1000 + self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return (0x9E3779B97F4A7C15 * self.n) % (1 << 128) or 1  # half of these sample at a ratio of 0.5


def _telemetry(lean: bool, memory: InMemorySpanExporter) -> Telemetry:
    telemetry = Telemetry(memory)
    assert telemetry._lean is not None  # the SDK's own samplers and processors: the lean path applies
    if not lean:
        telemetry._lean = None
    telemetry.tracer.id_generator = Counting()  # type: ignore[attr-defined]
    return telemetry


def _record(telemetry: Telemetry, caller: Context | None) -> list[Span]:
    request = telemetry.start("switchyard.request", caller, kind=SpanKind.SERVER, gen_ai__request__model="auto")
    with telemetry.span("switchyard.route", request, switchyard__router__version="v1") as route:
        set_attributes(route, switchyard__difficulty=0.25)
    client = telemetry.start_client("chat sim-small", request, CLIENT, gen_ai__request__temperature=0.7)
    headers = telemetry.inject(client)
    client.set_status(Status(StatusCode.ERROR, "upstream 500"))
    client.end()
    orphan = telemetry.start("switchyard.shadow", None, switchyard__tenant="t")
    orphan.end()
    set_attributes(request, switchyard__cost_usd=9e-6, gen_ai__usage__input_tokens=30)
    request.end()
    assert headers is None or headers["traceparent"].endswith(f"-{client.get_span_context().span_id:016x}-"
                                                              f"{client.get_span_context().trace_flags:02x}")
    return [request, route, client, orphan]


VALUES = ("_name", "_context", "_kind", "_parent", "_trace_config", "_record_exception", "_set_status_on_exception")


def _live(span: Span, telemetry: Telemetry) -> Any:
    """Everything a started span holds, less its times and locks; what it shares with every span of
    its provider, as whether it is that provider's."""
    if type(span) is not _Span:
        return (type(span), span.get_span_context())
    fields = vars(span)
    tracer: Any = telemetry.tracer
    provider: Any = telemetry.provider
    theirs = [fields["_sampler"] is provider.sampler, fields["_span_processor"] is provider._active_span_processor,
              fields["_limits"] is provider._span_limits, fields["_resource"] is tracer.resource,
              fields["_instrumentation_scope"] is tracer._instrumentation_scope,
              fields["_instrumentation_info"] is tracer.instrumentation_info,
              fields["_record_end_metrics"] is tracer._tracer_metrics.start_span(None, None),
              fields["_status"] is ReadableSpan("x")._status]
    held, events, links = fields["_attributes"], fields["_events"], fields["_links"]
    return (list(fields), [fields[k] for k in VALUES], theirs, list(vars(held)), dict(held), held.maxlen, held.dropped,
            held.max_value_len, held._immutable, list(vars(events)), events._dq.maxlen, list(events), events.dropped,
            list(vars(links)), links._dq.maxlen, list(links), links.dropped)


def _finished(span: ReadableSpan) -> Any:
    return (type(span), span.name, span.context, span.parent, span.kind, dict(span.attributes or {}),
            span.status.status_code, span.status.description, span.resource, span.instrumentation_scope,
            span.events, span.links, span.dropped_attributes, span.end_time is not None)


def _both(caller_headers: dict[str, str] | None) -> list[Any]:
    """What the lean path records, then what the SDK's path records."""
    recorded = []
    for lean in (True, False):
        memory = InMemorySpanExporter()
        telemetry = _telemetry(lean, memory)
        caller = telemetry.extract(caller_headers) if caller_headers else None
        recorded.append(([_live(s, telemetry) for s in _record(telemetry, caller)],
                         [_finished(s) for s in memory.get_finished_spans()]))
    return recorded


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("caller", [None, *CALLERS])
def test_the_lean_path_makes_the_sdks_spans(sampler: str, caller: str | None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if sampler:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    lean, sdk = _both(CALLERS[caller] if caller else None)
    assert lean == sdk


def test_the_default_sampler_records_and_exports_every_span() -> None:
    memory = InMemorySpanExporter()
    spans = _record(_telemetry(True, memory), None)
    assert all(type(s) is _Span for s in spans)
    assert len(memory.get_finished_spans()) == 4


def test_a_span_under_a_current_span_is_its_child_as_in_the_sdk() -> None:
    from opentelemetry import context, trace

    memory = InMemorySpanExporter()
    telemetry = _telemetry(True, memory)
    outer = trace.NonRecordingSpan(trace.SpanContext(0xABC, 0xDEF, is_remote=False,
                                                     trace_flags=trace.TraceFlags(1)))
    token = context.attach(trace.set_span_in_context(outer))
    try:
        span = telemetry.start("switchyard.shadow", None)
    finally:
        context.detach(token)
    assert span.get_span_context().trace_id == 0xABC
    assert span.parent is not None and span.parent.span_id == 0xDEF  # type: ignore[attr-defined]


class Watching(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[tuple[str, Context | None]] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.started.append((span.name, parent_context))


def test_an_operators_span_processor_sees_every_start_as_the_sdk_calls_it() -> None:
    memory = InMemorySpanExporter()
    telemetry = _telemetry(True, memory)
    watching = Watching()
    telemetry.provider.add_span_processor(watching)
    spans = _record(telemetry, None)
    assert [name for name, _ in watching.started] == ["switchyard.request", "switchyard.route", "chat sim-small",
                                                      "switchyard.shadow"]
    route_parent = watching.started[1][1]
    from opentelemetry import trace

    assert route_parent is not None and trace.get_current_span(route_parent) is spans[0]
    assert len(memory.get_finished_spans()) == 4


def test_without_an_endpoint_nothing_is_recorded() -> None:
    telemetry = Telemetry()
    if telemetry.recording:  # an endpoint in this environment
        pytest.skip("OTEL_EXPORTER_OTLP_ENDPOINT is set")
    assert telemetry.start("switchyard.request", None) is INVALID_SPAN
