"""Calls to deployments that survive faults: bounded retries, fallbacks, circuit breaking, one deadline.

Each deployment in turn: an attempt if its circuit admits one (a half-open circuit admits a single
trial), and on a retryable failure (timeout, connection error, 429, 5xx) up to `max_retries` more
(tenacity) after a wait: the upstream's Retry-After when it sent one, else a short jittered exponential
back-off. A wait that does not fit in the request's remaining deadline is not taken: the next
fallback is tried at once. Every attempt runs for at most min(deployment timeout_s, remaining).

Only failures that say something about the deployment count toward its circuit; a 4xx the
request caused does not (and 400/422 end the request: another deployment would say the same), nor
does a whole answer's timeout once its first token came in time (on the direct path a whole answer is
asked for as a stream and rebuilt), or, asked for whole, while the deployment answered other calls in
time: its length was the request's doing (`gateway.providers.health`). A deployment that refuses such a
stream for streaming (`ProviderFailure.refuses_streaming`) is asked the same call whole, and every
whole answer whole after it, in this process (`Upstreams.unstreamed`).
When no deployment was even tried because every circuit is open, the answer is 503
`deployment_unavailable` with Retry-After. A deployment at its own rate limit (`gateway.quotas`) is
skipped the same way; when that is why none was tried, the answer is 429 naming the limit.
Clients see which deployment failed and how; the full detail goes to the `switchyard.upstream`
log. Every attempt is a CLIENT span named and
attributed as the GenAI semantic conventions say (`chat {model}`, `gen_ai.*`, `server.*`,
`error.type` and status ERROR when it fails), with its deployment and cost; the call carries that
span's W3C trace context, so the upstream's own spans join the trace. A deployment with
`isolate_prefix_cache` is sent the calling tenant's `cache_salt` (`gateway.keyed`). Each attempt is also a
`gen_ai.client.operation.duration` / `gen_ai.client.token.usage` measurement, and failures and
retries are log lines with an `event` (upstream_failure, upstream_retry).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry.trace import Span, Status, StatusCode
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from gateway.config import DeploymentConfig
from gateway.decimals import as_decimal
from gateway.errors import (
    DeploymentUnavailable,
    GatewayError,
    InvalidRequest,
    ProviderMisconfigured,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.executor.deadline import Deadline
from gateway.executor.drain import DRAIN_S, READ_ON, Draining, bill_cut, drain
from gateway.executor.result import CallRecord
from gateway.keyed import tenant_salt
from gateway.media_tokens import messages_audio_tokens
from gateway.messages import count_completion, prompt_tokens, request_bound
from gateway.metrics import Metrics
from gateway.providers.base import (
    Backend,
    Completion,
    ProviderFailure,
    StreamStats,
    Usage,
    loggable,
    missing_credential,
    short_of_choices,
)
from gateway.providers.genai import upstream_names
from gateway.providers.health import DeploymentHealth, HealthBoard, configured_latency_ms
from gateway.providers.pricing import DeploymentPrice
from gateway.providers.terms import PLAIN, Terms, terms_of, with_audio_input
from gateway.quotas import DeploymentOverQuota, DeploymentQuotas, Taken, over_quota_error
from gateway.streaming import Accumulator, Choices, choices_asked, stream_body
from gateway.telemetry import Telemetry, set_attributes

T = TypeVar("T")
log = logging.getLogger("switchyard.upstream")


@dataclass(slots=True)
class OpenStream:
    deployment: str
    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]
    stats: StreamStats
    span: Span
    started: float = field(default_factory=time.perf_counter)
    taken: Taken | None = None  # its place in the deployment's token window, settled when it ends
    earlier: tuple[CallRecord, ...] = ()  # a resumed stream's cut call, billed with it (`executor.resume`)
    # Its client left and it is read on only to be billed (`read_on`): were it to break, no continuation
    # is opened for nobody (`executor.resume`).
    abandoned: bool = False
    terms: Terms = PLAIN  # what its request asked for that changes its price (`gateway.providers.terms`)


@dataclass(slots=True)
class _Begun:
    """A whole answer read from a stream: did its first chunk come while the gateway still waited?"""

    answering: bool = False
    given_up: bool = False


def _streamable(body: dict[str, Any]) -> bool:
    """May this whole answer be asked for as a stream? Not with audio output: OpenAI streams audio only
    as pcm16, and a whole answer may ask for any format."""
    modalities = body.get("modalities")
    return not (isinstance(modalities, list) and "audio" in modalities)


class _CircuitOpen(Exception):
    """The deployment's circuit admitted no call: skip it without calling."""


class _DeadlinePassed(Exception):
    """The request's deadline passed: stop trying anything."""


class _MissingCredential(ProviderFailure):
    """The deployment's key variable is unset: a configuration error, never retried or counted."""


_BACKOFF_BASE_S, _BACKOFF_MAX_S, _JITTER_S = 0.05, 2.0, 0.05


