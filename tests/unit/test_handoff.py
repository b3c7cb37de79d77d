"""The request path's hand-off to a background writer: bounded, in order, drained on demand."""

from __future__ import annotations

import asyncio

from gateway.handoff import Handoff


async def test_items_wait_in_order_up_to_the_limit_and_the_writer_takes_them_at_once() -> None:
    handoff: Handoff[int] = Handoff(limit=3)
    assert not await handoff.wait(timeout_s=0.01)  # nothing waits
    assert [handoff.put(i) for i in range(4)] == [True, True, True, False]  # the fourth is refused
    assert await handoff.wait(timeout_s=0.01)
    assert handoff.take(2) == [0, 1] and len(handoff) == 1
    assert handoff.take(10) == [2] and len(handoff) == 0
    assert not await handoff.wait(timeout_s=0.01)


async def test_a_waiting_writer_wakes_on_the_first_item() -> None:
    handoff: Handoff[str] = Handoff(limit=10)
    woken = asyncio.create_task(handoff.wait())
    await asyncio.sleep(0)
    assert not woken.done()
    handoff.put("bill")
    assert await asyncio.wait_for(woken, 1.0)


async def test_drained_waits_until_what_was_put_is_done() -> None:
    handoff: Handoff[int] = Handoff(limit=10)
    await handoff.drained(timeout_s=0.01)  # nothing put: at once
    handoff.put(1)
    drained = asyncio.create_task(handoff.drained(timeout_s=5.0))
    await asyncio.sleep(0.01)
    handoff.take(10)
    await asyncio.sleep(0.01)
    assert not drained.done()  # taken, not yet written
    handoff.done()
    await asyncio.wait_for(drained, 1.0)
