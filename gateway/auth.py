"""API keys → tenant, with the tenant's allowed policies, spend budget and request rate.

Keys are stored hashed (sha256) in the config, or read from an env var at start-up and hashed
then. With no tenants configured the gateway is open and every caller is the `default` tenant
(the embedded default). Gates raise; a store outage does not lock tenants out (fail open, logged).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass

from gateway.config import TenantConfig
from gateway.errors import AuthenticationFailed, BudgetExceeded, ConfigError, PermissionDenied, RateLimited
from gateway.state import Store, StoreUnavailable

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


def spend_key(tenant: str) -> str:
    return f"sy:spend:{tenant}"


class Authenticator:
    def __init__(self, tenants: list[TenantConfig], store: Store) -> None:
        self.store = store
        self._by_hash: dict[str, Tenant] = {}
        for t in tenants:
            digest = t.api_key_sha256 or hash_key(os.environ.get(t.api_key_env or "", ""))
            if not t.api_key_sha256 and not os.environ.get(t.api_key_env or ""):
                log.warning("tenant %s: env var %s is empty; the tenant cannot log in", t.name, t.api_key_env)
                continue
            if digest in self._by_hash:  # the config validates sha256 keys; env keys are only known now
                raise ConfigError(f"tenants '{self._by_hash[digest].name}' and '{t.name}' have the same API key")
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

    async def admit(self, tenant: Tenant) -> None:
        """Budget and rate gates. Skipped entirely for tenants without limits (no store round trip)."""
        try:
            if tenant.budget_usd is not None:
                spent = await self.store.get_float(spend_key(tenant.name))
                if spent >= tenant.budget_usd:
                    raise BudgetExceeded(f"tenant '{tenant.name}' has spent ${spent:.4f} of its "
                                         f"${tenant.budget_usd:g} budget")
            if tenant.requests_per_minute is not None:
                window = int(time.time() // 60)
                count = await self.store.incr(f"sy:rate:{tenant.name}:{window}", 120)
                if count > tenant.requests_per_minute:
                    raise RateLimited(f"tenant '{tenant.name}' is over {tenant.requests_per_minute} "
                                      "requests per minute", headers={"retry-after": str(60 - int(time.time()) % 60)})
        except StoreUnavailable as exc:
            log.warning("budget/rate check skipped for %s, store unavailable: %s", tenant.name, exc)
