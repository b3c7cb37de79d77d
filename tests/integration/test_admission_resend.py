"""An admission's script may run twice: redis-py resends a call once on a fresh connection when the
first one broke (`RedisStore`'s `Retry(NoBackoff(), 1, ...)`), which may be after Redis ran the
script. The resend must count nothing again and answer as the first run did, or a tenant's request
counts twice in its windows (and holds twice its budget) and it is refused before its limit. Against
a real Redis, sending the very same script call twice."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.admission_store import Admission, Admitted, BudgetHold, Window, admit_call, parse_admitted
from gateway.state import RedisStore, alerts_key, holds_key, spend_key, window_key
from tests.support.processes import RedisServer


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    made = RedisStore(redis_server.url, timeout_s=5)
    yield made
    await made.close()


def _admission(tenant: str, usd: float, rpm: int, tokens: int, tpm: int = 1_000_000) -> Admission:
    return Admission(uuid.uuid4().hex, 60.0,
                     (BudgetHold(spend_key(tenant), holds_key(tenant), alerts_key(tenant, None, "total"), usd, 1.0,
                                 thresholds=(0.5,)),),
                     (Window(window_key(tenant, None, "rpm"), rpm, 1),
                      Window(window_key(tenant, None, "tpm"), tpm, tokens)))


async def _sent_twice(store: RedisStore, a: Admission) -> tuple[Admitted, Admitted]:
    keys, args = admit_call(a)
    # the first reply lost on a broken connection; redis-py sends the same call again
    first = parse_admitted(await store._admit(keys=keys, args=args))
    again = parse_admitted(await store._admit(keys=keys, args=args))
    return first, again


async def _counted(store: RedisStore, tenant: str) -> tuple[str | None, str | None, dict[str, str]]:
    c = store._client
    rpm, tpm = [await c.hget(window_key(tenant, None, kind), "t") for kind in ("rpm", "tpm")]
    holds = {k.decode(): v.decode().split()[0] for k, v in (await c.hgetall(holds_key(tenant))).items()}
    return (rpm.decode() if rpm else None), (tpm.decode() if tpm else None), holds


async def test_an_admission_sent_twice_counts_the_request_once_and_answers_as_the_first_run(
        store: RedisStore) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    a = _admission(tenant, 0.6, rpm=10, tokens=300)
    first, again = await _sent_twice(store, a)
    assert first.verdict == "ok" and first.alerts == ((0, 0.5),)  # 0.6 of a $1 budget: the 50% alert
    assert again == first  # the same step, the same alert: reported once, by whichever reply arrives
    assert await _counted(store, tenant) == ("1", "300", {a.hold_id: "0.6"})


async def test_a_resent_admission_at_the_limit_is_not_refused_by_its_own_first_run(store: RedisStore) -> None:
    """Run again, it found its own first run's count (and hold) and refused the request it admitted."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    first, again = await _sent_twice(store, _admission(tenant, 0.6, rpm=1, tokens=0))
    assert first.verdict == again.verdict == "ok"
    assert (await _counted(store, tenant))[0] == "1"
    refused = await store.admit(_admission(tenant, 0.1, rpm=1, tokens=0))  # the next request is over
    assert refused.verdict == "rate"


async def test_a_refused_admission_sent_twice_answers_the_same_refusal(store: RedisStore) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    first, again = await _sent_twice(store, _admission(tenant, 2.0, rpm=10, tokens=0))
    assert first.verdict == "budget" and again == first
    assert await _counted(store, tenant) == (None, None, {})


class Resending(RedisStore):
    """Every admission is sent twice, as redis-py's retry resends a call whose reply was lost."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout_s=5)
        once = self._admit

        async def twice(**kw: Any) -> Any:
            await once(**kw)
            return await once(**kw)
        self._admit = twice


async def test_a_tenant_gets_its_whole_rate_limit_when_every_admission_is_resent(redis_server: RedisServer) -> None:
    store = Resending(redis_server.url)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    try:
        verdicts = [(await store.admit(_admission(tenant, 0.0, rpm=3, tokens=100))).verdict for _ in range(4)]
        assert verdicts == ["ok", "ok", "ok", "rate"]
        assert (await _counted(store, tenant))[:2] == ("3", "300")
    finally:
        await store.close()
