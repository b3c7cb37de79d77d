"""OpenTelemetry set-up and the span helpers the pipeline and executor use.

Spans are `switchyard.request` (one per request), `switchyard.route` and `switchyard.upstream`
(one per provider call), with OpenTelemetry `gen_ai.*` attributes and our cost attributes.
They are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and not at all
otherwise (no console noise). With nowhere to send them, spans are not recorded either: building
spans nobody will read measurably cost throughput (benchmarks/results/overhead.md).
The provider is owned by the app, never installed globally.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode

log = logging.getLogger("switchyard.telemetry")


class Telemetry:
    def __init__(self, exporter: SpanExporter | None = None, *, service_name: str = "switchyard") -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.recording = True
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            log.info("exporting traces over OTLP to %s", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
        else:
            self.recording = False
        self.tracer: trace.Tracer = (self.provider.get_tracer("switchyard") if self.recording
                                     else trace.NoOpTracer())

    def start(self, name: str, parent: Span | None = None, **attributes: Any) -> Span:
        if not self.recording:
            return trace.INVALID_SPAN
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(name, context=ctx, attributes=_clean(attributes))

    @contextmanager
    def span(self, name: str, parent: Span | None = None, **attributes: Any) -> Iterator[Span]:
        s = self.start(name, parent, **attributes)
        try:
            yield s
        except BaseException as exc:
            s.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise
        finally:
            s.end()

    def shutdown(self) -> None:
        self.provider.shutdown()


@functools.cache
def _dotted(key: str) -> str:
    return key.replace("__", ".")


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """Keyword names use `__` for `.` (`gen_ai__usage__input_tokens`); None values are left out."""
    return {_dotted(k): v for k, v in attributes.items() if v is not None}


def trace_id_hex(span: Span) -> str | None:
    return format(span.get_span_context().trace_id, "032x") if span.is_recording() else None


def set_attributes(span: Span, **attributes: Any) -> None:
    if span.is_recording():
        span.set_attributes(_clean(attributes))