def _retry_wait(exc: ProviderFailure, retry: int) -> float:
    """The wait before retry number `retry` (1-based): the upstream's Retry-After when it sent one,
    else a jittered exponential back-off."""
    if exc.retry_after_s is not None:
        return exc.retry_after_s
    return min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2.0 ** (retry - 1)) + random.uniform(0, _JITTER_S)


def _longest_wait(exc: ProviderFailure, retry: int) -> float:
    """The most `_retry_wait` can be: a wait is only started when it surely fits in the deadline."""
    if exc.retry_after_s is not None:
        return exc.retry_after_s
    return min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2.0 ** (retry - 1)) + _JITTER_S


def counted(done: Completion, body: dict[str, Any]) -> Completion:
    """An answer without `usage` is billed on counted tokens (prompt and completion), never as free.
    The prompt is the one the request counted when it was routed, unless the call sent another."""
    if done.usage.total_tokens:
        return done
    messages = body.get("messages") or ()
    usage = Usage(prompt_tokens(body), count_completion(done.body),
                  prompt_audio_tokens=messages_audio_tokens(messages))
    return Completion(done.body, usage, done.latency_s)


def limited(body: dict[str, Any], d: DeploymentConfig, name: str) -> dict[str, Any]:
    """`body` with an output limit: a request that sets none is sent the deployment's
    `max_output_tokens` (as `name`, its backend's `output_limit`), the limit its budget reservation
    and cost cap were worked out with. Without it a model may write to its own (often larger) limit,
    and the call cost more than was reserved."""
    if body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None:
        return body
    return {**body, name: d.max_output_tokens}


def salted(body: dict[str, Any], salt: str | None) -> dict[str, Any]:
    """`body` with the calling tenant's cache salt. A salt the client sent partitions its tenant's
    cache further (`<tenant salt>.<its salt>`) but cannot leave it: the tenant's part is fixed-length
    hex, so no client value makes another tenant's salt. A call outside any tenant's request (none
    set) gets a salt of its own, shared with nothing."""
    salt = salt or secrets.token_hex(32)
    own = body.get("cache_salt")
    return {**body, "cache_salt": salt if own is None else f"{salt}.{own}"}


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderFailure) and exc.retryable


def _outcome_failure(state: RetryCallState) -> ProviderFailure:
    exc = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(exc, ProviderFailure)  # tenacity only retries ProviderFailure (`_retryable`)
    return exc


class _WaitWouldNotFit(stop_base):
    """Stop retrying this deployment when the next wait might outlast the request's deadline."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        return _longest_wait(_outcome_failure(state), state.attempt_number + 1) >= self.deadline.remaining()


class _CircuitOpened(stop_base):
    """Stop retrying this deployment when its circuit is open: the failure just seen opened it (or another
    request's did), and the retry after the wait would be refused: the wait (an upstream's Retry-After, up to
    60 s) was the client's for nothing, its fallbacks asked only after it."""

    def __init__(self, health: DeploymentHealth) -> None:
        self.health = health

    def __call__(self, state: RetryCallState) -> bool:
        return self.health.is_open(time.monotonic())


def _is_request_fault(exc: ProviderFailure) -> bool:
    return exc.status in (400, 422)


