"""The gateway's metrics, through the OpenTelemetry metrics SDK.

`GET /metrics` serves them in the Prometheus text format (a `PrometheusMetricReader` on a
`CollectorRegistry` of the app's own, never the process-global one); with
`OTEL_EXPORTER_OTLP_ENDPOINT` set they are also pushed over OTLP/HTTP (every
`OTEL_METRIC_EXPORT_INTERVAL` ms, 60 s by default). The names are listed in the README
("Operating Switchyard").

Cost on the request path: an SDK instrument validates and hashes its attributes on every
measurement (~6-10 µs), too much for the dozen a request makes. So each instrument is kept here,
pre-bound per label set: counters are `Tally`s, plain dict entries keyed by a tuple of label values
(a fraction of a µs), which observable counters read when a reader collects; histograms are bucket
counts per label set (`Histogram`, ~1 µs), handed to both readers as SDK histogram points when
they collect (`_Readers`). Gauges (circuit state, policy thresholds, shadow and feedback counts)
are read from the objects that own them at collection time.

Labels come from configuration (tenant, policy, deployment and tier names), plan kinds, status
codes and a few fixed words, so their cardinality is bounded; never request ids or prompt text.
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from gateway.plans import Plan

# Seconds: the gateway's own share is sub-millisecond, an upstream call up to a minute.
OVERHEAD_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)  # the convention's
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def plan_kind(plan: Plan | None) -> str:
    if plan is None:
        return "none"
    return plan.kind


class Cell:
    """One label set's running count: bound once (`Tally.cell`), then added to with no look-up."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Tally:
    """A counter kept as a dict on the hot path; an observable counter reports it when collected."""

    __slots__ = ("cells", "labels")

    def __init__(self, *labels: str) -> None:
        self.labels = labels
        self.cells: dict[tuple[str, ...], Cell] = {}

    def cell(self, key: tuple[str, ...]) -> Cell:
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        return cell

    def add(self, key: tuple[str, ...], amount: float = 1) -> None:
        self.cell(key).value += amount

    @property
    def values(self) -> dict[tuple[str, ...], float]:
        """Every label set's count (tests, collection)."""
        return {k: c.value for k, c in list(self.cells.items())}

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, dict(zip(self.labels, k, strict=True))) for k, v in self.values.items()]


