"""Hedged requests for latency SLAs: a second try at the next deployment when the first is slow.

A policy's `hedge_after_ms` applies to single-deployment plans that have a fallback: the call
goes to the deployment; if it has produced no first token after `hedge_after_ms` (or has already
failed), the same request goes to the fallbacks too. The first leg to produce a token wins and
is relayed; the other is cancelled. Legs run as upstream streams even for a whole answer, so a
leg cut short is billed for exactly what it produced: its prompt and the tokens it sent before
it was cancelled. A leg cancelled before its first chunk is still read until that chunk comes
(`executor.drain`): if it comes, the upstream served it, and it is billed then, as a late call.
A whole answer's winning leg that fails part-way has relayed nothing: the plan's other deployments
answer it, as they would have unhedged.

Why the first token: that is what an SLA on time-to-first-token needs, and it is the earliest
point at which a leg is known to be answering rather than queued, hung or failing. So a whole answer
that is asked for whole (`Upstreams.asks_whole`: from a deployment that cannot stream, or with audio
output, which streams only as pcm16) is not hedged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.executor.deadline import Deadline
from gateway.executor.result import CallRecord, Result, with_usage
from gateway.executor.runners import run
from gateway.executor.sampling import result
from gateway.executor.upstreams import OpenStream, Upstreams, require_finished
from gateway.media_tokens import messages_audio_tokens
from gateway.messages import prompt_tokens
from gateway.plans import Plan, Single
from gateway.providers.base import ProviderFailure, Usage
from gateway.streaming import Accumulator, stream_body

HEDGE = "hedge"  # the role of a cancelled leg's call in the ledger
# A losing leg may be producing its first token as the winner's arrives: it is given this long to show
# it (then it is billed for it) before it is cancelled, off the answer's path.
LOSER_GRACE_S = 0.25


@dataclass(frozen=True, slots=True)
class Losers:
    """The legs that lost the race, settling in the background: `records()` are their billed calls."""

    task: asyncio.Task[tuple[CallRecord, ...]] | None = None

    async def records(self) -> tuple[CallRecord, ...]:
        return await self.task if self.task is not None else ()


NO_LOSERS = Losers()


def hedge_after_s(hedge_after_ms: float | None, plan: Plan) -> float | None:
    """The hedge delay for `plan`, or None when it does not hedge (no setting, not single, no fallback)."""
    if hedge_after_ms is None or not isinstance(plan, Single) or not plan.fallbacks:
        return None
    return hedge_after_ms / 1000.0


async def open_stream(up: Upstreams, names: tuple[str, ...], body: dict[str, Any], span: Span | None,
                      deadline: Deadline, after_s: float | None) -> tuple[OpenStream, Losers]:
    """`Upstreams.open_stream`, hedged when `after_s` is set: the stream, and the legs that lost."""
    if after_s is None:
        return await up.open_stream(names, body, span, deadline=deadline), NO_LOSERS
    return await open_hedged(up, names, body, span, deadline, after_s)


async def open_hedged(up: Upstreams, names: tuple[str, ...], body: dict[str, Any], span: Span | None,
                      deadline: Deadline, after_s: float, whole: bool = False) -> tuple[OpenStream, Losers]:
    """The first leg of `names[0]` / `names[1:]` to produce a chunk, and the other leg. `whole`: the legs
    are read for a whole answer (`Upstreams.open_stream`)."""
    first = asyncio.create_task(up.open_stream(names[:1], body, span, deadline=deadline, whole=whole))
    done, _ = await asyncio.wait({first}, timeout=after_s)
    if done and first.exception() is None:
        return first.result(), NO_LOSERS
    second = asyncio.create_task(up.open_stream(names[1:], body, span, deadline=deadline, whole=whole))
    legs = {second} if done else {first, second}
    error: BaseException | None = first.exception() if done else None
    try:
        while legs:
            finished, legs = await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
            opened = [t.result() for t in finished if t.exception() is None]
            error = next((t.exception() for t in finished if t.exception() is not None), error)
            if opened:
                losers = Losers(asyncio.create_task(_settle_losers(up, opened[1:], legs, body)))
                legs = set()
                return opened[0], losers
    finally:
        for leg in legs:  # this task was itself cancelled: leave no leg running
            leg.cancel()
    assert error is not None  # every leg finished and none opened
    raise error


async def _settle_losers(up: Upstreams, opened: list[OpenStream], legs: set[asyncio.Task[OpenStream]],
                         body: dict[str, Any]) -> tuple[CallRecord, ...]:
    """Give the slower legs `LOSER_GRACE_S` to open, cancel the rest, bill every leg that opened."""
    if legs:
        done, pending = await asyncio.wait(legs, timeout=LOSER_GRACE_S)
        for leg in pending:
            leg.cancel()
        for leg in pending:
            with contextlib.suppress(BaseException):
                await leg
        opened = [*opened, *(t.result() for t in done if t.exception() is None)]
    return tuple(await asyncio.gather(*(_bill_cut(up, s, body) for s in opened)))


async def _bill_cut(up: Upstreams, live: OpenStream, body: dict[str, Any]) -> CallRecord:
    """Close a leg that lost the race; it is billed for its prompt and what it had produced."""
    acc = Accumulator()
    acc.add(live.first)
    await live.rest.aclose()  # type: ignore[attr-defined]  # releases the upstream connection
    if not live.stats.usage.total_tokens:
        live.stats.usage = _counted(body, acc.completion_tokens_estimate())
    record = up.close_stream(live)
    return CallRecord(record.deployment, record.usage, record.cost_usd, record.latency_s, HEDGE)


def _counted(body: dict[str, Any], completion_tokens: int) -> Usage:
    """A leg's usage as counted, its audio prompt tokens included (billed at the audio rate)."""
    messages = body.get("messages") or ()
    return Usage(prompt_tokens(body), completion_tokens, prompt_audio_tokens=messages_audio_tokens(messages))


