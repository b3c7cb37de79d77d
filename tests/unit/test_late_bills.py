"""Calls a request gave up on but still reads (`executor.drain`) are billed through its reservation:
to every spend key and token window it charges (the tenant's and its key's), and while one is still
read when the request settles, its worst case stays held until it ends. Once each, even when the
store loses a reply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.admission import Limits
from gateway.admission_store import Settlement
from gateway.auth import Authenticator, Need, Reservation, Tenant
from gateway.executor.result import CallRecord
from gateway.ledger import LateBills, Ledger, Spent
from gateway.metrics import Metrics
from gateway.providers.base import Usage
from gateway.state import MemoryStore, StoreUnavailable, period_spend_key, scoped_holds_key, window_key

# A tenant without a budget of its own, calling with a key that has one (and a tokens-per-minute window).
CALLER = Tenant("team", key_id="k1", key_limits=Limits(1.0, "total", None, 10_000))
ANSWER = CallRecord("b", Usage(10, 20), 0.2, 0.1)


def _late(cost: float) -> CallRecord:
    return CallRecord("a", Usage(10, 40), cost, 0.5, "late")


async def _admitted(store: MemoryStore, usd: float = 0.6, tokens: int = 100) -> tuple[Reservation, LateBills, Ledger]:
    held = await Authenticator([], store).admit(CALLER, need=Need(usd, tokens, 60))
    ledger = Ledger(store)
    return held, LateBills(ledger, held, "team", "p", "single:a>fallback:b"), ledger


async def _budget(store: MemoryStore) -> tuple[float, float]:
    """The key's (spent, held)."""
    return await store.budget_state(period_spend_key("team", "k1", "total"), scoped_holds_key("team", "k1"))


async def _tenant_spent(store: MemoryStore) -> float:
    return await store.get_float(period_spend_key("team", None, "total"))


async def _tokens(store: MemoryStore) -> float:
    return await store.window_usage(window_key("team", "k1", "tpm"))


async def _answered(ledger: Ledger, held: Reservation) -> None:
    await ledger.record(Spent(0.0, "team", "p", "single:a>fallback:b", "b", (ANSWER,)), reservation=held)


def test_a_late_answer_that_lands_before_the_request_settles_is_billed_with_it() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        held, late, ledger = await _admitted(store)
        ended = late.open(0.3)
        await ended(_late(0.1))
        assert await _budget(store) == (0.0, pytest.approx(0.6))  # nothing billed yet: the hold covers it
        await _answered(ledger, held)
        assert await _budget(store) == (pytest.approx(0.3), 0.0)
        assert await _tenant_spent(store) == pytest.approx(0.3)
        assert await _tokens(store) == 30 + 50

    asyncio.run(scenario())


def test_a_call_still_read_when_the_request_settles_keeps_its_worst_case_held_until_it_answers() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        held, late, ledger = await _admitted(store)
        ended = late.open(0.3)
        await _answered(ledger, held)
        assert await _budget(store) == (pytest.approx(0.2), pytest.approx(0.3))
        await ended(_late(0.25))
        assert await _budget(store) == (pytest.approx(0.45), 0.0)  # billed to the key's budget...
        assert await _tenant_spent(store) == pytest.approx(0.45)     # ...and to the tenant's
        assert await _tokens(store) == 30 + 50
        await ended(_late(0.25))  # told twice: billed once
        assert await _budget(store) == (pytest.approx(0.45), 0.0)

    asyncio.run(scenario())


def test_a_call_that_fails_after_the_request_settled_gives_its_hold_back() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        held, late, ledger = await _admitted(store)
        ended = late.open(0.3)
        await _answered(ledger, held)
        await ended(None)
        assert await _budget(store) == (pytest.approx(0.2), 0.0)

    asyncio.run(scenario())


