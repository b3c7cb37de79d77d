"""Starting the SDK's spans without the SDK's general path, where what it skips would do nothing.

`Tracer.start_span` serves every configuration: it finds the parent in a Context (which the caller
builds for it), asks the sampler through two more Context look-ups, asks the tracer's metrics, then
hands the started span to every span processor's `on_start`. For the gateway's own configuration
(the SDK's span processors, whose `on_start` does nothing; the SDK's default sampler or another of
its static ones; the SDK's internal metrics off) most of that decides nothing, and it was about half
of what recording a request's spans cost. `LeanStart.start` makes the same `_Span` (the same
context, parent, flags, trace state, resource, scope, limits, start time) from the parent's
SpanContext directly, and says None whenever the configuration is anything else, so that the SDK's
own `start_span` serves it: a plug-in sampler, an operator's span processor, a tracer configurator
that disables the tracer, the SDK's internal metrics. Ending a span, its attributes and processors'
`on_end` are the SDK's as ever (tests/unit/test_lean_spans.py compares both paths).
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Lock
from time import time_ns
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, Tracer, _Span, sampling
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import _SPAN_ID_MAX_VALUE as _SPAN_ID_MAX
from opentelemetry.trace.span import _TRACE_ID_MAX_VALUE as _TRACE_ID_MAX
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState

# Processors whose on_start does nothing (nor _on_ending, which the SDK's end still calls).
_QUIET_ON_START = (BatchSpanProcessor, SimpleSpanProcessor)
_FLAGS = {(sampled, random): TraceFlags((TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
                                        | (TraceFlags.RANDOM_TRACE_ID if random else 0))
          for sampled in (False, True) for random in (False, True)}
_SAMPLED = sampling.Decision.RECORD_AND_SAMPLE


def _static(sampler: object) -> sampling.Decision | None:
    """The decision of one of the SDK's static samplers (ALWAYS_ON, ALWAYS_OFF), else None."""
    return sampler._decision if type(sampler) is sampling.StaticSampler else None


def _varying(make: Callable[[], object]) -> tuple[dict[str, Any], set[str]] | None:
    """The attributes of two objects `make` gives: those of the first, and the names of those that are
    not the same object in both (made for each). None if either has a __dict__ of another shape."""
    first, second = make(), make()
    one, two = getattr(first, "__dict__", None), getattr(second, "__dict__", None)
    if one is None or two is None or one.keys() != two.keys():
        return None
    return dict(one), {k for k in one if one[k] is not two[k]}


class _Mold:
    """A `_Span` as its constructor makes it, made by copying what every span of the tracer shares
    (sampler, processors, limits, scope, the unset status) from one made by that constructor, and
    making the rest anew: name, context, parent, kind, resource, a lock, attributes, events, links.
    The SDK's constructor goes through three classes' `__init__`, and its attribute map and event and
    link lists through theirs, at about two thirds of what starting a span costs. Built only if two
    spans of the constructor differ in nothing else (checked here, so an SDK that holds something new
    per span is left to its constructor); `make` is then that constructor's span, field for field."""

    SPAN = {"_name", "_context", "_parent", "_kind", "_start_time", "_end_time", "_resource", "_lock",
            "_attributes", "_events", "_links", "_record_end_metrics"}

    def __init__(self, tracer: Tracer) -> None:
        def span() -> _Span:
            return _Span(name="mold", context=SpanContext(1, 1, False), parent=None, sampler=tracer.sampler,
                         resource=tracer.resource, attributes=None, span_processor=tracer.span_processor,
                         kind=SpanKind.INTERNAL, links=(), instrumentation_info=tracer.instrumentation_info,
                         limits=tracer._span_limits, instrumentation_scope=tracer._instrumentation_scope)

        made = _varying(span)
        sample: Any = span()
        held: Any = sample._attributes
        events: Any = sample._events
        links: Any = sample._links
        self.ready = (made is not None and made[1] <= self.SPAN and type(held) is BoundedAttributes
                      and type(events) is BoundedList and type(links) is BoundedList
                      and not held._dict and not events._dq and not links._dq)  # type: ignore[attr-defined]
        if not self.ready:
            return
        new_held = _varying(lambda: BoundedAttributes(held.maxlen, None, immutable=False,
                                                      max_value_len=held.max_value_len))
        new_events, new_links = _varying(sample._new_events), _varying(lambda: sample._new_links(()))
        if (made is None or new_held is None or new_events is None or new_links is None
                or not new_held[1] <= {"_dict", "_lock"} or not new_events[1] <= {"_dq", "_lock"}
                or not new_links[1] <= {"_dq", "_lock"}):
            self.ready = False
            return
        self._span, self._attributes = made[0], new_held[0]
        self._events, self._links = new_events[0], new_links[0]
        # empty, of the limits' lengths: a copy is a new deque of that length, made in C
        self._no_events, self._no_links = events._dq.copy(), links._dq.copy()

    def make(self, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind,
             resource: Resource, end_metrics: Callable[[], None], attributes: Any) -> _Span | None:
        if not self.ready or attributes:
            return None
        held = object.__new__(BoundedAttributes)
        held.__dict__.update(self._attributes)
        held._dict, held._lock = {}, Lock()
        events = object.__new__(BoundedList)
        events.__dict__.update(self._events)
        events._dq, events._lock = self._no_events.copy(), Lock()  # type: ignore[attr-defined]
        links = object.__new__(BoundedList)
        links.__dict__.update(self._links)
        links._dq, links._lock = self._no_links.copy(), Lock()  # type: ignore[attr-defined]
        span = object.__new__(_Span)
        fields = span.__dict__
        fields.update(self._span)
        fields.update(_name=name, _context=context, _parent=parent, _kind=kind, _start_time=None, _end_time=None,
                      _resource=resource, _lock=Lock(), _attributes=held, _events=events, _links=links,
                      _record_end_metrics=end_metrics)
        return span


