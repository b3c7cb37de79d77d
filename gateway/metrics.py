"""The gateway's metrics, through the OpenTelemetry metrics SDK.

`GET /metrics` serves them in the Prometheus text format (a `PrometheusMetricReader` on a
`CollectorRegistry` of the app's own, never the process-global one); with
`OTEL_EXPORTER_OTLP_ENDPOINT` set they are also pushed over OTLP/HTTP (every
`OTEL_METRIC_EXPORT_INTERVAL` ms, 60 s by default). The names are listed in the README
("Operating Switchyard").

Cost on the request path: an SDK instrument validates and hashes its attributes on every
measurement (~10 µs), too much for the dozen a request makes. So counters are `Tally`s, plain
dict entries keyed by a tuple of label values (a fraction of a µs), which observable counters
read when a reader collects; only histograms go through the SDK, with each label set's attribute
dict built once. Gauges (circuit state, policy thresholds, shadow and feedback counts) are read
from the objects that own them at collection time.

Labels come from configuration (tenant, policy, deployment and tier names), plan kinds, status
codes and a few fixed words, so their cardinality is bounded; never request ids or prompt text.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from gateway.plans import BestOfN, Cascade, Plan

# Seconds: the gateway's own share is sub-millisecond, an upstream call up to a minute.
OVERHEAD_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)  # the convention's
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def plan_kind(plan: Plan | None) -> str:
    if plan is None:
        return "none"
    return "cascade" if isinstance(plan, Cascade) else "best_of" if isinstance(plan, BestOfN) else "single"


class Tally:
    """A counter kept as a dict on the hot path; an observable counter reports it when collected."""

    __slots__ = ("labels", "values")

    def __init__(self, *labels: str) -> None:
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, key: tuple[str, ...], amount: float = 1) -> None:
        values = self.values
        values[key] = values.get(key, 0) + amount

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, dict(zip(self.labels, k, strict=True))) for k, v in list(self.values.items())]


class Histogram:
    """An SDK histogram whose attribute dicts are built once per label set."""

    __slots__ = ("_attributes", "_record", "labels")

    def __init__(self, instrument: Any, *labels: str) -> None:
        self._record = instrument.record
        self.labels = labels
        self._attributes: dict[tuple[str, ...], dict[str, str]] = {}

    def record(self, key: tuple[str, ...], value: float) -> None:
        attributes = self._attributes.get(key)
        if attributes is None:
            # an empty value leaves the attribute out (`error.type` on a call that succeeded)
            attributes = self._attributes[key] = {k: v for k, v in zip(self.labels, key, strict=True) if v}
        self._record(value, attributes)


_GEN_AI = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "switchyard.deployment")


class Metrics:
    """Every instrument, built once in `create_app`; `shutdown` in the app's lifespan."""

    def __init__(self, *, otlp: bool | None = None, readers: Iterable[MetricReader] = (),
                 service_name: str = "switchyard") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        all_readers: list[MetricReader] = [PrometheusMetricReader(registry=self.registry,
                                                                  disable_target_info=True), *readers]
        if otlp if otlp is not None else bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            all_readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        self.provider = MeterProvider(metric_readers=all_readers, exemplar_filter=AlwaysOffExemplarFilter(),
                                      resource=Resource.create({"service.name": service_name}))
        meter = self.provider.get_meter("switchyard")

        def tally(name: str, unit: str, description: str, *labels: str) -> Tally:
            t = Tally(*labels)
            meter.create_observable_counter(name, [t.observe], unit=unit, description=description)
            return t

        def histogram(name: str, unit: str, description: str, bounds: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(meter.create_histogram(name, unit=unit, description=description,
                                                    explicit_bucket_boundaries_advisory=list(bounds)), *labels)

        self.requests = tally("switchyard.requests", "{request}", "chat requests answered, by outcome",
                              "tenant", "policy", "plan_kind", "deployment", "status")
        self.cache = tally("switchyard.cache.lookups", "{lookup}", "answer cache lookups: hit or miss",
                           "policy", "result")
        self.cost = tally("switchyard.cost_usd", "{USD}", "what upstream calls cost, in USD",
                          "tenant", "deployment", "policy")
        self.tokens = tally("switchyard.tokens", "{token}", "tokens billed, by type (input, output)",
                            "tenant", "deployment", "policy", "type")
        self.decisions = tally("switchyard.router.decisions", "{decision}",
                               "routing decisions, by policy and the tier of the chosen plan", "policy", "tier")
        self.upstream_failures = tally("switchyard.upstream.failures", "{failure}",
                                       "failed upstream attempts (each retry counts), by error type",
                                       "deployment", "error_type")
        self.overhead = histogram("switchyard.gateway.overhead", "s",
                                  "time the gateway added to a request: total minus time waiting on upstreams",
                                  OVERHEAD_BUCKETS_S, "policy")
        self.duration = histogram("switchyard.request.duration", "s", "a chat request's total time in the gateway",
                                  LATENCY_BUCKETS_S, "policy", "status")
        self.operation = histogram("gen_ai.client.operation.duration", "s", "one upstream call (attempt)",
                                   LATENCY_BUCKETS_S, *_GEN_AI, "error.type")
        self.usage = histogram("gen_ai.client.token.usage", "{token}", "tokens of one upstream call",
                               TOKEN_BUCKETS, *_GEN_AI, "gen_ai.token.type")
        self.first_chunk = histogram("gen_ai.client.operation.time_to_first_chunk", "s",
                                     "time to an upstream stream's first chunk", LATENCY_BUCKETS_S, *_GEN_AI)
        self._meter = meter

    def observe_gauge(self, name: str, unit: str, description: str, label: str,
                      read: Callable[[], Mapping[str, float]]) -> None:
        """A gauge read at collection time from whatever owns the value (one label)."""
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, {label: k}) for k, v in read().items()]
        self._meter.create_observable_gauge(name, [callback], unit=unit, description=description)

    def observe_counter(self, name: str, unit: str, description: str, label: str,
                        read: Callable[[], Mapping[str, float]]) -> None:
        """A monotonic count kept by its owner (shadow jobs, feedback), read at collection time."""
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, {label: k}) for k, v in read().items()]
        self._meter.create_observable_counter(name, [callback], unit=unit, description=description)

    def prometheus_text(self) -> bytes:
        """The Prometheus exposition: collects every reader's view now (callbacks included)."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()
