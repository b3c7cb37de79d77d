"""A settlement's script may run twice: redis-py retries a call once on a fresh connection when the
first one broke (`RedisStore`'s `Retry(NoBackoff(), 1, ...)`), and it may have broken after Redis ran
the script but before its reply came back. The resend must apply nothing: every settlement path
(a request's, with or without a hold, a retry, one leaving holds for calls still read, a
deployment's token window, spend with no reservation) counts its spend and tokens once. Against a
real Redis, sending the very same script call twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.admission import Reservation
from gateway.admission_store import Admission, BudgetHold, Settlement, Window, settle_call
from gateway.executor.result import CallRecord
from gateway.ledger import Ledger, Spent
from gateway.providers.base import Usage
from gateway.state import RedisStore, StoreUnavailable, deployment_window_key, holds_key, spend_key, window_key
from tests.support.processes import RedisServer


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    made = RedisStore(redis_server.url, timeout_s=5)
    yield made
    await made.close()


async def _admit(store: RedisStore, tenant: str, hold_id: str, usd: float, tokens: int) -> int:
    """Hold `usd` against a budget and count `tokens` in the tenant's window; the window step."""
    got = await store.admit(Admission(hold_id, 60.0, (BudgetHold(spend_key(tenant), holds_key(tenant),
                                                                  f"sy:alert:{{{tenant}}}:total", usd, 100.0),),
                                      (Window(window_key(tenant, None, "tpm"), 1_000_000, tokens),)))
    assert got.verdict == "ok"
    return got.step


async def _sent_twice(store: RedisStore, s: Settlement) -> None:
    keys, args = settle_call(s)
    for _ in range(2):  # the first reply lost on a broken connection; redis-py sends it again
        await store._settle_all(keys=keys, args=args)


async def _state(store: RedisStore, tenant: str) -> tuple[float, dict[str, str], dict[str, str]]:
    spent = float(await store._client.get(spend_key(tenant)) or 0)
    holds = {k.decode(): v.decode().split()[0] for k, v in (await store._client.hgetall(holds_key(tenant))).items()}
    window = {k.decode(): v.decode() for k, v in (await store._client.hgetall(window_key(tenant, None, "tpm"))).items()}
    return spent, holds, window


def _spends(tenant: str) -> tuple[tuple[str, str, int], ...]:
    return ((spend_key(tenant), holds_key(tenant), 0),)


