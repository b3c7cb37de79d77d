"""Calls the gateway gave up on are still read, so an answer already on its way is billed.

A per-call timeout, the request's deadline or a cancelled hedge leg ends the gateway's wait for an
upstream answer. Closing the connection then races the upstream: an answer it sent just before
(already generated, and billed by the provider) would be thrown away unread and never reach the
ledger. The more loaded the gateway, the wider that race (its event loop reads late), which is
why it showed under a saturated soak. So the gateway stops *waiting* at its timeout (the request
moves on at once to a retry or fallback) but keeps *reading* in the background for up to
`DRAIN_S` more: an answer that arrives is billed as a `late` call to the request's tenant and
policy; an upstream that fails or closes the connection costs nothing. Only an answer later
than that is cut unread.

The bill goes to the sink the request set in `late_bills` (a context variable, so that every
call the request makes, however deep, finds it without passing it along).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from gateway.executor.result import CallRecord

T = TypeVar("T")
log = logging.getLogger("switchyard.upstream")

DRAIN_S = 30.0  # how long a call given up on is still read for an answer on its way
LATE = "late"   # the role of such a call in the ledger

LateBill = Callable[[CallRecord], Awaitable[None]]
late_bills: ContextVar[LateBill | None] = ContextVar("switchyard_late_bills", default=None)

_draining: set[asyncio.Task[Any]] = set()  # strong references: a task only weakly held may vanish


def draining() -> int:
    """How many given-up calls are still being read."""
    return len(_draining)


def drain(call: asyncio.Future[T], priced: Callable[[T], Awaitable[CallRecord | None]]) -> None:
    """Read `call` to its end in the background; if it answers, bill `priced(answer)` to the request."""
    bill = late_bills.get()
    task = asyncio.ensure_future(_settle(call, priced, bill))
    _draining.add(task)
    task.add_done_callback(_draining.discard)


async def _settle(call: asyncio.Future[T], priced: Callable[[T], Awaitable[CallRecord | None]],
                  bill: LateBill | None) -> None:
    try:
        async with asyncio.timeout(DRAIN_S):
            answer = await call
    except BaseException:  # it failed, or took too long: nothing was delivered, nothing to bill
        call.cancel()
        with contextlib.suppress(BaseException):
            await call
        return
    record = await priced(answer)
    if record is None:
        return
    log.info("deployment '%s' answered after the gateway gave up on it: billed $%.6f", record.deployment,
             record.cost_usd, extra={"event": "late_answer", "deployment": record.deployment})
    if bill is not None:
        await bill(CallRecord(record.deployment, record.usage, record.cost_usd, record.latency_s, LATE))
