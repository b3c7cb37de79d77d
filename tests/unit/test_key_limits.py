"""Virtual keys narrow their tenant; a key's budget and its tenant's both hold; requests and tokens
per minute are sliding windows, tokens settled to the real count; thresholds fire once a period."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateway.auth import Authenticator, Need, hash_key
from gateway.config import TenantConfig
from gateway.errors import AuthenticationFailed, BudgetExceeded, RateLimited
from gateway.executor.result import CallRecord
from gateway.keys import KeyCreate, KeyLimits, KeyRegistry, key_id_of
from gateway.metrics import Tally
from gateway.providers.base import Usage
from gateway.state import MemoryStore, period_spend_key
from gateway.windows import period_id


def _auth(*tenants: dict[str, object], alerts: Tally | None = None) -> Authenticator:
    configs = [TenantConfig.model_validate({"api_key_sha256": hash_key(f"sk-{t['name']}"), **t}) for t in tenants]
    return Authenticator(configs, MemoryStore(), budget_alerts=(0.5, 1.0), alerts=alerts)


async def _key(auth: Authenticator, **spec: object) -> str:
    _, key = await auth.keys.create(KeyCreate.model_validate({"tenant": "acme", **spec}))
    return key


def test_a_key_carries_its_id_and_other_strings_do_not_parse_as_keys() -> None:
    assert key_id_of("sk-sy-0123456789ab-secret") == "0123456789ab"
    for other in ("sk-sy-0123456789ab", "sk-sy-0123456789aX-secret", "sk-other", "sk-sy-0123456789abXsecret"):
        assert key_id_of(other) is None


def test_a_key_narrows_its_configured_tenant() -> None:
    async def scenario() -> None:
        auth = _auth({"name": "acme", "policies": ["balanced", "cost-saver"], "deployments": ["small", "large"]})
        key = await _key(auth, policies=["cost-saver", "quality-first"], deployments=["small"])
        tenant = await auth.authenticate(f"Bearer {key}")
        assert tenant.name == "acme" and tenant.key_id is not None
        assert tenant.policies == frozenset({"cost-saver"})  # both must allow it
        assert tenant.deployments == frozenset({"small"})

    asyncio.run(scenario())


def test_revoked_rotated_expired_and_unknown_keys_are_refused() -> None:
    async def scenario() -> None:
        auth = _auth({"name": "acme"})
        auth.keys = KeyRegistry(auth.store, cache_ttl_s=0.0)
        key = await _key(auth)
        record = await auth.keys.get(key_id_of(key) or "")
        assert record is not None
        rotated, new = await auth.keys.rotate(record)
        with pytest.raises(AuthenticationFailed, match="invalid API key"):
            await auth.authenticate(f"Bearer {key}")
        assert (await auth.authenticate(f"Bearer {new}")).name == "acme"
        await auth.keys.revoke(rotated)
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await auth.authenticate(f"Bearer {new}")
        past = datetime.now(UTC) - timedelta(seconds=1)
        expired = await _key(auth, expires_at=past.isoformat())
        with pytest.raises(AuthenticationFailed, match="expired"):
            await auth.authenticate(f"Bearer {expired}")
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("Bearer sk-sy-000000000000-nope")

    asyncio.run(scenario())


def test_the_cache_keeps_a_revoked_key_for_at_most_its_ttl() -> None:
    async def scenario() -> None:
        auth = _auth({"name": "acme"})
        auth.keys = KeyRegistry(auth.store, cache_ttl_s=0.2)
        key = await _key(auth)
        await auth.authenticate(f"Bearer {key}")  # cached now
        other = KeyRegistry(auth.store)  # another replica revokes it
        record = await other.get(key_id_of(key) or "")
        assert record is not None
        await other.revoke(record)
        await asyncio.sleep(0.25)
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await auth.authenticate(f"Bearer {key}")

    asyncio.run(scenario())


def test_a_key_budget_and_its_tenant_budget_both_hold() -> None:
    async def scenario() -> None:
        auth = _auth({"name": "acme", "budget": {"usd": 1.0, "period": "day"}})
        tenant = await auth.authenticate(f"Bearer {await _key(auth, budget={'usd': 0.3, 'period': 'total'})}")
        held = await auth.admit(tenant, None, Need(0.25))
        with pytest.raises(BudgetExceeded, match=r"key '.*' of tenant 'acme'.*\$0.3 budget"):
            await auth.admit(tenant, None, Need(0.1))
        await held.settle(0.2)
        day = period_spend_key("acme", None, period_id("day", time.time()))
        assert await auth.store.get_float(day) == pytest.approx(0.2)
        other = await auth.authenticate(f"Bearer {await _key(auth)}")  # same tenant, no key budget
        await auth.admit(other, None, Need(0.7))
        with pytest.raises(BudgetExceeded, match=r"tenant 'acme'.* daily budget"):
            await auth.admit(other, None, Need(0.2))

    asyncio.run(scenario())


def test_a_refusal_writes_large_limits_with_every_digit() -> None:
    """A budget of $1,234,567.89 and 12,345,678 tokens a minute, as configured: not `1.23457e+06`."""
    async def scenario() -> None:
        auth = _auth({"name": "acme", "budget": 1234567.89, "tokens_per_minute": 12345678})
        tenant = auth.identify("Bearer sk-acme")
        with pytest.raises(BudgetExceeded) as budget:
            await auth.admit(tenant, None, Need(2_000_000.0))
        assert "of its $1234567.89 budget" in budget.value.message
        with pytest.raises(RateLimited) as never:
            await auth.admit(tenant, None, Need(tokens=20_000_000))
        assert "limit of 12345678 allows at all" in never.value.message
        await auth.admit(tenant, None, Need(tokens=12_000_000))
        with pytest.raises(RateLimited) as over:
            await auth.admit(tenant, None, Need(tokens=1_000_000))
        assert "(12345678 tokens per minute, 12000000 used in the last minute)" in over.value.message

    asyncio.run(scenario())


def test_requests_per_minute_counts_per_key_and_names_the_limit() -> None:
    async def scenario() -> None:
        auth = _auth({"name": "acme"})
        tenant = await auth.authenticate(f"Bearer {await _key(auth, requests_per_minute=3)}")
        for _ in range(3):
            await auth.admit(tenant)
        with pytest.raises(RateLimited, match="requests_per_minute") as info:
            await auth.admit(tenant)
        assert 1 <= int(info.value.headers["retry-after"]) <= 60
        assert info.value.headers["x-switchyard-limit"] == "requests_per_minute"
        assert info.value.code == "rate_limit_exceeded"

    asyncio.run(scenario())


def test_tokens_per_minute_reserves_the_worst_case_and_settles_the_real_count() -> None:
    async def scenario() -> None:
        auth = _auth({"name": "acme", "tokens_per_minute": 1000})
        tenant = auth.identify("Bearer sk-acme")
        first = await auth.admit(tenant, None, Need(tokens=600))
        with pytest.raises(RateLimited, match="tokens_per_minute"):
            await auth.admit(tenant, None, Need(tokens=600))
        call = CallRecord("small", Usage(50, 50), 0.0, 0.1)
        await first.settle(0.0, (call,))  # used 100 of the 600 reserved: 500 go back
        await auth.admit(tenant, None, Need(tokens=600))
        with pytest.raises(RateLimited, match="more than its tokens_per_minute limit"):
            await auth.admit(tenant, None, Need(tokens=1001))

    asyncio.run(scenario())


def test_a_refused_request_is_not_counted_in_any_window() -> None:
    async def scenario() -> None:
        auth = _auth({"name": "acme", "requests_per_minute": 100, "budget_usd": 0.1})
        tenant = auth.identify("Bearer sk-acme")
        for _ in range(5):
            with pytest.raises(BudgetExceeded):
                await auth.admit(tenant, None, Need(0.2))
        assert await auth.store.window_usage("sy:window:{acme}:rpm") == 0

    asyncio.run(scenario())


def test_budget_thresholds_fire_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    alerts = Tally("tenant", "scope", "period", "threshold")

    async def scenario() -> None:
        auth = _auth({"name": "acme", "budget": {"usd": 1.0, "period": "month"}}, alerts=alerts)
        tenant = auth.identify("Bearer sk-acme")
        for _ in range(3):
            held = await auth.admit(tenant, None, Need(0.2))
            await held.settle(0.2)
        with pytest.raises(BudgetExceeded):
            await auth.admit(tenant, None, Need(0.5))
        with pytest.raises(BudgetExceeded):
            await auth.admit(tenant, None, Need(0.5))

    with caplog.at_level(logging.WARNING, "switchyard.auth"):
        asyncio.run(scenario())
    assert alerts.values == {("acme", "tenant", "month", "0.5"): 1, ("acme", "tenant", "month", "1"): 1}
    assert sum("reached 50% of its $1 month budget" in r.getMessage() for r in caplog.records) == 1


def test_a_patch_changes_only_the_fields_it_names() -> None:
    async def scenario() -> None:
        registry = KeyRegistry(MemoryStore())
        record, _ = await registry.create(KeyCreate(tenant="acme", requests_per_minute=5, metadata={"team": "x"}))
        updated = await registry.update(record, KeyLimits.model_validate({"tokens_per_minute": 100}))
        assert updated.requests_per_minute == 5 and updated.tokens_per_minute == 100
        assert updated.metadata == {"team": "x"}
        cleared = await registry.update(updated, KeyLimits.model_validate({"requests_per_minute": None}))
        assert cleared.requests_per_minute is None
        assert [r.id for r in await registry.list()] == [record.id]

    asyncio.run(scenario())


def test_a_request_more_than_a_window_ever_takes_is_told_not_to_retry() -> None:
    """Waiting cannot admit a request that needs more tokens than its limit allows in a whole minute: its
    429 said `retry-after: 60`, so the openai SDKs waited a minute and sent it again, twice, for nothing."""
    from gateway.api.errors import error_response

    async def scenario() -> None:
        auth = _auth({"name": "acme", "tokens_per_minute": 1000})
        tenant = auth.identify("Bearer sk-acme")
        with pytest.raises(RateLimited, match="allows at all") as info:
            await auth.admit(tenant, None, Need(tokens=1001))
        assert "retry-after" not in info.value.headers
        assert info.value.headers["x-switchyard-limit"] == "tokens_per_minute"
        assert error_response(info.value).headers["x-should-retry"] == "false"
        await auth.admit(tenant, None, Need(tokens=900))
        with pytest.raises(RateLimited, match="retry after") as busy:  # this one fits once the window slides
            await auth.admit(tenant, None, Need(tokens=900))
        assert "x-should-retry" not in error_response(busy.value).headers

    asyncio.run(scenario())
