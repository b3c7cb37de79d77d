"""A ledger write can reach Redis and its reply still be lost (a timeout, a cut connection, a
failover). The writer then holds the write and retries it: the retry must not count the same bills
twice. Against a real Redis, with a store that applies a write and then reports it failed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from gateway.executor.result import CallRecord
from gateway.ledger import Ledger, Spent, read_spend, spend_table, window
from gateway.providers.base import Usage
from gateway.state import RedisStore, StoreUnavailable, SumsOnce
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
