"""How `Ledger.record` settles a tenant's budget: the real cost replaces the hold, exactly once; a
cache hit releases its hold and spends nothing; spend without a hold still counts."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth import Reservation
from gateway.executor.result import CallRecord
from gateway.ledger import CACHE, Ledger, Spent
from gateway.providers.base import Usage
from gateway.state import Budget, MemoryStore, holds_key, spend_key

CALLS = (CallRecord("small", Usage(10, 20), 0.003, 0.1), CallRecord("large", Usage(10, 5), 0.004, 0.2, "escalation"))


def _held(store: MemoryStore, amount: float) -> Reservation:
    budget = Budget(spend_key("team"), holds_key("team"), "hold-1", amount, limit=1.0, ttl_s=60)
    assert asyncio.run(store.reserve(budget, None)).verdict == "ok"
    return Reservation(store, "team", "hold-1", amount)


def _in_flight(store: MemoryStore) -> float:
    probe = Budget(spend_key("team"), holds_key("team"), "probe", 0.0, limit=1.0, ttl_s=60)
    return asyncio.run(store.reserve(probe, None)).reserved


def test_a_bill_replaces_its_hold_with_the_real_cost() -> None:
    store = MemoryStore()
    held = _held(store, 0.5)
    assert _in_flight(store) == pytest.approx(0.5)
    asyncio.run(Ledger(store).record(Spent(0.0, "team", "balanced", "cascade:small>large:escalated", "large",
                                           CALLS), reservation=held))
    assert asyncio.run(store.get_float(spend_key("team"))) == pytest.approx(0.007)
    assert _in_flight(store) == 0.0


def test_a_cache_hit_releases_its_hold_and_spends_nothing() -> None:
    store = MemoryStore()
    held = _held(store, 0.5)
    asyncio.run(Ledger(store).record(Spent(0.0, "team", "balanced", CACHE, "small", ()), reservation=held))
    assert asyncio.run(store.get_float(spend_key("team"))) == 0.0
    assert _in_flight(store) == 0.0


def test_spend_without_a_hold_is_still_added_to_the_tenants_spend() -> None:
    store = MemoryStore()
    ledger = Ledger(store)
    for _ in range(2):
        asyncio.run(ledger.record(Spent(0.0, "team", None, "single:small", "small", CALLS[:1])))
    assert asyncio.run(store.get_float(spend_key("team"))) == pytest.approx(0.006)