@pytest.mark.parametrize("shape", ["first try", "retry with its hold as witness", "calls still read", "no hold"])
async def test_a_request_settlement_sent_twice_counts_its_spend_and_tokens_once(store: RedisStore,
                                                                               shape: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    hold = f"h-{uuid.uuid4().hex[:8]}"
    step = await _admit(store, tenant, hold, 0.0 if shape == "no hold" else 1.0, 1_000)  # 0: nothing held
    tokens = ((window_key(tenant, None, "tpm"), step, -400),)  # 600 of the 1,000 reserved were used
    s = {"first try": Settlement(hold, 0.3, _spends(tenant), tokens),
         "retry with its hold as witness": Settlement(hold, 0.3, _spends(tenant), tokens, only_if_held=True),
         "calls still read": Settlement(hold, 0.3, _spends(tenant), tokens, residual=((f"{hold}:late:0", 0.2),),
                                        residual_ttl_s=30.0),
         "no hold": Settlement(None, 0.3, _spends(tenant), tokens)}[shape]
    await _sent_twice(store, s)
    spent, holds, window = await _state(store, tenant)
    assert spent == pytest.approx(0.3)
    assert window[str(step)] == "600" and window["t"] == "600"
    assert holds == ({f"{hold}:late:0": "0.2"} if shape == "calls still read" else {})


async def test_a_late_calls_settlement_sent_twice_bills_it_once(store: RedisStore) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    hold = f"h-{uuid.uuid4().hex[:8]}"
    step = await _admit(store, tenant, hold, 1.0, 1_000)
    key = window_key(tenant, None, "tpm")
    await _sent_twice(store, Settlement(hold, 0.3, _spends(tenant), ((key, step, -400),),
                                        residual=((f"{hold}:late:0", 0.2),), residual_ttl_s=30.0))
    # the late call answers: its own hold dropped, its cost and tokens added
    await _sent_twice(store, Settlement(f"{hold}:late:0", 0.15, _spends(tenant), ((key, step, 100),)))
    spent, holds, window = await _state(store, tenant)
    assert spent == pytest.approx(0.45)
    assert holds == {} and window["t"] == "700"


async def test_a_deployment_token_window_correction_sent_twice_applies_once(store: RedisStore) -> None:
    key = deployment_window_key(f"d-{uuid.uuid4().hex[:8]}", "tpm")
    got = await store.admit(Admission(uuid.uuid4().hex, 0.0, (), (Window(key, 1_000_000, 1_000),)))
    await _sent_twice(store, Settlement(None, 0.0, (), ((key, got.step, -250),)))  # as `Quotas.settle` sends it
    window = {k.decode(): v.decode() for k, v in (await store._client.hgetall(key)).items()}
    assert window[str(got.step)] == "750" and window["t"] == "750"


class Resending(RedisStore):
    """Every spend-changing call is sent twice, as redis-py's retry resends a call whose reply was lost."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout_s=5)
        once = self._settle_all

        async def twice(**kw: Any) -> Any:
            await once(**kw)
            return await once(**kw)
        self._settle_all = twice

    async def incr_float(self, key: str, amount: float) -> float:
        send: Callable[[], Awaitable[float]] = lambda: super(Resending, self).incr_float(key, amount)  # noqa: E731
        await send()
        return await send()


@pytest.mark.parametrize("held", [True, False], ids=["reservation", "no reservation"])
async def test_the_ledger_settles_a_bill_once_when_its_call_is_resent(redis_server: RedisServer, held: bool) -> None:
    store = Resending(redis_server.url)
    try:
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        reservation = None
        if held:
            hold = f"h-{uuid.uuid4().hex[:8]}"
            await _admit(store, tenant, hold, 1.0, 0)
            reservation = Reservation(store, tenant, hold, 1.0, spends=_spends(tenant))
        call = CallRecord("small", Usage(10, 20), 0.25, 0.1)
        await Ledger(store).record(Spent(1_800_000_000.0, tenant, "balanced", "single:small", "small", (call,)),
                                   reservation)
        spent, holds, _ = await _state(store, tenant)
        assert spent == pytest.approx(0.25) and holds == {}
    finally:
        await store.close()


class LostFirstReply(RedisStore):
    """The first spend-changing call reaches Redis and its reply is lost (a timeout, a failover)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout_s=5)
        self.lose = 1

    def _reply(self) -> None:
        if self.lose > 0:
            self.lose -= 1
            raise StoreUnavailable("timeout reading the reply")

    async def settle_admission(self, s: Settlement) -> None:
        await super().settle_admission(s)
        self._reply()

    async def incr_float(self, key: str, amount: float) -> float:
        got = await super().incr_float(key, amount)
        self._reply()
        return got


@pytest.mark.parametrize("held", ["no reservation", "a hold about to lapse"])
async def test_the_ledgers_retry_of_a_settlement_whose_reply_was_lost_counts_it_once(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, held: str) -> None:
    """Where no hold can witness that the first try went through (none was taken, or it may have
    lapsed by the retry), the settlement's id does."""
    monkeypatch.setattr("gateway.ledger.RETRY_S", 0.05)
    store = LostFirstReply(redis_server.url)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    try:
        reservation = None
        if held == "a hold about to lapse":
            await _admit(store, tenant, "hold-1", 1.0, 0)
            reservation = Reservation(store, tenant, "hold-1", 1.0, spends=_spends(tenant),
                                      expires_at=time.monotonic() + 1)
        ledger = Ledger(store, linger_s=0.01)
        ledger.start()
        call = CallRecord("small", Usage(10, 20), 0.25, 0.1)
        await ledger.record(Spent(1_800_000_000.0, tenant, "balanced", "single:small", "small", (call,)), reservation)
        assert ledger.stats()["unsettled_usd"] == pytest.approx(0.25)  # applied, its reply lost: held
        await asyncio.sleep(0.3)  # the writer retries
        await ledger.close()
        assert ledger.stats()["unsettled_usd"] == 0
        assert (await _state(store, tenant))[0] == pytest.approx(0.25)
    finally:
        await store.close()
