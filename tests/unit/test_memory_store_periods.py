"""The embedded store forgets a budget period's spend and alert marks once it has kept them as long as
Redis keeps them (`BudgetHold.keep_ms`, `Settlement.spends`): a long-running gateway with day budgets
on admin-made keys otherwise grew by every key's spend and alert marks every day, for ever."""

from __future__ import annotations

import pytest

from gateway import admission_store
from gateway.admission_store import Admission, BudgetHold, Settlement
from gateway.state import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _hold(day: str, keep_ms: int) -> BudgetHold:
    return BudgetHold(f"sy:spend:{{acme}}:day:{day}", "sy:hold:{acme}", f"sy:alerts:{{acme}}:day:{day}",
                      0.6, 1.0, keep_ms, (0.5,))


async def _day(store: MemoryStore, day: str, keep_ms: int) -> None:
    """One request of that day: admitted (firing the 50% alert), then settled."""
    hold = _hold(day, keep_ms)
    got = await store.admit(Admission(f"h-{day}", 60.0, (hold,)))
    assert got.verdict == "ok" and got.alerts == ((0, 0.5),)
    await store.settle_admission(Settlement(f"h-{day}", 0.1, ((hold.spend_key, hold.holds_key, keep_ms),)))


async def test_a_past_periods_spend_and_alerts_are_dropped_once_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(admission_store.time, "monotonic", clock)
    store = MemoryStore()
    keep_ms = 8 * 24 * 3600 * 1000  # the rest of the day and a week after it
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    for day in days:
        await _day(store, day, keep_ms)
        clock.now += 24 * 3600
    # Kept as long as Redis keeps them: the last eight days' marks, not every day's since the start.
    assert await store.get_float(_hold(days[-1], keep_ms).spend_key) == pytest.approx(0.1)
    spend_keys = [k for k in store._floats if k.startswith("sy:spend:{acme}:day:")]
    assert 0 < len(spend_keys) <= 9
    assert 0 < len(store._alerts) <= 9
    assert _hold(days[0], keep_ms).spend_key not in store._floats


async def test_a_total_budgets_spend_is_kept_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(admission_store.time, "monotonic", clock)
    store = MemoryStore()
    await _day(store, "total", 0)
    clock.now += 400 * 24 * 3600
    await store.admit(Admission("later", 60.0, (_hold("2027-01-01", 1000),)))
    assert await store.get_float(_hold("total", 0).spend_key) == pytest.approx(0.1)
