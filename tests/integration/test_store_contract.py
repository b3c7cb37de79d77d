"""One contract, two stores: every case runs against MemoryStore and against RedisStore on a real Redis.

The memory store stands in for Redis in the embedded default and the unit tests, so whatever a
caller can observe through `Store` must be the same on both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from gateway.admission_store import Admission, BudgetHold, Settlement
from gateway.state import Budget, MemoryStore, Rate, RedisStore, Store, SumsOnce, record_digest
from tests.support.processes import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else RedisStore(redis_server.url, timeout_s=5)
    yield made
    await made.close()


@pytest.fixture
def key() -> Callable[[str], str]:
    """Fresh keys per test: the Redis server is shared by the whole session."""
    prefix = uuid.uuid4().hex[:10]
    return lambda name: f"sy:test:{{{prefix}}}:{name}"


async def test_values_round_trip_and_expire(store: Store, key: Callable[[str], str]) -> None:
    assert await store.get(key("absent")) is None
    await store.set(key("v"), b"one")
    await store.set(key("short"), b"two", ttl_s=0.05)
    assert (await store.get(key("v")), await store.get(key("short"))) == (b"one", b"two")
    await asyncio.sleep(0.15)
    assert (await store.get(key("v")), await store.get(key("short"))) == (b"one", None)


async def test_set_if_absent_keeps_the_first_value_for_good(store: Store, key: Callable[[str], str]) -> None:
    first = await asyncio.gather(*(store.set_if_absent(key("secret"), f"v{i}".encode()) for i in range(5)))
    assert len(set(first)) == 1 and first[0] in {f"v{i}".encode() for i in range(5)}  # racers read the winner
    assert await store.set_if_absent(key("secret"), b"later") == first[0] == await store.get(key("secret"))


async def test_replace_if_writes_only_over_the_value_read(store: Store, key: Callable[[str], str]) -> None:
    assert not await store.replace_if(key("absent"), b"x", b"y") and await store.get(key("absent")) is None
    await store.set(key("r"), b"read")
    assert await store.replace_if(key("r"), b"read", b"mine")
    assert not await store.replace_if(key("r"), b"read", b"stale")  # someone else's write came first
    assert await store.get(key("r")) == b"mine"


async def test_counters_count_from_one(store: Store, key: Callable[[str], str]) -> None:
    assert [await store.incr(key("n"), 60) for _ in range(3)] == [1, 2, 3]
    assert await store.get(key("n")) == b"3"


async def test_a_float_counter_reads_back_the_same_through_get_float_and_get(store: Store,
                                                                             key: Callable[[str], str]) -> None:
    assert await store.get_float(key("spend")) == 0.0
    assert await store.incr_float(key("spend"), 0.25) == 0.25
    assert await store.incr_float(key("spend"), 0.5) == 0.75
    assert await store.get_float(key("spend")) == 0.75
    raw = await store.get(key("spend"))
    assert raw is not None and float(raw) == 0.75


async def test_a_budget_holds_then_refuses_then_settles(store: Store, key: Callable[[str], str]) -> None:
    def budget(hold: str, amount: float) -> Budget:
        return Budget(key("spend"), key("holds"), hold, amount, limit=1.0, ttl_s=60)

    first = await store.reserve(budget("a", 0.6), None)
    refused = await store.reserve(budget("b", 0.6), None)
    assert (first.verdict, refused.verdict, refused.reserved) == ("ok", "budget", pytest.approx(0.6))
    await store.settle(key("spend"), key("holds"), "a", 0.5)
    assert await store.get_float(key("spend")) == pytest.approx(0.5)
    after = await store.reserve(budget("c", 0.4), None)
    assert (after.verdict, after.spent, after.reserved) == ("ok", pytest.approx(0.5), 0.0)
    raw = await store.get(key("spend"))
    assert raw is not None and float(raw) == pytest.approx(0.5)


async def test_an_expired_hold_is_released(store: Store, key: Callable[[str], str]) -> None:
    short = Budget(key("spend"), key("holds"), "a", 0.9, limit=1.0, ttl_s=0.05)
    assert (await store.reserve(short, None)).verdict == "ok"
    await asyncio.sleep(0.15)
    again = await store.reserve(Budget(key("spend"), key("holds"), "b", 0.9, limit=1.0, ttl_s=60), None)
    assert (again.verdict, again.reserved) == ("ok", 0.0)


async def test_a_rate_window_refuses_past_its_limit(store: Store, key: Callable[[str], str]) -> None:
    verdicts = [(await store.reserve(None, Rate(key("rate"), 2))) for _ in range(3)]
    assert [(v.verdict, v.requests) for v in verdicts] == [("ok", 1), ("ok", 2), ("rate", 3)]


async def test_lists_keep_their_order(store: Store, key: Callable[[str], str]) -> None:
    for item in (b"a", b"b", b"c"):
        await store.list_append(key("list"), item)
    assert await store.list_read(key("list")) == [b"a", b"b", b"c"]
    assert await store.list_read(key("none")) == []


async def test_a_version_is_logged_once_and_current_only_replaced_when_asked(store: Store,
                                                                            key: Callable[[str], str]) -> None:
    def entry(version: str) -> bytes:
        return orjson.dumps({"version": version})

    log, current = key("log"), key("current")
    assert await store.record_version(log, current, entry("v1"), "v1", replace_current=False)
    assert not await store.record_version(log, current, entry("v1"), "v1", replace_current=False)
    assert await store.record_version(log, current, entry("v2"), "v2", replace_current=False)
    assert await store.get(current) == entry("v1")
    # a change that moves the pointer is a change of its own, though the last entry (a start-up) has its version
    assert await store.record_version(log, current, entry("v2"), "v2", replace_current=True)
    assert await store.get(current) == entry("v2")
    assert not await store.record_version(log, current, entry("v2"), "v2", replace_current=True)
    assert await store.list_read(log) == [entry("v1"), entry("v2"), entry("v2")]


async def test_request_records_take_feedback_and_are_read_in_order(store: Store, key: Callable[[str], str]) -> None:
    stream = key("stream")
    await store.append_records(stream, [(key("r1"), b"one"), (key("r2"), b"two")], maxlen=100, ttl_s=60)
    assert await store.put_feedback(key("nobody"), "score", b"1") is None
    assert await store.put_feedback(key("r1"), "score", b"1") is False
    assert await store.put_feedback(key("r1"), "score", b"0") is True
    # a label about one record: not stored with another record under the key (a reused request id)
    assert await store.put_feedback(key("r2"), "shadow", b"1", about=record_digest(b"one")) is None
    assert await store.put_feedback(key("r2"), "shadow", b"1", about=record_digest(b"two")) is False
    first, second, missing = await store.request_entries([key("r1"), key("r2"), key("nobody")])
    assert first == {"record": b"one", "score": b"0"} and second == {"record": b"two", "shadow": b"1"}
    assert missing is None
    everything = await store.records_after(stream, "0-0", 10)
    assert [record for _, record in everything] == [b"one", b"two"]
    assert [record for _, record in await store.records_after(stream, everything[0][0], 10)] == [b"two"]


async def test_hash_sums_accumulate_and_index_their_members(store: Store, key: Callable[[str], str]) -> None:
    await store.add_to_hashes({key("h1"): {"cost": 0.25, "requests": 1}}, 60, (key("index"), ["b", "a"]))
    await store.add_to_hashes({key("h1"): {"cost": 0.5}, key("h2"): {"requests": 2}}, 60, (key("index"), ["c"]))
    assert await store.read_hashes([key("h1"), key("h2"), key("none")]) == [
        {"cost": 0.75, "requests": 1.0}, {"requests": 2.0}, {}]
    assert await store.set_members(key("index")) == ["a", "b", "c"]
    assert await store.ping()


async def test_sums_once_are_added_once_per_writer_and_write(store: Store, key: Callable[[str], str]) -> None:
    def once(writer: str, seq: int, cost: float) -> SumsOnce:
        return SumsOnce(key("writes"), writer, seq, {key("h"): {"cost": cost}})

    await store.add_to_hashes_once([once("a", 1, 0.25)], 60, 60, (key("index"), ["t"]))
    await store.add_to_hashes_once([once("a", 1, 0.25)], 60, 60)  # a retry of write 1: nothing added
    await store.add_to_hashes_once([once("b", 1, 0.5)], 60, 60)  # another writer's write 1
    await store.add_to_hashes_once([once("a", 2, 1.0)], 60, 60)
    await store.add_to_hashes_once([once("a", 1, 0.25)], 60, 60)  # a stale retry after a later write
    assert await store.read_hashes([key("h")]) == [{"cost": 1.75}]
    assert await store.set_members(key("index")) == ["t"]


async def test_a_renewed_hold_outlives_its_first_ttl_and_a_settled_one_is_not_brought_back(
        store: Store, key: Callable[[str], str]) -> None:
    def admission(hold: str, ttl_s: float) -> Admission:
        return Admission(hold, ttl_s, (BudgetHold(key("spend"), key("holds"), key("alerts"), 0.6, 1.0),))

    assert (await store.admit(admission("a", 0.3))).verdict == "ok"
    await asyncio.sleep(0.2)
    await store.renew_hold([key("holds")], "a", 0.3)
    await asyncio.sleep(0.2)  # past the first ttl, within the renewed one
    assert (await store.admit(admission("b", 60))).verdict == "budget"
    await store.settle_admission(Settlement("a", 0.1, ((key("spend"), key("holds"), 0),)))
    await store.renew_hold([key("holds")], "a", 60)
    assert (await store.admit(admission("c", 0.1))).verdict == "ok"
    await asyncio.sleep(0.2)  # "c" lapsed: renewing it does not bring it back
    await store.renew_hold([key("holds")], "c", 60)
    assert (await store.admit(admission("d", 60))).verdict == "ok"


async def test_get_many_reads_keys_of_any_slot_in_order(store: Store, key: Callable[[str], str]) -> None:
    spread = [f"sy:test:{{{uuid.uuid4().hex[:10]}}}:v" for _ in range(3)]  # three hash tags: three slots
    for i, k in enumerate(spread):
        await store.set(k, str(i).encode())
    assert await store.get_many([spread[2], key("absent"), spread[0], spread[1]]) == [b"2", None, b"0", b"1"]
    assert await store.get_many([]) == []


async def test_a_settlement_keeps_residual_holds_that_their_own_settlements_bill_and_drop(
        store: Store, key: Callable[[str], str]) -> None:
    # A request held 0.6 on the tenant's and its key's budgets; it settles at 0.2 while a call it gave
    # up on (worst case 0.3) is still read: that 0.3 stays held, in the same step, in both hashes.
    tenant, own = (key("spend"), key("holds"), 0), (key("key-spend"), key("key-holds"), 0)

    def admission(hold: str, amount: float) -> Admission:
        return Admission(hold, 60, (BudgetHold(key("spend"), key("holds"), key("alerts"), amount, 1.0),
                                    BudgetHold(key("key-spend"), key("key-holds"), key("key-alerts"), amount, 1.0)))

    assert (await store.admit(admission("a", 0.6))).verdict == "ok"
    await store.settle_admission(Settlement("a", 0.2, (tenant, own), residual=(("a:late:0", 0.3),),
                                            residual_ttl_s=60))
    for spend, holds, _ in (tenant, own):
        assert await store.budget_state(spend, holds) == (pytest.approx(0.2), pytest.approx(0.3))
    refused = await store.admit(admission("b", 0.6))  # 0.2 + 0.3 + 0.6 > 1: the late call's room is kept
    assert (refused.verdict, refused.reserved) == ("budget", pytest.approx(0.3))
    # the late call answers for 0.25: billed to both budgets, its hold dropped, in one step
    await store.settle_admission(Settlement("a:late:0", 0.25, (tenant, own)))
    for spend, holds, _ in (tenant, own):
        assert await store.budget_state(spend, holds) == (pytest.approx(0.45), 0.0)
    # a retry of that (its reply lost) finds its hold gone: nothing is added twice
    await store.settle_admission(Settlement("a:late:0", 0.25, (tenant, own), only_if_held=True))
    assert await store.budget_state(key("key-spend"), key("key-holds")) == (pytest.approx(0.45), 0.0)
    assert (await store.admit(admission("c", 0.55))).verdict == "ok"


async def test_a_residual_hold_lapses_on_its_own(store: Store, key: Callable[[str], str]) -> None:
    spends = ((key("spend"), key("holds"), 0),)
    budget = BudgetHold(key("spend"), key("holds"), key("alerts"), 0.5, 1.0)
    assert (await store.admit(Admission("a", 60, (budget,)))).verdict == "ok"
    await store.settle_admission(Settlement("a", 0.1, spends, residual=(("a:late:0", 0.4),), residual_ttl_s=0.1))
    assert await store.budget_state(key("spend"), key("holds")) == (pytest.approx(0.1), pytest.approx(0.4))
    await asyncio.sleep(0.25)  # its call was never heard of again: the room comes back
    assert await store.budget_state(key("spend"), key("holds")) == (pytest.approx(0.1), 0.0)


async def test_a_retried_settlement_finds_a_hold_held_by_the_key_alone(store: Store, key: Callable[[str], str]) -> None:
    # The tenant has no budget of its own (its holds hash never had the hold), its key has: a retried
    # settlement must still find the hold, and bill both spend keys once. Before, it looked in the
    # tenant's hash first, found nothing, and dropped the settlement.
    tenant, own = (key("spend"), key("holds"), 0), (key("key-spend"), key("key-holds"), 0)
    admission = Admission("a", 60, (BudgetHold(key("key-spend"), key("key-holds"), key("key-alerts"), 0.5, 1.0),))
    assert (await store.admit(admission)).verdict == "ok"
    await store.settle_admission(Settlement("a", 0.2, (tenant, own), only_if_held=True))
    await store.settle_admission(Settlement("a", 0.2, (tenant, own), only_if_held=True))  # its reply was lost
    assert await store.get_float(key("spend")) == pytest.approx(0.2)
    assert await store.budget_state(key("key-spend"), key("key-holds")) == (pytest.approx(0.2), 0.0)


async def test_many_hashes_of_several_slots_are_read_in_order_absent_ones_empty(store: Store,
                                                                                key: Callable[[str], str]) -> None:
    """More than one page (`READ_HASHES_PAGE`) of a slot, keys of two slots interleaved, most absent."""
    from gateway.state import READ_HASHES_PAGE

    other = f"sy:test:{{{uuid.uuid4().hex[:10]}}}:h"
    keys = [key(f"h{i}") if i % 2 else f"{other}{i}" for i in range(2 * READ_HASHES_PAGE + 7)]
    present = {3: {"a": 1.5}, 4: {"b": 2.0, "c": -0.25}, len(keys) - 1: {"z": 7.0}}
    await store.add_to_hashes({keys[i]: row for i, row in present.items()}, ttl_s=60)
    rows = await store.read_hashes(keys)
    assert rows == [present.get(i, {}) for i in range(len(keys))]
    assert await store.read_hashes([]) == []