class Upstreams:
    def __init__(self, deployments: Mapping[str, DeploymentConfig], backends: Mapping[str, Backend],
                 prices: Mapping[str, DeploymentPrice], health: HealthBoard, telemetry: Telemetry,
                 metrics: Metrics | None = None, quotas: DeploymentQuotas | None = None) -> None:
        self.deployments = deployments
        self.quotas = quotas if quotas is not None and quotas.limited else None
        self.draining = Draining()  # the calls given up on and still read, which shutdown waits for
        self.backends = backends
        self.prices = prices
        self.health = health
        self.telemetry = telemetry
        # What the backends are given: their own timeouts past the gateway's, which the gateway keeps
        # itself, so that a call it gives up on can still be read (`executor.drain`).
        self._patient = {n: d.model_copy(update={"timeout_s": d.timeout_s + DRAIN_S}) for n, d in deployments.items()}
        self.isolating = frozenset(n for n, d in deployments.items() if d.isolate_prefix_cache)
        # Deployments that refused a whole answer asked for as a stream: asked for whole ones whole since.
        self.unstreamed: set[str] = set()
        names = {n: upstream_names(d) for n, d in deployments.items()}
        self._span_names = {n: v.span_name for n, v in names.items()}
        self._span_attributes = {n: v.attributes(n) for n, v in names.items()}
        self.metrics = metrics
        # the GenAI metric attributes of each deployment, fixed: operation, provider, model, deployment
        self._gen_ai = {n: ("chat", v.provider, v.model, n) for n, v in names.items()}
        # Checked once at start-up: not fatal, other deployments may work; calls to these fail at once.
        self.missing_keys = {n: var for n, d in deployments.items() if (var := missing_credential(d))}
        for name, var in self.missing_keys.items():
            log.warning("deployment '%s': its api_key_env variable %s is unset or empty; "
                        "requests to it will fail until it is set and the gateway restarted", name, var)

    def _sent(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """What deployment `name` is sent: with an output limit and, if it isolates its prefix cache, a salt."""
        body = limited(body, self.deployments[name], self.backends[name].output_limit)
        return salted(body, tenant_salt.get()) if name in self.isolating else body

    def _span(self, name: str, parent: Span | None, body: dict[str, Any]) -> Span:
        return self.telemetry.start_client(self._span_names[name], parent, self._span_attributes[name],
                                           gen_ai__request__temperature=body.get("temperature"))

    def _worst_usd(self, name: str, body: dict[str, Any]) -> float:
        """The most one call of `body` (limited: it names its output limit) to `name` may be billed: its
        prompt at `prompt_bound`, as the request's budget hold counts it (an upstream's tokenizer may count
        many times what the gateway's does)."""
        output = body.get("max_completion_tokens") or body.get("max_tokens") or self.deployments[name].max_output_tokens
        bound, audio = request_bound(body)  # its definitions (tools, schemas) too
        terms = with_audio_input(terms_of(body), audio)
        return self.prices[name].under(terms).bound(bound, output * int(body.get("n") or 1))

    async def _awaited(self, name: str, step: Awaitable[T], deadline: Deadline,
                       priced: Callable[[T], Awaitable[CallRecord | None]], body: dict[str, Any]) -> T:
        """`step` within min(the deployment's timeout_s, the deadline); given up on (timed out, or this
        request cancelled), it is not cut but drained: an answer on its way is still billed (and the
        most it may cost stays held against the request's budgets until it ends)."""
        loop = asyncio.get_running_loop()
        call = asyncio.ensure_future(step)
        timeout_s = self.deployments[name].timeout_s
        limit = min(timeout_s, deadline.remaining())
        # `asyncio.wait` does this at about twice the cost: wake when the call ends or at the limit.
        waiter = loop.create_future()
        call.add_done_callback(functools.partial(_wake, waiter))
        timer = loop.call_later(max(limit, 0.0), _wake, waiter)
        try:
            await waiter
        except BaseException:
            drain(call, priced, functools.partial(self._worst_usd, name, body), into=self.draining)
            raise
        finally:
            timer.cancel()
        if call.done():
            return call.result()
        drain(call, priced, functools.partial(self._worst_usd, name, body), into=self.draining)
        if limit < timeout_s:
            # The deadline ended the wait, but a timer may fire before the clock reaches its time (uvloop's
            # round a delay to whole milliseconds): the rest is waited out, so that what follows (a cascade's
            # next step after a judge or step the deadline cut) finds the deadline passed and calls nothing.
            # It found time left, sent a call that could not answer in it, and that call was billed when it
            # answered after the 504.
            while (left := deadline.remaining()) > 0:  # noqa: ASYNC110 (a clock to pass, not an event)
                await asyncio.sleep(left)
            raise _DeadlinePassed
        raise ProviderFailure(f"{name}: no answer within {timeout_s:g} s", timeout=True,
                              reason=f"timed out after {timeout_s:g} s")

    def asks_whole(self, name: str, body: dict[str, Any]) -> bool:
        """Is this whole answer asked of deployment `name` whole, never as a stream: the deployment is
        configured so (`whole_answers_as_streams: never`) or found to refuse them (`unstreamed`), or the
        answer cannot be streamed as asked (`_streamable`)?"""
        return (name in self.unstreamed or self.deployments[name].whole_answers_as_streams == "never"
                or not _streamable(body))

    def _can_stream(self, name: str, body: dict[str, Any]) -> bool:
        """May this whole answer be asked for as a stream, should its deployment's health need a verdict?"""
        return self.backends[name].streams_whole_answers and not self.asks_whole(name, body)

    def _failed(self, name: str, exc: BaseException, span: Span, trial: bool, started: float,
                whole_since: float | None = None, answering: bool = False, can_stream: bool = False,
                first_since: float | None = None) -> None:
        """Book a failed attempt: only failures about the deployment count toward its circuit.
        `whole_since`: when a whole answer's call began (monotonic), for one asked for whole; None for
        one read from a stream. `answering`: a whole answer read from a stream had its first chunk in
        time (the deployment was answering it, and a trial's verdict is in: it passed). `can_stream`:
        a whole answer asked for whole whose timeout nothing explains is held for a streamed call's
        verdict rather than counted (`gateway.providers.health`). `first_since`: when a stream's wait for
        its first chunk began (monotonic)."""
        health = self.health[name]
        trial = trial and not answering
        timed_out = isinstance(exc, ProviderFailure) and exc.timed_out
        if not (isinstance(exc, ProviderFailure) and exc.counts_against_deployment):
            health.record_neutral(trial=trial)  # the request's fault, the deadline, a cancelled call
        elif timed_out and (answering or any(t is not None and health.answered_since(t)
                                             for t in (whole_since, first_since))):
            # A whole answer's timeout is the request's length, not the deployment's fault, once its
            # first token came in time or while the deployment answered others: one client asking
            # for long answers must not open the circuit for everyone. A late first chunk while it
            # answered others is the request's too: a long prompt's prefill, a schema to compile.
            health.record_neutral(trial=trial)
        elif timed_out and whole_since is not None and can_stream:
            health.hold_unexplained(trial=trial)  # the next calls are asked for as streams to settle it
        else:  # no first token in time settles the held timeouts too (`hung`)
            health.record_failure(time.monotonic(), trial=trial, hung=timed_out and whole_since is None)
        kind = error_type(exc)
        if isinstance(exc, ProviderFailure):
            detail, reason = loggable(exc)
            log.warning("deployment '%s' failed: %s", name, detail, extra={
                "event": "upstream_failure", "deployment": name, "error_type": kind,
                "status": exc.status, "retryable": exc.retryable, "reason": reason})
        if self.metrics is not None:
            # A call cancelled (a hedge leg beaten, a request its client left) did not fail: its circuit counts
            # it neutral, and counted here every hedge the slow deployment lost read as one of its failures.
            if not isinstance(exc, asyncio.CancelledError):
                self.metrics.upstream_failures.add((name, kind))
            self.metrics.operation.record((*self._gen_ai[name], kind), time.perf_counter() - started)
        _end_failed(span, exc)

    async def _take(self, name: str, body: dict[str, Any], trial: bool) -> Taken | None:
        """Count the attempt in the deployment's rate windows; at a limit, skip it (as if its circuit
        were open), giving back a half-open circuit's trial."""
        if self.quotas is None:
            return None
        try:
            return await self.quotas.take(name, body)
        except DeploymentOverQuota:
            self.health[name].record_neutral(trial=trial)
            raise

    async def _attempt(self, name: str, body: dict[str, Any], parent: Span | None, deadline: Deadline,
                       trial: bool) -> Completion:
        body = self._sent(name, body)
        taken = await self._take(name, body, trial)
        span = self._span(name, parent, body)
        started = time.perf_counter()
        terms = terms_of(body)
        async def priced(late: Completion) -> CallRecord:
            late = counted(late, body)
            return CallRecord(name, late.usage, self.prices[name].cost(late.usage, terms), late.latency_s)

        since = time.monotonic()
        stats, begun = StreamStats(), _Begun()
        can_stream = self._can_stream(name, body)
        always = self.deployments[name].whole_answers_as_streams == "always"
        streamed = can_stream and (trial or always or self.health[name].needs_verdict)

        def first_chunk() -> None:  # the deployment is answering: a trial's verdict, as a stream's
            if not begun.given_up:  # a late first chunk, read while drained, proves nothing
                begun.answering = True
                self.health[name].first_chunk(trial=trial)

        def whole() -> Awaitable[Completion]:
            return self.backends[name].complete(self._patient[name], body, self.telemetry.inject(span))

        try:
            if streamed:
                call = self._read_whole(name, stream_body(body), stats, self.telemetry.inject(span), first_chunk)
                try:
                    done = await self._awaited(name, call, deadline, priced, body)
                except ProviderFailure as exc:
                    if exc.refuses_streaming:
                        self._unstream(name, exc)
                    elif begun.answering and not exc.timed_out and not always:
                        # Asked as a stream for a verdict, it broke off after its first chunk (billed for what
                        # came): a deployment whose streams break while its whole answers are fine failed every
                        # whole answer, since each break kept it "failing", which asks for streams.
                        log.warning("deployment '%s' broke off a whole answer asked for as a stream (%s): asked "
                                    "again whole", name, exc.reason, extra={
                                        "event": "whole_answer_asked_again", "deployment": name,
                                        "reason": exc.reason})
                        begun.answering = False  # the whole call's own verdict from here
                    else:
                        raise
                    # The stream was the gateway's idea, not the client's: ask again as the client did.
                    streamed, since = False, time.monotonic()
                    done = await self._awaited(name, whole(), deadline, priced, body)
            else:
                done = await self._awaited(name, whole(), deadline, priced, body)
            done = counted(done, body)
            answered = len({c.get("index", 0) for c in done.body.get("choices") or ()})
            if (short := short_of_choices(name, answered, choices_asked(body))) is not None:
                # What it generated is billed, as a call that broke off is; the request goes on without it.
                await bill_cut(CallRecord(name, done.usage, self.prices[name].cost(done.usage, terms), done.latency_s))
                raise short
        except BaseException as exc:
            begun.given_up = True
            # Asked again, not as `can_stream` was: a deployment that refused the stream is never asked
            # for one, and a timeout held for a streamed verdict would never be counted.
            self._failed(name, exc, span, trial, started, whole_since=None if streamed else since,
                         answering=begun.answering, can_stream=self._can_stream(name, body))
            raise
        configured_ms = configured_latency_ms(self.deployments[name], done.usage.completion_tokens,
                                              done.usage.prompt_tokens)
        self.health[name].record_success(done.latency_s, stats.ttft_s, configured_s=configured_ms / 1000)
        if taken is not None and self.quotas is not None:
            await self.quotas.settle(taken, done.usage.prompt_tokens + done.usage.completion_tokens)
        if self.metrics is not None:
            self._measure(name, time.perf_counter() - started, done.usage)
        set_attributes(span, gen_ai__response__model=done.body.get("model"),
                       gen_ai__usage__input_tokens=done.usage.prompt_tokens,
                       gen_ai__usage__output_tokens=done.usage.completion_tokens,
                       switchyard__cost_usd=self.prices[name].cost(done.usage, terms))
        span.end()
        return done

    def _unstream(self, name: str, refused: ProviderFailure) -> None:
        """Deployment `name` refused a whole answer asked for as a stream (a model its key may not
        stream, a server without `stream_options`): ask it for whole answers whole from now on, in this
        process, and say once how to make that the configuration."""
        if name in self.unstreamed:
            return
        self.unstreamed.add(name)
        log.warning("deployment '%s' refused a whole answer asked for as a stream (%s): its whole answers are "
                    "asked for whole from now on, until restart; set whole_answers_as_streams: never on it to "
                    "make this permanent", name, refused.reason, extra={
                        "event": "whole_answers_unstreamed", "deployment": name, "status": refused.status,
                        "reason": refused.reason, "setting": "whole_answers_as_streams: never"})

    async def _read_whole(self, name: str, body: dict[str, Any], stats: StreamStats,
                          headers: Mapping[str, str] | None, first_chunk: Callable[[], None]) -> Completion:
        """A whole answer asked for as a stream (`body` streams) and rebuilt as the server would have
        sent it whole; `first_chunk()` as its first chunk comes. Cancelled (a drained call read too
        long), it closes the upstream stream. A stream that fails, or ends before every choice has its
        finish reason, after its first chunk is a failure (never a half answer passed off as whole);
        such a stream, or one cancelled after its first chunk, is billed for what it generated
        (`drain.bill_cut`)."""
        started = time.perf_counter()
        chunks = self.backends[name].stream(self._patient[name], body, stats, headers)
        acc: Accumulator | None = None
        try:
            async for piece in chunks:
                if acc is None:
                    acc = Accumulator()
                    first_chunk()
                acc.add(piece)
            if acc is not None:
                require_finished(name, acc)
        except (ProviderFailure, asyncio.CancelledError):
            # Failed part-way, or cut part-way (only a call drained past `DRAIN_S` is cancelled): what
            # it generated is billed.
            if acc is not None:
                await bill_cut(self._cut_record(name, body, stats.usage, acc, time.perf_counter() - started))
            raise
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        if acc is None:
            raise ProviderFailure(f"{name}: stream ended before any chunk", reason="stream ended before any chunk")
        answer = acc.body(stats.usage)
        if not stats.usage.total_tokens:  # none reported: counted by the caller, as a whole answer's
            answer.pop("usage")
        return Completion(answer, stats.usage, time.perf_counter() - started)

    def _cut_record(self, name: str, body: dict[str, Any], usage: Usage, acc: Accumulator,
                    latency_s: float) -> CallRecord:
        """A call that broke off: its usage if the upstream sent one, else its prompt and what came, counted."""
        if not usage.total_tokens:
            messages = body.get("messages") or ()
            usage = Usage(prompt_tokens(body), acc.completion_tokens_estimate(),
                          prompt_audio_tokens=messages_audio_tokens(messages))
        return CallRecord(name, usage, self.prices[name].cost(usage, terms_of(body)), latency_s)

    def _measure(self, name: str, seconds: float, usage: Usage, error_type: str = "") -> None:
        assert self.metrics is not None
        gen_ai = self._gen_ai[name]
        self.metrics.operation.record((*gen_ai, error_type), seconds)
        self.metrics.usage.record((*gen_ai, "input"), usage.prompt_tokens)
        self.metrics.usage.record((*gen_ai, "output"), usage.completion_tokens)

    async def _with_retries(self, name: str, once: Callable[[bool], Awaitable[T]], deadline: Deadline) -> T:
        """One deployment: attempts while its circuit admits them, retries bounded by count and deadline.

        The first attempt runs without any retry machinery (tenacity costs ~30 µs a call, and the
        common case needs none); a retryable failure enters tenacity for the remaining attempts.
        """
        if name in self.missing_keys:
            var = self.missing_keys[name]
            raise _MissingCredential(f"{name}: environment variable {var} is unset or empty", retryable=False,
                                     reason=f"its credential variable {var} is not set")
        health = self.health[name]
        failures: list[ProviderFailure] = []

        async def attempt() -> T:
            if deadline.expired():
                raise _DeadlinePassed
            admitted = health.admit(time.monotonic())
            if admitted is None:  # open, or half-open with its one trial already out
                raise _CircuitOpen(name)
            try:
                return await once(admitted == "trial")
            except ProviderFailure as exc:
                failures.append(exc)
                raise

        retries = self.deployments[name].max_retries
        try:
            return await attempt()
        except ProviderFailure as exc:
            if (not exc.retryable or retries == 0 or _longest_wait(exc, 1) >= deadline.remaining()
                    or health.is_open(time.monotonic())):
                raise  # nothing to retry, the wait would not fit or the circuit opened: the next fallback, at once
        wait = _retry_wait(failures[-1], 1)
        _log_retry(name, 1, wait, failures[-1])
        await asyncio.sleep(wait)
        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(retries), _WaitWouldNotFit(deadline), _CircuitOpened(health)),
            wait=lambda state: _retry_wait(_outcome_failure(state), state.attempt_number + 1),
            retry=retry_if_exception(_retryable), reraise=True,
            before_sleep=lambda state: _log_retry(name, state.attempt_number + 1, state.upcoming_sleep,
                                                  _outcome_failure(state)))
        try:
            async for step in retrying:
                with step:
                    return await attempt()
        except _CircuitOpen:
            raise failures[-1] from None  # the circuit opened under us: report what made it open
        raise AssertionError("tenacity ended without a result")  # unreachable: reraise=True

    async def _first(self, names: Sequence[str], make: Callable[[str, bool], Awaitable[T]],
                     deadline: Deadline) -> tuple[str, T]:
        """The first deployment of `names` (in order) that answers, or the error that explains why none did."""
        failures: list[tuple[str, ProviderFailure]] = []
        skipped: list[DeploymentOverQuota] = []
        cut = False  # the deadline stopped an attempt (the clock may not say so yet: see `_final_error`)
        for name in names:
            try:
                return name, await self._with_retries(name, functools.partial(make, name), deadline)
            except ProviderFailure as exc:
                failures.append((name, exc))
                if _is_request_fault(exc) and not exc.deployment_specific:
                    break  # the request itself is bad: another deployment would say the same
            except _CircuitOpen:
                continue
            except DeploymentOverQuota as exc:
                skipped.append(exc)
            except _DeadlinePassed:
                cut = True
                break
        if skipped and not failures and not cut and not deadline.expired():
            raise over_quota_error(skipped)
        raise self._final_error(names, failures, deadline, cut)

    def _final_error(self, names: Sequence[str], failures: list[tuple[str, ProviderFailure]],
                     deadline: Deadline, cut: bool = False) -> GatewayError:
        """`cut`: the deadline stopped an attempt. Told, not read off the clock: the event loop's timer
        that ended the wait may fire up to a millisecond early (uvloop's do), and a deadline not yet
        expired by the clock then read as "nothing was called": 503 circuit open, retry after 0 s."""
        told = "; ".join(f"deployment '{n}' failed: {f.reason}" for n, f in failures[-3:])
        if failures and _is_request_fault(failures[-1][1]):
            name, last = failures[-1]
            # With the upstream's own code and param where it named them, as OpenAI's clients read them
            return InvalidRequest(f"deployment '{name}' rejected the request: {last.reason}",
                                  code=last.code or "upstream_rejected", param=last.param)
        if cut or deadline.expired():
            return UpstreamTimeout(f"no answer within the request's deadline of {as_decimal(deadline.budget_s)} s"
                                   + (f" ({told})" if told else ""))
        if not failures:  # nothing was called: every circuit is open
            return self.unavailable(names)
        if all(isinstance(f, _MissingCredential) for _, f in failures):
            return ProviderMisconfigured(told)
        if failures[-1][1].timeout:
            return UpstreamTimeout(told)
        waits = [f.retry_after_s for _, f in failures]
        if all(w is not None for w in waits):
            # Every deployment tried said when to ask again (a 429's or 503's Retry-After that did not fit in
            # the deadline, or came after the last retry): the client is told the soonest, which the openai SDKs
            # wait out, rather than asking again at once, which a throttled upstream refuses as well.
            return UpstreamError(told, headers={"retry-after": str(math.ceil(min(w for w in waits if w is not None)))})
        error = UpstreamError(told)
        if {n for n, _ in failures} >= set(names) and not any(f.retryable or f.timed_out for _, f in failures):
            # Every deployment was asked and refused in a way that asking again soon cannot change (an upstream
            # 401, 403 or 404: a wrong key or model name, which only an operator fixes): the openai SDKs, which
            # send any 502 again twice by default, are told not to, as for an upstream's own 401 or 404.
            error.retry_helps = False
        return error

    def unavailable(self, names: Sequence[str]) -> DeploymentUnavailable:
        """503 for deployments whose circuits are all open, with Retry-After: the first cooldown's end."""
        now = time.monotonic()
        wait = min(self.health[n].retry_after_s(now) for n in names)
        listed = ", ".join(f"'{n}'" for n in names)
        return DeploymentUnavailable(
            f"deployment {listed} is unavailable: its circuit is open after repeated failures; "
            f"retry after {wait} s", headers={"retry-after": str(wait)})

    async def call(self, names: Sequence[str], body: dict[str, Any], parent: Span | None, *,
                   deadline: Deadline, role: str = "answer") -> tuple[Completion, CallRecord]:
        name, done = await self._first(
            names, lambda n, trial: self._attempt(n, body, parent, deadline, trial), deadline)
        return done, CallRecord(name, done.usage, self.prices[name].cost(done.usage, terms_of(body)), done.latency_s,
                                role)

    async def _open_one(self, name: str, body: dict[str, Any], parent: Span | None, deadline: Deadline,
                        trial: bool, whole: bool = False) -> OpenStream:
        body = self._sent(name, body)
        taken = await self._take(name, body, trial)
        span = self._span(name, parent, body)
        started, since = time.perf_counter(), time.monotonic()
        stats = StreamStats()
        terms = terms_of(body)
        chunks = self.backends[name].stream(self._patient[name], body, stats, self.telemetry.inject(span))

        async def priced(late: dict[str, Any]) -> CallRecord:  # a first chunk after all: billed, then cut
            await chunks.aclose()  # type: ignore[attr-defined]
            messages = body.get("messages") or ()
            usage = Usage(prompt_tokens(body), _produced(late), prompt_audio_tokens=messages_audio_tokens(messages))
            return CallRecord(name, usage, self.prices[name].cost(usage, terms), time.perf_counter() - started)

        try:
            first = await self._awaited(name, _next(chunks), deadline, priced, body)
        except StopAsyncIteration:
            exc = ProviderFailure(f"{name}: stream ended before any chunk", reason="stream ended before any chunk")
            self._failed(name, exc, span, trial, started)
            raise exc from None
        except BaseException as exc:
            if whole and isinstance(exc, ProviderFailure) and exc.refuses_streaming:
                self._unstream(name, exc)  # a whole answer's stream was the gateway's idea, as in `_attempt`
            self._failed(name, exc, span, trial, started, first_since=since)
            raise
        set_attributes(span, gen_ai__response__model=first.get("model"))
        # The deployment is answering; a trial's verdict, letting other traffic through now, not
        # when the stream ends.
        self.health[name].first_chunk(trial=trial)
        paced = Paced(name, chunks, self.deployments[name].timeout_s, first, choices_asked(body))
        return OpenStream(name, first, paced, stats, span, taken=taken, terms=terms)

    async def open_stream(self, names: Sequence[str], body: dict[str, Any], parent: Span | None, *,
                          deadline: Deadline, whole: bool = False) -> OpenStream:
        """Retries, fallbacks and the deadline apply until the first chunk; after that the stream is
        committed (each wait for the next chunk is bounded by the deployment's timeout_s). `whole`: the
        stream is read for a whole answer (a hedge's leg), so a deployment that refuses it for streaming
        is asked for whole answers whole from then on (`asks_whole`)."""
        _, live = await self._first(
            names, lambda n, trial: self._open_one(n, body, parent, deadline, trial, whole), deadline)
        return live

    async def end_stream(self, s: OpenStream, error: ProviderFailure | None = None) -> CallRecord:
        """`close_stream`, and the tokens the stream reserved in its deployment's window settled to
        what it used: its usage, or what was counted of a stream cut short (set before this)."""
        record = self.close_stream(s, error)
        if s.taken is not None and self.quotas is not None:
            await self.quotas.settle(s.taken, record.usage.prompt_tokens + record.usage.completion_tokens)
        return record

    def read_on(self, s: OpenStream, acc: Accumulator, body: dict[str, Any], counted: Callable[[], Usage],
                ended: Callable[[CallRecord], None]) -> None:
        """A relayed stream its client left before its end (`acc`: what it had of it) is read on in the
        background, within `DRAIN_S` (`executor.drain`), and billed to the request when it ends, beside
        its answer as a late call is (role `READ_ON`), for the usage the upstream reports at its end;
        without one, `counted()`. Closing it instead would bill only what the gateway had seen: a
        reasoning model thinks on (billed as completion tokens, reported only in its final usage chunk)
        whether or not anyone reads. A stream that fails, or is cut at `DRAIN_S`, is billed for what
        came (`bill_cut`). `body`: what it was asked (the most it may cost is held until it ends).
        `ended(record)`: told what the call was billed when it ends, however it ends; the request counts
        it in its metrics and writes its record then (the ledger leaves `READ_ON` calls out of the
        background metrics for that reason)."""

        s.abandoned = True

        def tell(record: CallRecord) -> None:  # never in the way of the bill itself
            try:
                ended(record)
            except Exception:
                log.exception("a stream read on after its client left ended; its request's record failed")

        async def rest() -> CallRecord:
            error: ProviderFailure | None = None
            try:
                async for chunk in s.rest:
                    acc.add(chunk)
            except ProviderFailure as exc:
                error = exc
            except asyncio.CancelledError:  # read too long: cut, billed for what came
                record = await self.end_counted(s, counted)
                tell(record)
                await bill_cut(record, READ_ON)
                raise
            finally:
                await s.rest.aclose()  # type: ignore[attr-defined]
            record = await self.end_counted(s, counted, error)
            tell(record)
            if error is not None:
                await bill_cut(record, READ_ON)
                raise error
            return record

        async def priced(record: CallRecord) -> CallRecord:
            return record

        drain(asyncio.ensure_future(rest()), priced, functools.partial(self._worst_usd, s.deployment, body), READ_ON,
              self.draining)

    async def end_counted(self, s: OpenStream, counted: Callable[[], Usage], error: ProviderFailure | None = None,
                          ) -> CallRecord:
        """`end_stream`, billing `counted()` for a stream that ended (or was cut) without reporting usage."""
        if not s.stats.usage.total_tokens:  # cut short, or no usage sent: bill what was counted
            s.stats.usage = counted()
        return await self.end_stream(s, error)

    def close_stream(self, s: OpenStream, error: ProviderFailure | None = None) -> CallRecord:
        latency = time.perf_counter() - s.started
        cost = self.prices[s.deployment].cost(s.stats.usage, s.terms)
        if self.metrics is not None:
            gen_ai = self._gen_ai[s.deployment]
            if error is not None:
                self.metrics.upstream_failures.add((s.deployment, "stream"))
            if s.stats.ttft_s is not None:
                self.metrics.first_chunk.record(gen_ai, s.stats.ttft_s)
            self._measure(s.deployment, latency + (s.stats.ttft_s or 0.0), s.stats.usage,
                          "stream" if error is not None else "")
        set_attributes(s.span, gen_ai__usage__input_tokens=s.stats.usage.prompt_tokens,
                       gen_ai__usage__output_tokens=s.stats.usage.completion_tokens,
                       switchyard__cost_usd=cost, switchyard__ttft_s=s.stats.ttft_s)
        if error is not None:
            log.warning("deployment '%s' failed mid-stream: %s", s.deployment, error, extra={
                "event": "upstream_failure", "deployment": s.deployment, "error_type": "stream",
                "reason": error.reason})
            if error.counts_against_deployment:
                self.health[s.deployment].record_failure(time.monotonic())
            else:  # e.g. fewer choices than its `n`: its streams of one choice are whole
                self.health[s.deployment].record_neutral()
            _end_failed(s.span, error)
        else:
            self.health[s.deployment].record_success(latency, s.stats.ttft_s)
            s.span.end()
        return CallRecord(s.deployment, s.stats.usage, cost, latency)


