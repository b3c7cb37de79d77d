"""The queue shadow jobs wait in: tenants served in turn, a full queue pushing out the fullest tenant's newest
job, and a bound on one tenant's jobs running at once."""

from __future__ import annotations

import asyncio

from gateway.fair_queue import FairQueue


def test_tenants_are_served_in_turn_whatever_their_volume() -> None:
    async def scenario() -> list[str]:
        q: FairQueue[str] = FairQueue(size=10, running=10)
        for i in range(5):
            q.put("flood", f"flood{i}")
        q.put("quiet", "quiet0")
        order = []
        for _ in range(6):
            _, item = await q.get()
            order.append(item)
        return order

    assert asyncio.run(scenario()) == ["flood0", "quiet0", "flood1", "flood2", "flood3", "flood4"]


def test_a_full_queue_drops_the_newest_job_of_the_tenant_holding_the_most() -> None:
    q: FairQueue[str] = FairQueue(size=3, running=1)
    assert [q.put("flood", f"f{i}") for i in range(3)] == [None, None, None]
    assert q.put("flood", "f3") == "f3"  # alone, a tenant may fill the queue, no further
    assert q.put("quiet", "q0") == "f2"  # another tenant pushes out the flooder's newest
    assert q.put("quiet", "q1") == "f1"
    assert q.put("quiet", "q2") == "q2"  # now even: the newcomer is the one dropped
    assert len(q) == 3


def test_one_tenant_runs_at_most_its_bound_while_another_waits() -> None:
    async def scenario() -> None:
        q: FairQueue[str] = FairQueue(size=10, running=1)
        q.put("flood", "f0")
        q.put("flood", "f1")
        assert await q.get() == ("flood", "f0")
        waiting = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        assert not waiting.done()  # f1 waits: its tenant is at its bound
        q.put("quiet", "q0")
        assert await asyncio.wait_for(waiting, 1) == ("quiet", "q0")
        q.done("flood")
        assert await asyncio.wait_for(q.get(), 1) == ("flood", "f1")

    asyncio.run(scenario())