def test_calls_still_read_are_held_for_no_more_than_the_request_held() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        held, late, ledger = await _admitted(store, usd=0.5)
        first, second = late.open(0.2), late.open(0.2)
        await _answered(ledger, held)  # 0.2 spent of 0.5 held: 0.3 left for two calls of 0.2 each
        assert await _budget(store) == (pytest.approx(0.2), pytest.approx(0.3))
        await second(_late(0.05))
        await first(None)
        assert await _budget(store) == (pytest.approx(0.25), 0.0)

    asyncio.run(scenario())


class _LosesReplies:
    """A MemoryStore whose next `settle_admission` replies are lost: `applied` says whether the
    settlement went through before its reply was lost."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.lose: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def settle_admission(self, s: Settlement) -> None:
        if self.lose:
            applied = self.lose.pop(0)
            if applied:
                await self.store.settle_admission(s)
            raise StoreUnavailable("reply lost")
        await self.store.settle_admission(s)


async def _late_bill_held(store: MemoryStore, losing: _LosesReplies, applied: bool) -> Ledger:
    """A request answered, then a late call of $0.25 whose bill's reply is lost (`applied`: after it
    went through): the ledger holds that settlement for the store's return."""
    held, late, ledger = await _admitted(store)
    held.store = losing  # type: ignore[assignment]
    ended = late.open(0.3)
    await _answered(ledger, held)
    losing.lose = [applied]
    await ended(_late(0.25))
    assert ledger.stats()["unsettled_usd"] == pytest.approx(0.25)
    return ledger


@pytest.mark.parametrize("applied", [True, False])
def test_a_late_bill_whose_reply_is_lost_is_retried_and_counted_once(applied: bool) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        ledger = await _late_bill_held(store, _LosesReplies(store), applied)
        await ledger.write([])  # the store is back: the held settlement is retried
        assert ledger.stats()["unsettled_usd"] == 0
        assert await _budget(store) == (pytest.approx(0.45), 0.0)
        assert await _tenant_spent(store) == pytest.approx(0.45)

    asyncio.run(scenario())


@pytest.mark.parametrize("applied", [True, False])
def test_a_settlement_whose_reply_is_lost_still_holds_then_bills_the_late_call_once(applied: bool) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        losing = _LosesReplies(store)
        held, late, ledger = await _admitted(store)
        held.store = losing  # type: ignore[assignment]
        ended = late.open(0.3)
        losing.lose = [applied]
        await _answered(ledger, held)  # lost: held for the writer
        await ended(_late(0.25))       # lands meanwhile, billed on its own
        await ledger.write([])         # the request's settlement, retried
        assert ledger.stats()["unsettled_usd"] == 0
        assert await _budget(store) == (pytest.approx(0.45), 0.0)
        assert await _tenant_spent(store) == pytest.approx(0.45)

    asyncio.run(scenario())


def test_a_request_that_fails_while_a_call_is_still_read_keeps_that_call_held_then_bills_it() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        held, late, _ = await _admitted(store)
        ended = late.open(0.3)
        await held.release()  # e.g. its deadline passed: it answered nothing, but the call may still
        assert await _budget(store) == (0.0, pytest.approx(0.3))
        await ended(_late(0.25))
        assert await _budget(store) == (pytest.approx(0.25), 0.0)
        assert await _tenant_spent(store) == pytest.approx(0.25)

    asyncio.run(scenario())


