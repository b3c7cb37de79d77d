"""API keys → tenant, with the tenant's allowed policies, spend budget and request rate.

Keys are stored hashed (sha256) in the config, or read from an env var at start-up and hashed
then. With no tenants configured the gateway is open and every caller is the `default` tenant
(the embedded default). Gates raise; a store outage does not lock tenants out (fail open, logged).

`admit` is the one gate for budget and rate: it reserves the request's worst-case cost against the
tenant's budget (and counts it in its rate window) in one store round trip, before any upstream
call. The returned `Reservation` is settled exactly once with the real cost (by the ledger), or
released when the request fails.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass, field

from gateway.config import TenantConfig
from gateway.errors import AuthenticationFailed, BudgetExceeded, PermissionDenied, RateLimited
from gateway.state import Budget, Rate, Store, StoreUnavailable, holds_key, rate_key, spend_key

log = logging.getLogger("switchyard.auth")


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    policies: frozenset[str] | None = None  # None: any policy
    default_policy: str | None = None
    budget_usd: float | None = None
    requests_per_minute: int | None = None

    def may_use(self, policy: str) -> bool:
        return self.policies is None or policy in self.policies


OPEN_TENANT = Tenant("default")


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


# A hold outlives its request's deadline by this much before it expires on its own.
HOLD_MARGIN_S = 30.0
DEFAULT_HOLD_TTL_S = 300.0


@dataclass(slots=True)
class Reservation:
    """What `admit` held for one request; `settle` runs once, whatever happens after."""

    store: Store | None
    tenant: str
    hold_id: str | None = None  # None: nothing held (no budget, a cache hit, or the store was down)
    amount: float = 0.0
    settled: bool = field(default=False)

    async def settle(self, actual_usd: float) -> None:
        """Record the real cost and drop the hold, atomically; later calls do nothing."""
        if self.settled or self.store is None:
            return
        self.settled = True
        await self.store.settle(spend_key(self.tenant), holds_key(self.tenant), self.hold_id, actual_usd)

    async def release(self) -> None:
        """The request failed before costing anything we know of: give the hold back."""
        if self.settled or self.store is None or self.hold_id is None:
            self.settled = True
            return
        try:
            await self.settle(0.0)
        except StoreUnavailable as exc:  # the hold expires on its own
            log.warning("hold %s of %s not released (store unavailable): %s", self.hold_id, self.tenant, exc)


class Authenticator:
    def __init__(self, tenants: list[TenantConfig], store: Store) -> None:
        self.store = store
        self._by_hash: dict[str, Tenant] = {}
        for t in tenants:
            digest = t.api_key_sha256 or hash_key(os.environ.get(t.api_key_env or "", ""))
            if not t.api_key_sha256 and not os.environ.get(t.api_key_env or ""):
                log.warning("tenant %s: env var %s is empty; the tenant cannot log in", t.name, t.api_key_env)
                continue
            self._by_hash[digest] = Tenant(t.name, frozenset(t.policies) if t.policies is not None else None,
                                           t.default_policy, t.budget_usd, t.requests_per_minute)
        self.open = not tenants

    def identify(self, authorization: str | None) -> Tenant:
        if self.open:
            return OPEN_TENANT
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_key(key.strip())
        for known, tenant in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return tenant
        raise AuthenticationFailed("invalid API key")

    @staticmethod
    def check_policy(tenant: Tenant, policy: str) -> None:
        if not tenant.may_use(policy):
            allowed = ", ".join(sorted(tenant.policies or ()))
            raise PermissionDenied(f"tenant '{tenant.name}' may not use policy '{policy}' (allowed: {allowed})")

    async def admit(self, tenant: Tenant, reserve_usd: float = 0.0, ttl_s: float = DEFAULT_HOLD_TTL_S) -> Reservation:
        """Budget and rate gates in one store round trip. A tenant with a budget gets `reserve_usd`
        (the request's worst-case cost) held until the reservation is settled or `ttl_s` passes.
        Tenants without limits skip the store entirely."""
        if tenant.budget_usd is None and tenant.requests_per_minute is None:
            return Reservation(self.store, tenant.name)  # settles spend without a hold
        budget = rate = None
        if tenant.budget_usd is not None:
            budget = Budget(spend_key(tenant.name), holds_key(tenant.name), os.urandom(8).hex(),
                            max(0.0, reserve_usd), tenant.budget_usd, ttl_s)
        if tenant.requests_per_minute is not None:
            rate = Rate(rate_key(tenant.name, int(time.time() // 60)), tenant.requests_per_minute)
        try:
            got = await self.store.reserve(budget, rate)
        except StoreUnavailable as exc:
            log.warning("budget/rate check skipped for %s, store unavailable: %s", tenant.name, exc)
            return Reservation(self.store, tenant.name)
        if got.verdict == "budget":
            assert budget is not None
            left = max(0.0, budget.limit - got.spent - got.reserved)
            raise BudgetExceeded(f"tenant '{tenant.name}' has spent ${got.spent:.6f} of its ${budget.limit:g} "
                                 f"budget and holds ${got.reserved:.6f} for requests in flight; this request "
                                 f"may cost up to ${budget.amount:.6f}, ${left:.6f} is left")
        if got.verdict == "rate":
            raise RateLimited(f"tenant '{tenant.name}' is over {tenant.requests_per_minute} requests per minute",
                              headers={"retry-after": str(60 - int(time.time()) % 60)})
        held = budget is not None and budget.amount > 0
        return Reservation(self.store, tenant.name, budget.hold_id if held and budget else None,
                           budget.amount if held and budget else 0.0)