async def run_hedged(up: Upstreams, plan: Plan, body: dict[str, Any], span: Span | None,
                     deadline: Deadline, after_s: float,
                     keep: Callable[[], Awaitable[None]] | None = None) -> Result:
    """A whole answer from a hedged single plan: the winning leg read to its end. A leg whose stream
    fails, or ends before every choice finished, is a failure billed for what it generated, as any whole
    answer read from a stream (`upstreams.require_finished`). `keep`: called as each chunk comes (the
    request's budget hold is renewed: a stream may outlast its time to live).

    The legs are streams only because racing needs a first token: with a deployment that is asked for
    whole answers whole (configured `never`, or found to refuse streams, here too), or an answer that
    cannot be streamed as asked (audio output), the answer is asked for whole, unhedged, as the client
    asked for it (`runners.run`)."""
    assert isinstance(plan, Single)  # `hedge_after_s` is None for every other kind
    names = plan.deployments + plan.fallbacks
    if any(up.asks_whole(name, body) for name in names):
        return await run(up, plan, body, span, deadline)
    try:
        live, losers = await open_hedged(up, names, stream_body(body), span, deadline, after_s, whole=True)
    except GatewayError:
        if any(up.asks_whole(name, body) for name in names):  # a leg's stream was refused for streaming
            return await run(up, plan, body, span, deadline)
        raise
    acc = Accumulator()
    error: ProviderFailure | None = None
    out_of_time = False
    try:
        acc.add(live.first)
        # Nothing reaches the client before the answer's end: the request's deadline bounds it all, as it
        # bounds an unhedged whole answer. Each next chunk alone was bounded, by the deployment's timeout_s,
        # and a leg that stalled after its first token held the request that long past its deadline.
        async with asyncio.timeout(max(deadline.remaining(), 0.0)):
            async for chunk in live.rest:
                acc.add(chunk)
                if keep is not None:
                    await keep()
        require_finished(live.deployment, acc)  # judged as every whole answer read from a stream
    except ProviderFailure as exc:
        error = exc
    except TimeoutError:
        out_of_time = True
        await live.rest.aclose()  # type: ignore[attr-defined]  # releases the upstream connection
        # The request's deadline, not the deployment's failing: not counted toward its circuit.
        error = ProviderFailure(f"{live.deployment}: cut at the request's deadline mid-answer", retryable=False,
                                reason="cut at the request's deadline")
    if not live.stats.usage.total_tokens:  # cut short, or no usage sent: bill what was counted
        live.stats.usage = _counted(body, acc.completion_tokens_estimate())
    record = up.close_stream(live, error)
    calls = (record, *await losers.records())
    if out_of_time:
        late = UpstreamTimeout(f"no answer within the request's deadline of {deadline.budget_s:g} s")
        late.billed = calls
        raise late
    if error is not None:
        failed = UpstreamError(f"deployment '{live.deployment}' failed mid-answer: {error.reason}")
        return await _answer_elsewhere(up, plan, body, span, deadline, calls, failed)
    label = plan.label if live.deployment == plan.deployment else f"{plan.label}>hedge:{live.deployment}"
    answer = acc.body(record.usage)
    answer.pop("usage", None)
    usage = sum((c.usage for c in calls), Usage())
    return Result(with_usage(answer, usage), live.deployment, label, calls,
                  {"hedged": [c.deployment for c in calls[1:]]} if calls[1:] else {})


async def _answer_elsewhere(up: Upstreams, plan: Single, body: dict[str, Any], span: Span | None,
                            deadline: Deadline, calls: tuple[CallRecord, ...], failed: GatewayError) -> Result:
    """The whole answer, after the leg that won the race failed part-way (`calls[0]`; the others are the
    legs that lost): nothing of it reached the client, who gets a whole answer once it is read whole, so
    the plan's other deployments answer it, with their retries, as they would have unhedged. It was a
    502 at once, though a fallback was there to answer. Every call is billed, with the answer or with
    the error (`failed`, when no other deployment is left, or the error of the last that failed)."""
    rest = tuple(name for name in plan.reachable if name != calls[0].deployment)
    try:
        if not rest:
            raise failed
        done, record = await up.call(rest, body, span, deadline=deadline)
    except GatewayError as exc:
        exc.billed = (*calls, *exc.billed)
        raise
    label = plan.label if record.deployment == plan.deployment else f"{plan.label}>fallback:{record.deployment}"
    return result(done.body, record.deployment, label, [*calls, record])
