"""A ledger write or a budget settlement can reach Redis and its reply still be lost (a timeout, a cut
connection, a failover). The writer then holds it and retries: the retry must not count the same
bills twice. Against a real Redis, with stores that apply a write and then report it failed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from gateway.admission import Reservation
from gateway.admission_store import Settlement
from gateway.executor.result import CallRecord
from gateway.ledger import Ledger, Spent, read_spend, spend_table, window
from gateway.providers.base import Usage
from gateway.state import Budget, RedisStore, StoreUnavailable, SumsOnce, holds_key, spend_key
from tests.support.processes import RedisServer

AT = 1_800_000_000.0


class LostReplies(RedisStore):
    """Every write reaches Redis; the reply of the first `lose` of them is lost."""

    def __init__(self, url: str, lose: int) -> None:
        super().__init__(url, timeout_s=5)
        self.lose = lose

    def _reply(self) -> None:
        if self.lose > 0:
            self.lose -= 1
            raise StoreUnavailable("timeout reading the reply")

    async def add_to_hashes(self, sums: Mapping[str, Mapping[str, float]], ttl_s: float,
                            index: tuple[str, Sequence[str]] | None = None) -> None:
        await super().add_to_hashes(sums, ttl_s, index)
        self._reply()

    async def add_to_hashes_once(self, groups: Sequence[SumsOnce], ttl_s: float, marker_ttl_s: float,
                                 index: tuple[str, Sequence[str]] | None = None) -> None:
        await super().add_to_hashes_once(groups, ttl_s, marker_ttl_s, index)
        self._reply()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[LostReplies]:
    made = LostReplies(redis_server.url, lose=2)
    yield made
    await made.close()


def _bill(tenant: str, usd: float) -> Spent:
    return Spent(AT, tenant, "balanced", "single:small", "small", (CallRecord("small", Usage(10, 20), usd, 0.1),))


async def _spent(store: RedisStore, tenant: str) -> dict[str, Any]:
    rows = spend_table(await read_spend(store, window(AT - 3600, AT + 7200), [tenant]), ("tenant",))
    return rows[0] if rows else {}


async def test_a_write_retried_after_its_reply_was_lost_is_counted_once(store: LostReplies) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ledger = Ledger(store)
    await ledger.write([_bill(tenant, 0.25), _bill(tenant, 0.5)])  # applied, reply lost: held
    assert ledger.stats()["held"] == 2
    await ledger.write([_bill(tenant, 1.0)])  # the retry (reply lost again) and a new bill waiting behind it
    await ledger.write([])  # the retry answers; then the new bill's write
    assert ledger.stats()["held"] == 0 and ledger.stats()["written"] == 3
    row = await _spent(store, tenant)
    assert row["cost_usd"] == pytest.approx(1.75)
    assert row["requests"] == 3


async def test_writers_are_independent_and_a_later_write_still_counts(store: LostReplies) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    store.lose = 0
    one, two = Ledger(store), Ledger(store)
    await one.write([_bill(tenant, 0.1)])
    await two.write([_bill(tenant, 0.2)])  # another replica: its own sequence numbers
    await one.write([_bill(tenant, 0.4)])
    assert (await _spent(store, tenant))["cost_usd"] == pytest.approx(0.7)


class LostSettleReply(RedisStore):
    """Budget settlements reach Redis; the reply of the first one is lost."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout_s=5)
        self.lose = 1

    async def settle_admission(self, s: Settlement) -> None:
        await super().settle_admission(s)
        if self.lose > 0:
            self.lose -= 1
            raise StoreUnavailable("timeout reading the reply")


async def test_a_budget_settlement_retried_after_its_reply_was_lost_is_counted_once(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.ledger.RETRY_S", 0.05)
    store = LostSettleReply(redis_server.url)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    try:
        budget = Budget(spend_key(tenant), holds_key(tenant), "hold-1", 0.5, limit=10.0, ttl_s=60)
        assert (await store.reserve(budget, None)).verdict == "ok"
        held = Reservation(store, tenant, "hold-1", 0.5, expires_at=time.monotonic() + 60)
        ledger = Ledger(store, linger_s=0.01)
        ledger.start()
        await ledger.record(_bill(tenant, 0.25), reservation=held)  # settled; the reply lost: held for a retry
        assert ledger.stats()["unsettled_usd"] == pytest.approx(0.25)
        await asyncio.sleep(0.3)  # the writer retries
        await ledger.close()
        assert ledger.stats()["unsettled_usd"] == 0
        assert await store.get_float(spend_key(tenant)) == pytest.approx(0.25)
        assert (await store.budget_state(spend_key(tenant), holds_key(tenant)))[1] == 0.0  # no hold left
    finally:
        await store.close()


async def test_a_retried_settlement_whose_first_try_failed_outright_is_counted(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, timeout_s=5)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    try:
        budget = Budget(spend_key(tenant), holds_key(tenant), "hold-2", 0.5, limit=10.0, ttl_s=60)
        assert (await store.reserve(budget, None)).verdict == "ok"
        held = Reservation(store, tenant, "hold-2", 0.5, expires_at=time.monotonic() + 60)
        await held.settle(0.25, retry=True)  # the hold is still there: the first try never landed
        assert await store.get_float(spend_key(tenant)) == pytest.approx(0.25)
    finally:
        await store.close()


class RefusedFirstSettle(RedisStore):
    """The first budget settlement never reaches Redis (the connection is refused), and Redis comes
    back without the request's hold, as a restarted one without the hold in its data does."""

    def __init__(self, url: str, tenant: str) -> None:
        super().__init__(url, timeout_s=5)
        self.tenant, self.refuse = tenant, 1

    async def settle_admission(self, s: Settlement) -> None:
        if self.refuse > 0:
            self.refuse -= 1
            await self._client.delete(holds_key(self.tenant))  # lost with the old server's data
            raise StoreUnavailable("Error 111 connecting", unsent=True)
        await super().settle_admission(s)


async def test_a_settlement_that_never_reached_the_store_is_added_though_the_store_lost_its_hold(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.ledger.RETRY_S", 0.05)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    store = RefusedFirstSettle(redis_server.url, tenant)
    try:
        budget = Budget(spend_key(tenant), holds_key(tenant), "hold-3", 0.5, limit=10.0, ttl_s=60)
        assert (await store.reserve(budget, None)).verdict == "ok"
        held = Reservation(store, tenant, "hold-3", 0.5, expires_at=time.monotonic() + 60)
        ledger = Ledger(store, linger_s=0.01)
        ledger.start()
        await ledger.record(_bill(tenant, 0.25), reservation=held)  # refused: held for a retry
        assert ledger.stats()["unsettled_usd"] == pytest.approx(0.25)
        await asyncio.sleep(0.3)  # the writer retries
        await ledger.close()
        assert ledger.stats()["unsettled_usd"] == 0
        assert await store.get_float(spend_key(tenant)) == pytest.approx(0.25)  # not taken as settled
    finally:
        await store.close()
