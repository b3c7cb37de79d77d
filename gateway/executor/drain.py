"""Calls the gateway gave up on are still read, so an answer already on its way is billed.

A per-call timeout, the request's deadline or a cancelled hedge leg ends the gateway's wait for an
upstream answer. Closing the connection then races the upstream: an answer it sent just before
(already generated, and billed by the provider) would be thrown away unread and never reach the
ledger. The more loaded the gateway, the wider that race (its event loop reads late), which is
why it showed under a saturated soak. So the gateway stops *waiting* at its timeout (the request
moves on at once to a retry or fallback) but keeps *reading* in the background for up to
`DRAIN_S` more: an answer that arrives is billed as a `late` call of the request (in the ledger
under its policy, and to every budget it was admitted against); an upstream that fails or closes
the connection costs nothing. Only an answer later than that is cut: unread, or, a whole answer
read from a stream whose first chunks came, billed for what came as a `cut` call (`bill_cut`).

The bill goes to the sink the request set in `late_bills` (a context variable, so that every
call the request makes, however deep, finds it without passing it along). The sink hears of each
such call twice: when the gateway gives up on it (`LateSink.open`, at once, with the most it may
cost: the request may answer and settle its budget before the call ends, and must keep that much
held), and once when it ends (the returned `LateBill`: its record if it answered, else None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from gateway.executor.result import CallRecord

T = TypeVar("T")
log = logging.getLogger("switchyard.upstream")

DRAIN_S = 30.0  # how long a call given up on is still read for an answer on its way
LATE = "late"   # the role of such a call in the ledger
CUT = "cut"     # the role of a call that broke off part-way through its answer
# The role of a relayed stream's call read on after its client left (`Upstreams.read_on`), however it
# ends: billed beside the answer as a late call is, but counted with its request in the metrics.
READ_ON = "read_on"

LateBill = Callable[[CallRecord | None], Awaitable[None]]


class LateSink(Protocol):
    tenant: str  # whose request the call was, for its log line

    def open(self, worst_usd: float) -> LateBill:
        """A call given up on is read on; it may cost up to `worst_usd`. The result is awaited once,
        when the call ends."""
        ...


late_bills: ContextVar[LateSink | None] = ContextVar("switchyard_late_bills", default=None)

class Draining:
    """The calls one gateway gave up on and still reads, each with the most it may cost (strong
    references: a task only weakly held may vanish). One per `Upstreams`: a gateway that stops waits
    for its own calls, not another's in the same process."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], float] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: asyncio.Task[Any], worst_usd: float) -> None:
        self._tasks[task] = worst_usd
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    async def finish(self, timeout_s: float) -> tuple[int, float]:
        """At shutdown, before the ledger and the connections close: wait up to `timeout_s` for the calls
        still read to end (each is billed as it ends, as while serving), then cut the rest. A cut call is
        billed for what had come of it where that is known (a stream read on), else nothing: returns how
        many were cut and the most they might have cost, for the caller's log. Stopping at once threw
        every such call away unbilled, without a word, though the upstream had served it."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
        left = list(self._tasks.items())
        for task, _ in left:
            task.cancel()
        if left:  # a cut call bills what came of it: a moment, not a second wait
            await asyncio.wait([task for task, _ in left], timeout=2.0)
        return len(left), sum(worst for _, worst in left)


def drain(call: asyncio.Future[T], priced: Callable[[T], Awaitable[CallRecord | None]],
          worst_usd: Callable[[], float], role: str = LATE, into: Draining | None = None) -> None:
    """Read `call` to its end in the background; if it answers, bill `priced(answer)` to the request
    as a call of `role`. `worst_usd()`: the most the call may be billed. `into`: the gateway's calls
    still read (`Upstreams.draining`), which its shutdown waits for."""
    sink = late_bills.get()
    worst = worst_usd()
    ended = sink.open(worst) if sink is not None else None
    task = asyncio.ensure_future(_settle(call, priced, ended, role, None if sink is None else sink.tenant))
    (into if into is not None else _UNOWNED).add(task, worst)


_UNOWNED = Draining()  # calls drained outside any gateway (unit tests of a single seam)


async def _settle(call: asyncio.Future[T], priced: Callable[[T], Awaitable[CallRecord | None]],
                  ended: LateBill | None, role: str, tenant: str | None) -> None:
    record: CallRecord | None = None
    try:
        try:
            async with asyncio.timeout(DRAIN_S):
                answer = await call
        except BaseException:  # it failed, or took too long: nothing was delivered, nothing to bill
            call.cancel()
            with contextlib.suppress(BaseException):
                await call
            return
        try:
            record = await priced(answer)
        except Exception:  # the answer could not be priced: its hold is still dropped below
            log.exception("a late answer could not be priced")
            return
        if record is None:
            return
        if role != READ_ON:  # a stream read on has its own line (`stream_read_on`): its client left, not the gateway
            log.info("deployment '%s' answered after the gateway gave up on it: billed $%.6f", record.deployment,
                     record.cost_usd, extra={"event": "late_answer", "deployment": record.deployment,
                                             "tenant": tenant, "cost_usd": record.cost_usd})
        record = CallRecord(record.deployment, record.usage, record.cost_usd, record.latency_s, role)
    finally:
        if ended is not None:  # once, however it ended: billed, or its hold given back
            await ended(record)


async def bill_cut(record: CallRecord, role: str = CUT) -> None:
    """Bill the request for a call that broke off part-way through its answer (a whole answer read
    from a stream that failed after its first chunk, or was cut at `DRAIN_S` while it still came): the
    provider bills what it generated, and the request goes on (to a retry or fallback) or has already
    answered, so the call is billed beside the answer, as a late one is."""
    sink = late_bills.get()
    if sink is None:
        return
    ended = sink.open(record.cost_usd)
    await ended(CallRecord(record.deployment, record.usage, record.cost_usd, record.latency_s, role))
