"""Tenants and keys, the in-memory store, and the circuit breaker."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth import OPEN_TENANT, Authenticator, Need, Tenant, hash_key
from gateway.config import TenantConfig
from gateway.errors import AuthenticationFailed, BudgetExceeded, PermissionDenied, RateLimited
from gateway.providers.health import DeploymentHealth, HealthBoard
from gateway.state import MemoryStore, spend_key


def _auth(**tenant: object) -> Authenticator:
    config = TenantConfig.model_validate({"name": "t", "api_key_sha256": hash_key("sk-1"), **tenant})
    return Authenticator([config], MemoryStore())


def test_without_tenants_everyone_is_the_open_tenant() -> None:
    assert Authenticator([], MemoryStore()).identify(None) is OPEN_TENANT


def test_keys_are_checked_against_their_hash() -> None:
    auth = _auth()
    assert auth.identify("Bearer sk-1").name == "t"
    with pytest.raises(AuthenticationFailed, match="invalid API key"):
        auth.identify("Bearer sk-2")
    with pytest.raises(AuthenticationFailed, match="missing API key"):
        auth.identify(None)


def test_a_tenant_is_pinned_to_its_policies() -> None:
    auth = _auth(policies=["cost-saver"])
    tenant = auth.identify("Bearer sk-1")
    auth.check_policy(tenant, "cost-saver")
    with pytest.raises(PermissionDenied, match="may not use policy 'balanced'"):
        auth.check_policy(tenant, "balanced")


def test_the_gate_refuses_a_policy_before_working_out_what_the_request_needs() -> None:
    async def scenario() -> list[str]:
        auth = _auth(policies=["cost-saver"], deployments=["small"], requests_per_minute=2)
        tenant = auth.identify("Bearer sk-1")
        asked: list[str] = []

        async def need() -> Need:  # the pipeline's cache lookup and routing
            asked.append("routed")
            return Need(tokens=10)
        with pytest.raises(PermissionDenied, match="may not use policy 'balanced'"):
            await auth.admit(tenant, "balanced", need)
        with pytest.raises(PermissionDenied, match="may not call deployment 'large'"):
            await auth.admit(tenant, None, need, pinned="large")
        assert asked == []
        with pytest.raises(RateLimited):  # refused requests were not counted: two pass, the third is over
            for _ in range(3):
                await auth.admit(tenant, "cost-saver", need)
        # a pinned call borrows the default policy's settings, not its permission
        await auth.admit(Tenant("t", policies=frozenset(), deployments=frozenset({"small"})), "balanced",
                         need, pinned="small")
        return asked
    assert asyncio.run(scenario()) == ["routed"] * 4


def test_budget_and_rate_limits_are_enforced() -> None:
    async def scenario() -> None:
        auth = _auth(budget_usd=0.01, requests_per_minute=2)
        tenant = auth.identify("Bearer sk-1")
        await auth.admit(tenant)
        await auth.admit(tenant)
        with pytest.raises(RateLimited):
            await auth.admit(tenant)
        await auth.store.incr_float(spend_key("t"), 0.02)
        with pytest.raises(BudgetExceeded):
            await auth.admit(tenant)

    asyncio.run(scenario())


def test_memory_store_expires_keys_and_stays_bounded() -> None:
    async def scenario() -> None:
        store = MemoryStore(max_keys=2)
        await store.set("a", b"1", ttl_s=0.01)
        await asyncio.sleep(0.02)
        assert await store.get("a") is None
        for key in ("b", "c", "d"):
            await store.set(key, b"x", ttl_s=60)
        assert await store.get("b") is None and await store.get("d") == b"x"

    asyncio.run(scenario())


def test_memory_store_makes_room_with_expiring_entries_never_with_lasting_ones() -> None:
    """Cached answers (any tenant can add them) must not push out an admin-made key's record."""
    async def scenario() -> None:
        store = MemoryStore(max_keys=2)
        await store.set("key", b"k")
        for key in ("b", "c", "d"):
            await store.set(key, b"x", ttl_s=60)
        assert await store.get("key") == b"k" and await store.get("d") == b"x"
        assert await store.get("b") is None and await store.get("c") is None

    asyncio.run(scenario())


def test_memory_store_is_bounded_in_bytes_too() -> None:
    """100,000 cached answers of a long completion each held gigabytes: the count alone did not bound it."""
    async def scenario() -> None:
        store = MemoryStore(max_keys=100, max_bytes=1_000)
        await store.set("key", b"k" * 400)  # lasting: never pushed out
        for i in range(5):
            await store.set(f"answer{i}", bytes([65 + i]) * 250, ttl_s=60)
        kept = [i for i in range(5) if await store.get(f"answer{i}") is not None]
        assert kept == [3, 4] and await store.get("key") == b"k" * 400  # 400 + 2 x 250 bytes
        for _ in range(10):  # writing one key again counts its bytes once
            await store.set("answer4", b"E" * 250, ttl_s=60)
        assert await store.get("answer3") is not None
        await store.set("answer3", b"D" * 10, ttl_s=60)  # a smaller value frees room
        await store.set("answer5", b"F" * 240, ttl_s=60)
        assert all([await store.get(k) for k in ("answer3", "answer4", "answer5", "key")])

    asyncio.run(scenario())


def test_circuit_opens_after_repeated_failures_and_half_opens_after_cooldown() -> None:
    health = DeploymentHealth(failure_threshold=3, cooldown_s=10)
    for _ in range(3):
        health.record_failure(now=100.0)
    assert health.is_open(105.0)
    assert not health.is_open(111.0)  # half-open: one trial call may go
    health.record_success(0.1)
    assert not health.is_open(112.0) and health.consecutive_failures == 0


def test_board_view_lists_open_circuits() -> None:
    board = HealthBoard(["a", "b"], failure_threshold=1)
    board["a"].record_failure(now=__import__("time").monotonic())
    assert board.view().open_circuits == frozenset({"a"})
