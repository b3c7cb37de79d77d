"""Hedged requests for latency SLAs: a second try at the next deployment when the first is slow.

A policy's `hedge_after_ms` applies to single-deployment plans that have a fallback: the call
goes to the deployment; if it has produced no first token after `hedge_after_ms` (or has already
failed), the same request goes to the fallbacks too. The first leg to produce a token wins and
is relayed; the other is cancelled. Legs run as upstream streams even for a whole answer, so a
leg cut short is billed for exactly what it produced: its prompt and the tokens it sent before
it was cancelled (a leg cancelled before its first chunk produced nothing and is not billed).

Why the first token: that is what an SLA on time-to-first-token needs, and it is the earliest
point at which a leg is known to be answering rather than queued, hung or failing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from opentelemetry.trace import Span

from gateway import tokens
from gateway.errors import GatewayError, UpstreamError
from gateway.executor.deadline import Deadline
from gateway.executor.result import Result, with_usage
from gateway.executor.upstreams import CallRecord, OpenStream, Upstreams
from gateway.plans import Plan, Single
from gateway.providers.base import ProviderFailure, Usage
from gateway.streaming import Accumulator

HEDGE = "hedge"  # the role of a cancelled leg's call in the ledger


def hedge_after_s(hedge_after_ms: float | None, plan: Plan) -> float | None:
    """The hedge delay for `plan`, or None when it does not hedge (no setting, not single, no fallback)."""
    if hedge_after_ms is None or not isinstance(plan, Single) or not plan.fallbacks:
        return None
    return hedge_after_ms / 1000.0


async def open_stream(up: Upstreams, names: tuple[str, ...], body: dict[str, Any], span: Span | None,
                      deadline: Deadline, after_s: float | None) -> tuple[OpenStream, tuple[CallRecord, ...]]:
    """`Upstreams.open_stream`, hedged when `after_s` is set: the stream, and the billed cancelled legs."""
    if after_s is None:
        return await up.open_stream(names, body, span, deadline=deadline), ()
    return await open_hedged(up, names, body, span, deadline, after_s)


async def open_hedged(up: Upstreams, names: tuple[str, ...], body: dict[str, Any], span: Span | None,
                      deadline: Deadline, after_s: float) -> tuple[OpenStream, tuple[CallRecord, ...]]:
    """The first leg of `names[0]` / `names[1:]` to produce a chunk, and the billed calls of the other."""
    first = asyncio.create_task(up.open_stream(names[:1], body, span, deadline=deadline))
    done, _ = await asyncio.wait({first}, timeout=after_s)
    if done and first.exception() is None:
        return first.result(), ()
    second = asyncio.create_task(up.open_stream(names[1:], body, span, deadline=deadline))
    legs = {second} if done else {first, second}
    error: BaseException | None = first.exception() if done else None
    try:
        while legs:
            finished, legs = await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
            opened = [t.result() for t in finished if t.exception() is None]
            error = next((t.exception() for t in finished if t.exception() is not None), error)
            if opened:
                losers = [*opened[1:], *await _cancel(legs)]
                legs = set()
                return opened[0], tuple(await asyncio.gather(*(_bill_cut(up, s, body) for s in losers)))
    finally:
        for leg in legs:  # this task was itself cancelled: leave no leg running
            leg.cancel()
    assert error is not None  # every leg finished and none opened
    raise error


async def _cancel(legs: set[asyncio.Task[OpenStream]]) -> list[OpenStream]:
    """Cancel the slower legs; one that opened in the meantime is returned, to be billed."""
    for leg in legs:
        leg.cancel()
    opened = []
    for leg in legs:
        with contextlib.suppress(BaseException):
            opened.append(await leg)
    return opened


async def _bill_cut(up: Upstreams, live: OpenStream, body: dict[str, Any]) -> CallRecord:
    """Close a leg that lost the race; it is billed for its prompt and what it had produced."""
    acc = Accumulator()
    acc.add(live.first)
    await live.rest.aclose()  # type: ignore[attr-defined]  # releases the upstream connection
    if not live.stats.usage.total_tokens:
        live.stats.usage = Usage(tokens.count_messages(body.get("messages") or ()), acc.completion_tokens_estimate())
    record = up.close_stream(live)
    return CallRecord(record.deployment, record.usage, record.cost_usd, record.latency_s, HEDGE)


def stream_body(body: dict[str, Any]) -> dict[str, Any]:
    """Legs stream and ask for usage, whatever the client asked: a cut leg must be priceable."""
    return {**body, "stream": True, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}


async def run_hedged(up: Upstreams, plan: Plan, body: dict[str, Any], span: Span | None,
                     deadline: Deadline, after_s: float) -> Result:
    """A whole answer from a hedged single plan: the winning leg read to its end."""
    assert isinstance(plan, Single)  # `hedge_after_s` is None for every other kind
    legs = stream_body(body)
    live, losers = await open_hedged(up, plan.deployments + plan.fallbacks, legs, span, deadline, after_s)
    acc = Accumulator()
    error: ProviderFailure | None = None
    try:
        acc.add(live.first)
        async for chunk in live.rest:
            acc.add(chunk)
    except ProviderFailure as exc:
        error = exc
    if not live.stats.usage.total_tokens:  # cut short, or no usage sent: bill what was counted
        live.stats.usage = Usage(tokens.count_messages(body.get("messages") or ()), acc.completion_tokens_estimate())
    record = up.close_stream(live, error)
    calls = (record, *losers)
    if error is not None:
        failed: GatewayError = UpstreamError(f"deployment '{live.deployment}' failed mid-answer: {error.reason}")
        failed.billed = calls
        raise failed
    label = plan.label if live.deployment == plan.deployment else f"{plan.label}>hedge:{live.deployment}"
    answer = acc.body(record.usage)
    answer.pop("usage", None)
    usage = sum((c.usage for c in calls), Usage())
    return Result(with_usage(answer, usage), live.deployment, label, calls,
                  {"hedged": [c.deployment for c in losers]} if losers else {})