class Series:
    """One label set's buckets: bound once (`Histogram.bound`), then recorded into with no look-up."""

    __slots__ = ("bounds", "count", "counts", "high", "low", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf

    def record(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket i holds (bounds[i-1], bounds[i]]
        self.count += 1
        self.total += value
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value


class Histogram:
    """Explicit-bucket histogram (cumulative), bucket counts per label set; read by `points`."""

    __slots__ = ("bounds", "description", "labels", "name", "series", "started_ns", "unit")

    def __init__(self, name: str, unit: str, description: str, bounds: tuple[float, ...], *labels: str) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = bounds
        self.labels = labels
        self.series: dict[tuple[str, ...], Series] = {}
        self.started_ns = time.time_ns()

    def bound(self, key: tuple[str, ...]) -> Series:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = Series(self.bounds)
        return s

    def record(self, key: tuple[str, ...], value: float) -> None:
        self.bound(key).record(value)

    def metric(self, now_ns: int) -> Metric | None:
        points = [HistogramDataPoint(
            # an empty value leaves the attribute out (`error.type` on a call that succeeded)
            attributes={k: v for k, v in zip(self.labels, key, strict=True) if v},
            start_time_unix_nano=self.started_ns, time_unix_nano=now_ns, count=s.count, sum=s.total,
            bucket_counts=list(s.counts), explicit_bounds=self.bounds, min=s.low, max=s.high)
            for key, s in list(self.series.items())]
        if not points:
            return None
        return Metric(self.name, self.description, self.unit,
                      HistogramData(points, AggregationTemporality.CUMULATIVE))


class _Readers:
    """Adds the histograms to what every reader collects from the SDK, at collection time."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.histograms: list[Histogram] = []
        self.scope = InstrumentationScope("switchyard")

    def merged(self, data: MetricsData | None) -> MetricsData | None:
        now = time.time_ns()
        extra = [m for h in self.histograms if (m := h.metric(now)) is not None]
        if not extra:
            return data
        if data is None or not data.resource_metrics:
            return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(self.scope, extra, "")], "")])
        # into the SDK's own `switchyard` scope: exporters key scopes by name, a second one would replace it
        first, *rest = data.resource_metrics
        scopes = [s for s in first.scope_metrics if s.scope.name != self.scope.name]
        ours = [s for s in first.scope_metrics if s.scope.name == self.scope.name]
        merged = ScopeMetrics(ours[0].scope if ours else self.scope,
                              [*(m for s in ours for m in s.metrics), *extra], ours[0].schema_url if ours else "")
        return MetricsData([ResourceMetrics(first.resource, [*scopes, merged], first.schema_url), *rest])

    def prometheus(self, registry: CollectorRegistry) -> MetricReader:
        merged = self.merged

        class Reader(PrometheusMetricReader):
            def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                                 **kwargs: Any) -> None:
                super()._receive_metrics(merged(metrics_data), timeout_millis, **kwargs)  # type: ignore[arg-type]

        return Reader(registry=registry, disable_target_info=True, scope_info_enabled=False)

    def otlp(self) -> MetricReader:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        merged = self.merged

        class Reader(PeriodicExportingMetricReader):
            def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                                 **kwargs: Any) -> None:
                super()._receive_metrics(merged(metrics_data), timeout_millis, **kwargs)  # type: ignore[arg-type]

        return Reader(OTLPMetricExporter())


_GEN_AI = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "switchyard.deployment")


class Metrics:
    """Every instrument, built once in `create_app`; `shutdown` in the app's lifespan."""

    def __init__(self, *, otlp: bool | None = None, service_name: str = "switchyard") -> None:
        """`otlp`: push over OTLP/HTTP too; default: when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
        self.registry = CollectorRegistry(auto_describe=True)
        resource = Resource.create({"service.name": service_name})
        self._readers = _Readers(resource)
        all_readers: list[MetricReader] = [self._readers.prometheus(self.registry)]
        if otlp if otlp is not None else bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
            all_readers.append(self._readers.otlp())
        self.provider = MeterProvider(metric_readers=all_readers, exemplar_filter=AlwaysOffExemplarFilter(),
                                      resource=resource)
        meter = self.provider.get_meter("switchyard")

        def tally(name: str, unit: str, description: str, *labels: str) -> Tally:
            t = Tally(*labels)
            meter.create_observable_counter(name, [t.observe], unit=unit, description=description)
            return t

        def histogram(name: str, unit: str, description: str, bounds: tuple[float, ...], *labels: str) -> Histogram:
            h = Histogram(name, unit, description, bounds, *labels)
            self._readers.histograms.append(h)
            return h

        self.requests = tally("switchyard.requests", "{request}", "chat requests answered, by outcome",
                              "tenant", "policy", "plan_kind", "deployment", "status")
        self.cache = tally("switchyard.cache.lookups", "{lookup}", "answer cache lookups: hit or miss",
                           "policy", "result")
        self.cost = tally("switchyard.cost_usd", "{USD}", "what upstream calls cost, in USD",
                          "tenant", "deployment", "policy")
        # Billed to the tenant, but no request's answer: so never in `cost` (what answers cost; a stream's
        # call read on after its client left is there, not here). The two add up to the ledger.
        self.background_cost = tally("switchyard.background_cost_usd", "{USD}",
                                     "what calls billed beside answers cost, in USD: late answers, calls cut "
                                     "part-way, shadow evaluations, a failed request's calls",
                                     "tenant", "deployment", "policy", "kind")
        self.tokens = tally("switchyard.tokens", "{token}", "tokens billed, by type (input, output)",
                            "tenant", "deployment", "policy", "type")
        self.budget_alerts = tally("switchyard.budget.alerts", "{alert}",
                                   "budget thresholds reached, once per budget and period",
                                   "tenant", "scope", "period", "threshold")
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

    def observe_gauge(self, name: str, unit: str, description: str, label: str | tuple[str, ...],
                      read: Callable[[], Mapping[Any, float]]) -> None:
        """A gauge read at collection time from whatever owns the value: one label (keys are its
        values), or several (keys are tuples of their values, in order). Non-finite
        values are left out: a calibrated threshold of +inf (nothing goes to the strong model) or
        -inf (everything does) has no number a gauge can carry, the SDK warns of each at every
        collection, and the policy's state is already told by its routing shares."""
        names = (label,) if isinstance(label, str) else label

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, dict(zip(names, (k,) if isinstance(label, str) else k, strict=True)))
                    for k, v in read().items() if math.isfinite(v)]
        self._meter.create_observable_gauge(name, [callback], unit=unit, description=description)

    def observe_counter(self, name: str, unit: str, description: str, label: str | tuple[str, ...],
                        read: Callable[[], Mapping[Any, float]]) -> None:
        """A monotonic count kept by its owner (shadow jobs, feedback), read at collection time; with
        several labels, `read` is keyed by tuples of their values in that order."""
        names = (label,) if isinstance(label, str) else label

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, dict(zip(names, (k,) if isinstance(label, str) else k, strict=True)))
                    for k, v in read().items()]
        self._meter.create_observable_counter(name, [callback], unit=unit, description=description)

    def prometheus_text(self) -> bytes:
        """The Prometheus exposition: collects every reader's view now (callbacks included)."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()