def test_calls_billed_beside_answers_are_counted_in_their_own_cost_metric() -> None:
    """Late answers, calls cut part-way, shadow evaluations and the calls of a request that failed are billed
    to the tenant but answer no request: `switchyard_cost_usd_total` leaves them out (it equals what answers
    said they cost), so they are counted in `switchyard_background_cost_usd_total`, by kind, and the two add up
    to what the ledger billed (before, the metrics had no trace of them)."""

    async def scenario() -> dict[tuple[str, ...], float]:
        store, metrics = MemoryStore(), Metrics()
        held = await Authenticator([], store).admit(CALLER, need=Need(0.6, 100, 60))
        ledger = Ledger(store, metrics=metrics)
        late = LateBills(ledger, held, "team", "p", "single:a>fallback:b")
        await late.open(0.3)(_late(0.1))
        await late.open(0.3)(CallRecord("a", Usage(10, 5), 0.02, 0.5, "cut"))
        await late.open(0.3)(None)  # it never answered: nothing billed
        await ledger.record_shadow("team", (CallRecord("b", Usage(10, 20), 0.05, 0.2, "shadow"),), None, "p")
        # a cascade whose small try answered before its large step failed: billed, and the request answered nothing
        await ledger.record(Spent(0.0, "team", None, "cascade:a>b", "", (CallRecord("a", Usage(10, 20), 0.01, 0.1),),
                                  requests=0))
        await ledger.record(Spent(0.0, "team", "p", "single:b", "b", (ANSWER,)))  # an answer: not counted here
        return metrics.background_cost.values

    assert asyncio.run(scenario()) == {("team", "a", "p", "late"): pytest.approx(0.1),
                                       ("team", "a", "p", "cut"): pytest.approx(0.02),
                                       ("team", "b", "p", "shadow"): pytest.approx(0.05),
                                       ("team", "a", "pinned", "failed"): pytest.approx(0.01)}


def test_tokens_of_calls_billed_beside_answers_are_counted_with_the_billed_tokens() -> None:
    """`switchyard_tokens_total` is every token billed, as the ledger sums them: a late answer's, a cut call's,
    a shadow evaluation's and a failed request's tokens too (they were left out, so the counter fell short
    of /v1/spend by every such call)."""

    async def scenario() -> dict[tuple[str, ...], float]:
        store, metrics = MemoryStore(), Metrics()
        held = await Authenticator([], store).admit(CALLER, need=Need(0.6, 100, 60))
        ledger = Ledger(store, metrics=metrics)
        late = LateBills(ledger, held, "team", "p", "single:a>fallback:b")
        await late.open(0.3)(CallRecord("a", Usage(7, 20), 0.1, 0.5, "late"))
        await late.open(0.3)(CallRecord("a", Usage(10, 5), 0.02, 0.5, "cut"))
        await ledger.record_shadow("team", (CallRecord("b", Usage(10, 20), 0.05, 0.2, "shadow"),), None, "p")
        await ledger.record(Spent(0.0, "team", None, "cascade:a>b", "", (CallRecord("a", Usage(3, 4), 0.01, 0.1),),
                                  requests=0))
        return metrics.tokens.values

    assert asyncio.run(scenario()) == {("team", "a", "p", "input"): 17, ("team", "a", "p", "output"): 25,
                                       ("team", "b", "p", "input"): 10, ("team", "b", "p", "output"): 20,
                                       ("team", "a", "pinned", "input"): 3, ("team", "a", "pinned", "output"): 4}


class _Breaks(_LosesReplies):
    """Once `broken`, fails as redis-py's cluster client does on a connection it reuses after its node
    died: not an outage (`StoreUnavailable`), an error of its own."""

    broken = False

    async def settle_admission(self, s: Settlement) -> None:
        if self.broken:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        await super().settle_admission(s)


def test_a_held_settlement_that_fails_for_good_does_not_take_the_bills_behind_it_along() -> None:
    # The writer retried the held settlement first and the error ended the whole write: the batch of
    # bills queued behind it was dropped from the ledger.
    async def scenario() -> None:
        store = MemoryStore()
        breaking = _Breaks(store)
        ledger = await _late_bill_held(store, breaking, applied=False)
        written, breaking.broken = ledger.written, True
        await ledger.write([Spent(0.0, "team", None, "single:small", "small", (_late(0.1),))])
        assert ledger.written == written + 1  # the bill behind it is in the ledger
        assert ledger.stats()["unsettled_usd"] == 0 and ledger.lost_usd == pytest.approx(0.25)

    asyncio.run(scenario())
