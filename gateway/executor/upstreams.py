"""Calls to deployments that survive faults: bounded retries (tenacity), fallbacks, circuit breaking.

The first attempt runs without any retry machinery (the common case costs nothing extra); only a
retryable failure (timeout, connection error, 429, 5xx) enters tenacity's bounded, jittered
back-off. When a deployment is exhausted or its circuit is open, the next fallback is tried.
Every attempt is a `switchyard.upstream` span with gen_ai.* attributes and its cost.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry.trace import Span, Status, StatusCode
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from gateway import tokens
from gateway.config import DeploymentConfig
from gateway.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout
from gateway.providers.base import Backend, Completion, ProviderFailure, StreamStats, Usage
from gateway.providers.health import HealthBoard
from gateway.providers.pricing import DeploymentPrice
from gateway.telemetry import Telemetry, set_attributes

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallRecord:
    deployment: str
    usage: Usage
    cost_usd: float
    latency_s: float
    role: str = "answer"  # answer | sample | judge | escalation


@dataclass(slots=True)
class OpenStream:
    deployment: str
    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]
    stats: StreamStats
    span: Span
    started: float = field(default_factory=time.perf_counter)


def counted(done: Completion, body: dict[str, Any]) -> Completion:
    """An answer without `usage` is billed on counted tokens (prompt and completion), never as free."""
    if done.usage.total_tokens:
        return done
    usage = Usage(tokens.count_messages(body.get("messages") or ()), tokens.count_completion(done.body))
    return Completion(done.body, usage, done.latency_s)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderFailure) and exc.retryable


def _final_error(failures: list[ProviderFailure], names: Sequence[str]) -> GatewayError:
    last = failures[-1] if failures else None
    detail = "; ".join(str(f) for f in failures[-3:]) or "all circuits open"
    if last is not None and last.status in (400, 422):
        return InvalidRequest(f"upstream rejected the request: {last}", code="upstream_rejected")
    if last is not None and last.timeout:
        return UpstreamTimeout(f"no deployment answered in time ({', '.join(names)}): {detail}")
    return UpstreamError(f"every deployment failed ({', '.join(names)}): {detail}")


class Upstreams:
    def __init__(self, deployments: Mapping[str, DeploymentConfig], backends: Mapping[str, Backend],
                 prices: Mapping[str, DeploymentPrice], health: HealthBoard, telemetry: Telemetry) -> None:
        self.deployments = deployments
        self.backends = backends
        self.prices = prices
        self.health = health
        self.telemetry = telemetry

    def _span(self, name: str, parent: Span | None, body: dict[str, Any]) -> Span:
        d = self.deployments[name]
        return self.telemetry.start("switchyard.upstream", parent, gen_ai__system=self.backends[name].name,
                                    gen_ai__operation__name="chat", gen_ai__request__model=d.model,
                                    switchyard__deployment=name,
                                    gen_ai__request__temperature=body.get("temperature"))

    async def _attempt(self, name: str, body: dict[str, Any], parent: Span | None) -> Completion:
        span = self._span(name, parent, body)
        try:
            done = counted(await self.backends[name].complete(self.deployments[name], body), body)
        except ProviderFailure as exc:
            self.health[name].record_failure(time.monotonic())
            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            set_attributes(span, error__type="timeout" if exc.timeout else str(exc.status or "connection"))
            span.end()
            raise
        self.health[name].record_success(done.latency_s)
        set_attributes(span, gen_ai__response__model=done.body.get("model"),
                       gen_ai__usage__input_tokens=done.usage.prompt_tokens,
                       gen_ai__usage__output_tokens=done.usage.completion_tokens,
                       switchyard__cost_usd=self.prices[name].cost(done.usage))
        span.end()
        return done

    async def _with_retries(self, name: str, once: Callable[[], Awaitable[T]]) -> T:
        try:
            return await once()
        except ProviderFailure as exc:
            if not exc.retryable or self.deployments[name].max_retries == 0:
                raise
        retrying = AsyncRetrying(stop=stop_after_attempt(self.deployments[name].max_retries),
                                 wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0, 0.05),
                                 retry=retry_if_exception(_retryable), reraise=True)
        async for attempt in retrying:
            with attempt:
                return await once()
        raise AssertionError("tenacity ended without a result")  # unreachable: reraise=True

    def order(self, names: Sequence[str]) -> list[str]:
        """Deployments to try, in order, skipping open circuits (unless every one is open)."""
        now = time.monotonic()
        closed = [n for n in names if not self.health[n].is_open(now)]
        return closed or list(names[:1])

    async def call(self, names: Sequence[str], body: dict[str, Any], parent: Span | None,
                   role: str = "answer") -> tuple[Completion, CallRecord]:
        failures: list[ProviderFailure] = []
        for name in self.order(names):
            try:
                done = await self._with_retries(name, functools.partial(self._attempt, name, body, parent))
            except ProviderFailure as exc:
                failures.append(exc)
                if exc.status in (400, 422):
                    break  # the request itself is bad: another deployment will say the same
                continue
            return done, CallRecord(name, done.usage, self.prices[name].cost(done.usage), done.latency_s, role)
        raise _final_error(failures, names)

    async def _open_one(self, name: str, body: dict[str, Any], parent: Span | None) -> OpenStream:
        span = self._span(name, parent, body)
        stats = StreamStats()
        chunks = self.backends[name].stream(self.deployments[name], body, stats)
        try:
            first = await anext(chunks)
        except (ProviderFailure, StopAsyncIteration) as exc:
            self.health[name].record_failure(time.monotonic())
            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            span.end()
            if isinstance(exc, StopAsyncIteration):
                raise ProviderFailure(f"{name}: stream ended before any chunk") from None
            raise
        return OpenStream(name, first, chunks, stats, span)

    async def open_stream(self, names: Sequence[str], body: dict[str, Any], parent: Span | None) -> OpenStream:
        """Retries and fallbacks apply until the first chunk; after that the stream is committed."""
        failures: list[ProviderFailure] = []
        for name in self.order(names):
            try:
                return await self._with_retries(name, functools.partial(self._open_one, name, body, parent))
            except ProviderFailure as exc:
                failures.append(exc)
                if exc.status in (400, 422):
                    break
        raise _final_error(failures, names)

    def close_stream(self, s: OpenStream, error: str | None = None) -> CallRecord:
        latency = time.perf_counter() - s.started
        cost = self.prices[s.deployment].cost(s.stats.usage)
        if error:
            self.health[s.deployment].record_failure(time.monotonic())
            s.span.set_status(Status(StatusCode.ERROR, error[:200]))
        else:
            self.health[s.deployment].record_success(latency, s.stats.ttft_s)
        set_attributes(s.span, gen_ai__usage__input_tokens=s.stats.usage.prompt_tokens,
                       gen_ai__usage__output_tokens=s.stats.usage.completion_tokens,
                       switchyard__cost_usd=cost, switchyard__ttft_s=s.stats.ttft_s)
        s.span.end()
        return CallRecord(s.deployment, s.stats.usage, cost, latency)

