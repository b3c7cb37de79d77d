"""The store's circuit breaker and what budget and rate gates do when the store is down."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest

from gateway.admission import Limits
from gateway.admission_store import Admission, Admitted, Settlement
from gateway.auth import Authenticator, LogThrottle, Tenant, hash_key, on_outage
from gateway.config import OutageSetting, TenantConfig
from gateway.errors import StoreOutage
from gateway.state import (
    Budget,
    MemoryStore,
    Rate,
    RedisStore,
    Reserved,
    StoreUnavailable,
    period_spend_key,
    scoped_holds_key,
    spend_key,
)
from gateway.store_breaker import StoreBreaker
from gateway.windows import period_id


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _DownStore(MemoryStore):
    """A store whose every call fails, counting the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        raise StoreUnavailable("connection refused")

    async def get_float(self, key: str) -> float:
        await self.get(key)
        return 0.0

    async def incr(self, key: str, ttl_s: float) -> int:
        self.calls += 1
        raise StoreUnavailable("connection refused")

    async def reserve(self, budget: Budget | None, rate: Rate | None) -> Reserved:
        self.calls += 1
        raise StoreUnavailable("connection refused")

    async def admit(self, a: Admission) -> Admitted:
        self.calls += 1
        raise StoreUnavailable("connection refused")

    async def settle_admission(self, s: Settlement) -> None:
        self.calls += 1
        raise StoreUnavailable("connection refused")


def test_store_breaker_fails_fast_after_a_failure_then_lets_one_trial_through() -> None:
    clock = _Clock()
    breaker = StoreBreaker(cooldown_s=2.0, clock=clock)
    assert breaker.allow() and breaker.closed
    breaker.failed()
    assert not breaker.allow()
    clock.now += 2.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # others wait for its answer
    breaker.succeeded()
    assert breaker.closed and breaker.allow() and breaker.allow()


def test_a_failed_trial_holds_the_store_down_for_another_cooldown() -> None:
    clock = _Clock()
    breaker = StoreBreaker(cooldown_s=2.0, clock=clock)
    breaker.failed()
    clock.now += 2.5
    assert breaker.allow()
    breaker.failed()
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_a_cancelled_trial_lets_the_next_caller_try() -> None:
    clock = _Clock()
    breaker = StoreBreaker(cooldown_s=2.0, clock=clock)
    breaker.failed()
    clock.now += 2.0
    assert breaker.allow()
    breaker.abandoned()
    assert breaker.allow()


def test_redis_store_refuses_at_once_while_its_breaker_is_open() -> None:
    async def scenario() -> None:
        breaker = StoreBreaker()
        breaker.failed()
        store = RedisStore("redis://127.0.0.1:1/0", breaker=breaker)  # nothing listens there
        with pytest.raises(StoreUnavailable, match="marked down"):
            await store.get("k")
        with pytest.raises(StoreUnavailable, match="marked down"):
            await store.incr("k", 60)
        assert await store.ping() is False
        await store.close()

    asyncio.run(scenario())


def _limited(store: MemoryStore, setting: OutageSetting) -> tuple[Authenticator, Tenant]:
    config = TenantConfig.model_validate({"name": "t", "api_key_sha256": hash_key("sk-1"), "budget_usd": 1.0,
                                          "requests_per_minute": 10})
    auth = Authenticator([config], store, setting)
    return auth, auth.identify("Bearer sk-1")


def test_budget_gate_fails_closed_by_default_when_the_store_is_down() -> None:
    async def scenario() -> None:
        config = TenantConfig.model_validate({"name": "t", "api_key_sha256": hash_key("sk-1"), "budget_usd": 1.0})
        auth = Authenticator([config], _DownStore())
        with pytest.raises(StoreOutage) as info:
            await auth.admit(auth.identify("Bearer sk-1"))
        assert info.value.status == 503 and info.value.code == "store_unavailable"
        assert info.value.headers["retry-after"]
        assert auth.outage_refuses

    asyncio.run(scenario())


def test_budget_gate_lets_requests_through_under_fail_open() -> None:
    async def scenario() -> None:
        auth, tenant = _limited(_DownStore(), "fail_open")
        await auth.admit(tenant)
        assert not auth.outage_refuses

    asyncio.run(scenario())


class _AdmitDown(MemoryStore):
    """A store that could not answer the admission but is back for the settlement."""

    async def admit(self, a: Admission) -> Admitted:
        raise StoreUnavailable("connection refused")


def test_spend_let_through_under_fail_open_reaches_every_budget_of_the_request() -> None:
    # Settled into the tenant's total alone, a request served while the store was down never reached the
    # key's budget or a period's: once the store was back, those budgets had forgotten what it spent.
    async def scenario() -> None:
        store = _AdmitDown()
        config = TenantConfig.model_validate({"name": "t", "api_key_sha256": hash_key("sk-1"),
                                              "budget": {"usd": 1.0, "period": "day"}})
        auth = Authenticator([config], store, "fail_open")
        tenant = dataclasses.replace(auth.identify("Bearer sk-1"), key_id="k1", key_limits=Limits(budget_usd=2.0))
        reservation = await auth.admit(tenant)
        await reservation.settle(0.25)
        day = period_id("day", time.time())
        assert await store.budget_state(period_spend_key("t", None, day), scoped_holds_key("t", None)) == (0.25, 0.0)
        assert await store.budget_state(period_spend_key("t", "k1", "total"),
                                        scoped_holds_key("t", "k1")) == (0.25, 0.0)
        assert await store.get_float(spend_key("t")) == 0.25  # the tenant's total, as before

    asyncio.run(scenario())


def test_a_tenant_without_limits_never_waits_for_the_store() -> None:
    async def scenario() -> None:
        store = _DownStore()
        config = TenantConfig.model_validate({"name": "t", "api_key_sha256": hash_key("sk-1")})
        auth = Authenticator([config], store)
        await auth.admit(auth.identify("Bearer sk-1"))
        assert store.calls == 0 and not auth.outage_refuses

    asyncio.run(scenario())


def test_outage_lines_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(every_s=60)
    tenant = Tenant("t", budget_usd=1.0)
    with caplog.at_level(logging.WARNING, logger="switchyard.auth"):
        for _ in range(5):
            on_outage("fail_open", tenant, "budget", StoreUnavailable("down"), throttle)
    lines = [r for r in caplog.records if r.name == "switchyard.auth"]
    assert len(lines) == 1 and "let through" in lines[0].getMessage()
    assert throttle.suppressed == 4