def _tuple_layout() -> bool:
    """Whether a SpanContext is the tuple (trace_id, span_id, is_remote, trace_flags, trace_state,
    is_valid), which `LeanStart` reads and makes directly (its properties are Python calls)."""
    state = TraceState([("k", "v")])
    made = SpanContext(3, 4, is_remote=True, trace_flags=TraceFlags(1), trace_state=state)
    return (isinstance(made, tuple) and tuple(made) == (3, 4, True, 1, state, True)
            and tuple(SpanContext(0, 4, False)) == (0, 4, False, 0, DEFAULT_TRACE_STATE, False))


class LeanStart:
    """`start` for one SDK tracer. The decisions of a parent-based sampler of static samplers (the
    SDK's default: ParentBased(ALWAYS_ON)) are read once; another sampler is asked as the SDK asks it."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._mold = _Mold(tracer)
        self._processors: object = None  # the processor tuple last found quiet
        metrics = tracer._tracer_metrics
        # NoOpTracerMetrics gives every span the same do-nothing end callback
        self.usable = type(metrics) is NoOpTracerMetrics and _tuple_layout()
        self._end_metrics = metrics.start_span(None, sampling.Decision.DROP)
        sampler = tracer.sampler
        decisions: tuple[sampling.Decision | None, ...] = ()
        if type(sampler) is sampling.ParentBased:
            decisions = tuple(_static(getattr(sampler, name, None)) for name in (
                "_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
                "_local_parent_not_sampled"))
        elif (decision := _static(sampler)) is not None:
            decisions = (decision,) * 5
        # per parent (none; remote sampled, not; local sampled, not): the decision, whether it records
        self._decisions: tuple[tuple[sampling.Decision, bool], ...] | None = (
            tuple((d, d.is_recording()) for d in decisions if d is not None) or None)  # type: ignore[no-untyped-call]
        if self._decisions is not None and len(self._decisions) != 5:
            self._decisions = None
        self.asks_sampler = self._decisions is None  # then `start` needs the parent's Context

    def _quiet(self) -> bool:
        """Whether starting a span here would call nothing but what `start` does itself."""
        tracer = self.tracer
        multi = tracer.span_processor
        if type(multi) is not SynchronousMultiSpanProcessor or not tracer._tracer_config.is_enabled:
            return False
        processors = multi._span_processors
        if processors is self._processors:  # a processor added makes a new tuple
            return True
        if not self.usable or not all(type(p) in _QUIET_ON_START for p in processors):
            return False
        self._processors = processors
        return True


    def start(self, name: str, parent: trace_api.SpanContext | None, kind: SpanKind,
              context: Context | None = None) -> trace_api.Span | None:
        """A started span named `name`, child of `parent` (a span context; None: a root span), as
        `tracer.start_span(name, context, kind)` makes it, `context` holding the parent (given when
        `asks_sampler`); None where that path must make it."""
        tracer = self.tracer
        if (tracer.span_processor._span_processors is not self._processors
                or not tracer._tracer_config.is_enabled) and not self._quiet():
            return None
        ids = tracer.id_generator
        if parent is None or not parent[5]:  # is_valid
            parent = None
            trace_id, random = ids.generate_trace_id(), ids.is_trace_id_random()
        else:
            trace_id, random = parent[0], bool(parent[3] & TraceFlags.RANDOM_TRACE_ID)
        decisions, attributes = self._decisions, None
        if decisions is None:  # the sampler is asked, with the parent's context, as the SDK asks it
            result = tracer.sampler.should_sample(context, trace_id, name, kind, None, ())
            decision, trace_state, attributes = result.decision, result.trace_state, result.attributes
            recording = decision.is_recording()  # type: ignore[no-untyped-call]
        elif parent is None:
            (decision, recording), trace_state = decisions[0], None
        else:  # ParentBased: by the parent's remoteness and sampled flag; the parent's trace state
            sampled = parent[3] & TraceFlags.SAMPLED
            decision, recording = decisions[(1 if sampled else 2) if parent[2] else (3 if sampled else 4)]
            trace_state = parent[4]
        span_id = ids.generate_span_id()
        # SpanContext(trace_id, span_id, False, flags, trace_state), without its Python-level __new__
        span_context = tuple.__new__(SpanContext, (
            trace_id, span_id, False, _FLAGS[(decision is _SAMPLED, random)],
            DEFAULT_TRACE_STATE if trace_state is None else trace_state,
            0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX))
        if not recording:
            return trace_api.NonRecordingSpan(context=span_context)
        end_metrics = self._end_metrics
        span = self._mold.make(name, span_context, parent, kind, tracer.resource, end_metrics, attributes)
        if span is None:
            span = _Span(name=name, context=span_context, parent=parent, sampler=tracer.sampler,
                         resource=tracer.resource, attributes=attributes, span_processor=tracer.span_processor,
                         kind=kind, links=(), instrumentation_info=tracer.instrumentation_info,
                         limits=tracer._span_limits, instrumentation_scope=tracer._instrumentation_scope,
                         record_end_metrics=end_metrics)
        span._start_time = time_ns()  # what `span.start()` does, but for on_start, which does nothing here
        return span