def require_finished(name: str, acc: Accumulator) -> None:
    """A whole answer read from a stream (`acc`, from deployment `name`) that ended before every choice
    had its finish reason is a failure: never a half answer, finish_reason null, passed off as whole."""
    if not acc.finished:
        raise ProviderFailure(f"{name}: stream ended before the answer finished",
                              reason="stream ended before the answer finished")


def _wake(waiter: asyncio.Future[None], *_: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _next(chunks: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await anext(chunks)


def _produced(chunk: dict[str, Any]) -> int:
    """The completion tokens one chunk carries, counted as a stream's are (`Accumulator`): its text, a
    tool call's pieces and the reasoning a server streams."""
    acc = Accumulator()
    acc.add(chunk)
    return acc.completion_tokens_estimate()


class Paced:
    """The rest of a stream, each wait for its next chunk bounded by the deployment's timeout_s.
    `aclose` closes the upstream stream, whether or not this was ever read.

    A stream whose every choice has finished (`Choices.answered`) and whose connection then breaks or goes
    quiet has ended: only its `[DONE]` (perhaps its usage chunk) was lost. Taken for a stream broken
    mid-way, its client read the whole answer and then an error, or a fallback's "continuation" after
    its finish_reason and usage, billed as another call."""

    __slots__ = ("choices", "chunks", "name", "timeout_s")

    def __init__(self, name: str, chunks: AsyncIterator[dict[str, Any]], timeout_s: float,
                 first: dict[str, Any], asked: int = 1) -> None:
        self.name, self.chunks, self.timeout_s = name, chunks, timeout_s
        self.choices = Choices(asked)
        self.choices.add(first)

    def __aiter__(self) -> Paced:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout_s):
                chunk = await anext(self.chunks)
        except TimeoutError:
            if self.choices.answered:
                raise StopAsyncIteration from None
            raise ProviderFailure(f"{self.name}: stream stalled for {self.timeout_s:g} s", timeout=True,
                                  reason=f"stream stalled for {self.timeout_s:g} s") from None
        except ProviderFailure:
            if self.choices.answered:
                raise StopAsyncIteration from None
            raise
        self.choices.add(chunk)
        return chunk

    async def aclose(self) -> None:
        await self.chunks.aclose()  # type: ignore[attr-defined]


def error_type(exc: BaseException) -> str:
    """`error.type` as the conventions want it, low in cardinality: `timeout`, the upstream's HTTP
    status, `connection`, or the exception's class for anything else (a cancelled call)."""
    if isinstance(exc, ProviderFailure):
        return "timeout" if exc.timeout else str(exc.status or "connection")
    if isinstance(exc, _DeadlinePassed):  # the request's deadline cut the call short
        return "timeout"
    return type(exc).__qualname__


def _end_failed(span: Span, exc: BaseException) -> None:
    set_attributes(span, error__type=error_type(exc))
    detail = loggable(exc)[0] if isinstance(exc, ProviderFailure) else str(exc)
    span.set_status(Status(StatusCode.ERROR, detail[:200] or type(exc).__name__))
    span.end()


def _log_retry(name: str, retry: int, wait_s: float, after: ProviderFailure) -> None:
    log.info("retrying deployment '%s' (retry %d) in %.3f s after: %s", name, retry, wait_s, after.reason,
             extra={"event": "upstream_retry", "deployment": name, "retry": retry, "wait_s": round(wait_s, 3),
                    "error_type": error_type(after)})
