"""Span attributes recorded without the SDK checking them again end up exactly as the SDK's own path
records them; whatever that shortcut does not know takes the SDK's path."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.telemetry import Telemetry, _set_clean, ignores_attributes, set_attributes

CLIENT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "sim-small", "server.port": 8000}


def _record(telemetry: Telemetry) -> None:
    request = telemetry.start("switchyard.request", None, kind=SpanKind.SERVER, gen_ai__request__model="auto",
                              switchyard__skipped=None)
    set_attributes(request, switchyard__tenant="t", switchyard__cost_usd=0.25, switchyard__cache="miss",
                   switchyard__stream_completed=True, gen_ai__usage__input_tokens=30)
    client = telemetry.start_client("chat sim-small", request, CLIENT, gen_ai__request__temperature=0.7)
    set_attributes(client, switchyard__votes={"a": 2}, gen_ai__response__finish_reasons=("stop",))
    client.end()
    set_attributes(request, switchyard__tenant="t2")  # a key set again moves to the end, as in the SDK
    request.end()


def _sdk_record(tracer: Any) -> None:
    request = tracer.start_span("switchyard.request", kind=SpanKind.SERVER,
                                attributes={"gen_ai.request.model": "auto"})
    request.set_attributes({"switchyard.tenant": "t", "switchyard.cost_usd": 0.25, "switchyard.cache": "miss",
                            "switchyard.stream_completed": True, "gen_ai.usage.input_tokens": 30})
    from opentelemetry.trace import set_span_in_context

    client = tracer.start_span("chat sim-small", set_span_in_context(request), kind=SpanKind.CLIENT,
                               attributes={**CLIENT, "gen_ai.request.temperature": 0.7})
    client.set_attributes({"switchyard.votes": '{"a":2}', "gen_ai.response.finish_reasons": ("stop",)})
    client.end()
    request.set_attributes({"switchyard.tenant": "t2"})
    request.end()


def _attributes(spans: tuple[ReadableSpan, ...]) -> list[list[tuple[str, Any]]]:
    return [list(s.attributes.items()) for s in spans]


def test_recorded_attributes_are_those_of_the_sdks_own_path() -> None:
    ours = InMemorySpanExporter()
    _record(Telemetry(ours))
    theirs = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    _sdk_record(provider.get_tracer("switchyard"))
    assert _attributes(ours.get_finished_spans()) == _attributes(theirs.get_finished_spans())
    assert ours.get_finished_spans()[0].attributes["gen_ai.response.finish_reasons"] == ("stop",)


def test_a_span_ended_is_left_as_it_ended(caplog: pytest.LogCaptureFixture) -> None:
    exported = InMemorySpanExporter()
    telemetry = Telemetry(exported)
    span = telemetry.start("switchyard.request", None, switchyard__tenant="t")
    span.end()
    with caplog.at_level(logging.WARNING):
        _set_clean(span, {"switchyard.late": 1})  # `set_attributes` does not even try: not recording
    assert dict(exported.get_finished_spans()[0].attributes) == {"switchyard.tenant": "t"}
    assert "ended span" in caplog.text


def test_a_length_limit_on_values_is_applied_by_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "3")
    exported = InMemorySpanExporter()
    telemetry = Telemetry(exported)
    span = telemetry.start("switchyard.request", None, switchyard__tenant="tenant")
    set_attributes(span, switchyard__entry="router/balanced")
    span.end()
    assert dict(exported.get_finished_spans()[0].attributes) == {"switchyard.tenant": "ten",
                                                                  "switchyard.entry": "rou"}


class _ByAttribute(sampling.Sampler):
    """A plug-in sampler that keeps only spans whose starting attributes name a tenant."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None) -> sampling.SamplingResult:
        keep = bool(attributes) and "switchyard.tenant" in attributes
        return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE if keep else sampling.Decision.DROP,
                                       attributes)

    def get_description(self) -> str:
        return "by-attribute"


def test_only_the_sdks_own_samplers_start_spans_without_their_attributes() -> None:
    assert ignores_attributes(sampling.DEFAULT_ON)
    assert ignores_attributes(sampling.ParentBasedTraceIdRatio(0.1))
    assert ignores_attributes(sampling.ALWAYS_OFF) and ignores_attributes(sampling.TraceIdRatioBased(0.5))
    assert not ignores_attributes(_ByAttribute())
    assert not ignores_attributes(sampling.ParentBased(_ByAttribute()))


def test_a_plug_in_sampler_sees_the_starting_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling, "_get_from_env_or_default", _ByAttribute)  # as OTEL_TRACES_SAMPLER would load it
    exported = InMemorySpanExporter()
    telemetry = Telemetry(exported)
    telemetry.start("switchyard.request", None, switchyard__tenant="t").end()
    telemetry.start("switchyard.request", None, switchyard__entry="e").end()
    assert [dict(s.attributes) for s in exported.get_finished_spans()] == [{"switchyard.tenant": "t"}]


def test_attribute_count_limits_drop_as_the_sdk_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    for limit, kept in (("0", {}), ("2", {"switchyard.entry": "e", "switchyard.cache": "miss"})):
        monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", limit)
        exported = InMemorySpanExporter()
        telemetry = Telemetry(exported)
        span = telemetry.start("switchyard.request", None, switchyard__tenant="t")
        set_attributes(span, switchyard__entry="e", switchyard__cache="miss")
        span.end()
        finished = exported.get_finished_spans()[0]
        assert dict(finished.attributes) == kept
        assert finished.dropped_attributes == 3 - len(kept)
