"""The cost of one `auto` request's spans alone: recording them, and encoding them for export.

    python -m benchmarks.overhead.spans [--requests 2000] [--encode]
    SWITCHYARD_CALLGRIND=1 valgrind --tool=callgrind --instr-atstart=no /path/to/python \\
        -m benchmarks.overhead.spans --requests 2000 [--encode]

Records the three spans the gateway makes for a routed, non-streamed request (`switchyard.request`,
`switchyard.route`, the upstream call's CLIENT span) with the attributes the pipeline gives them,
through `gateway.telemetry` and a batch processor that does not export while counting. With
`--encode`, it records them into memory first and measures `gateway.otlp_spans.encode_spans` of the
whole batch instead. Under callgrind (`--instr-atstart=no`) only the measured loop is counted:
instructions ÷ requests. Otherwise it prints CPU µs per request.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from types import MappingProxyType

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from benchmarks.overhead.inprocess import _callgrind
from gateway.otlp_spans import encode_spans
from gateway.telemetry import Telemetry, set_attributes

CLIENT = MappingProxyType({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                           "gen_ai.request.model": "sim-small", "switchyard.deployment": "small",
                           "server.address": "127.0.0.1", "server.port": 8000})


class _Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _request(telemetry: Telemetry) -> None:
    span = telemetry.start("switchyard.request", None, kind=SpanKind.SERVER, gen_ai__operation__name="chat",
                           gen_ai__request__model="auto", switchyard__router__version="default@32d2eac4cedb")
    set_attributes(span, switchyard__tenant="default", switchyard__entry="router/balanced",
                   switchyard__policy__version="ca256a0628d1")
    with telemetry.span("switchyard.route", span, switchyard__router__version="default@32d2eac4cedb") as route:
        set_attributes(route, switchyard__plan="single:small", switchyard__difficulty=0.4321)
    client = telemetry.start_client("chat sim-small", span, CLIENT, gen_ai__request__temperature=0.7)
    telemetry.inject(client)
    set_attributes(client, gen_ai__response__model="sim-small", gen_ai__usage__input_tokens=30,
                   gen_ai__usage__output_tokens=20, switchyard__cost_usd=9e-6)
    client.end()
    set_attributes(span, switchyard__plan="single:small", switchyard__cost_usd=9e-6, gen_ai__usage__input_tokens=30,
                   gen_ai__usage__output_tokens=20, switchyard__cache="bypass", switchyard__evidence=None)
    span.end()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.overhead.spans", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--requests", type=int, default=2000, help="requests' spans to record (at most 2,600)")
    p.add_argument("--encode", action="store_true", help="measure encoding the batch rather than recording")
    a = p.parse_args(argv)
    if not 0 < a.requests <= 2600:
        p.error("--requests: 1 to 2,600 (the batch processor must hold them all without exporting)")
    # A batch processor as the gateway's, that neither fills a batch nor wakes while counting
    # (nothing listens at the endpoint: nothing is sent).
    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "100000000",
                       "OTEL_BSP_MAX_QUEUE_SIZE": "8192", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8192"})
    kept = _Kept() if a.encode else None
    telemetry = Telemetry(kept) if kept is not None else Telemetry()
    for _ in range(50):
        _request(telemetry)
    if kept is not None:
        kept.spans.clear()
        for _ in range(a.requests):
            _request(telemetry)
    _callgrind("on")
    time.sleep(0.5)  # callgrind polls for the command: let it land before counting starts
    started = time.process_time()
    if kept is not None:
        encode_spans(kept.spans)
    else:
        for _ in range(a.requests):
            _request(telemetry)
    spent = time.process_time() - started
    _callgrind("off")
    what = "encoding" if a.encode else "recording"
    print(f"{what} one request's spans: {spent / a.requests * 1e6:.1f} µs CPU ({a.requests} requests)")
    os._exit(0)  # the batch processor's thread would try to export what it holds


if __name__ == "__main__":
    raise SystemExit(main())
