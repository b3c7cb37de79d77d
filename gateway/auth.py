"""API keys → tenant, with the tenant's allowed policies and pinnable deployments, spend budget and rate.

Keys are stored hashed (sha256) in the config, or read from an env var at start-up and hashed
then. With no tenants configured the gateway is open and every caller is the `default` tenant
(the embedded default). Gates raise. What a store outage does to the budget and rate gates is the
gateway's `on_store_outage` setting (`on_outage`): refuse with 503 (`fail_closed`, the default) or
let the request through (`fail_open`); both are logged, at most once per `OUTAGE_LOG_EVERY_S`.
Tenants without limits never touch the store here, so an outage does not concern them.

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

from gateway.config import OutageSetting, TenantConfig
from gateway.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    ConfigError,
    PermissionDenied,
    RateLimited,
    StoreOutage,
)
from gateway.state import Budget, Rate, Store, StoreUnavailable, holds_key, rate_key, spend_key

log = logging.getLogger("switchyard.auth")

OUTAGE_LOG_EVERY_S = 10.0
OUTAGE_RETRY_AFTER_S = 2


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    policies: frozenset[str] | None = None  # None: any policy
    default_policy: str | None = None
    budget_usd: float | None = None
    requests_per_minute: int | None = None
    deployments: frozenset[str] | None = None  # pinnable by name; None: any deployment
    log_prompts: bool = False  # request records keep the prompt text, else only its sha256

    def may_use(self, policy: str) -> bool:
        return self.policies is None or policy in self.policies

    def may_pin(self, deployment: str) -> bool:
        return self.deployments is None or deployment in self.deployments

    @property
    def limited(self) -> bool:
        """Whether the budget and rate gates need the store for this tenant."""
        return self.budget_usd is not None or self.requests_per_minute is not None


def pinnable(config: TenantConfig) -> frozenset[str] | None:
    """The deployments a tenant may name: as listed; else all for an open tenant and none for one
    restricted to some policies (pinning must not be a way around the policy allow-list)."""
    if config.deployments is not None:
        return frozenset(config.deployments)
    return None if config.policies is None else frozenset()


def tenant_from_config(config: TenantConfig) -> Tenant:
    return Tenant(config.name, policies=frozenset(config.policies) if config.policies is not None else None,
                  default_policy=config.default_policy, budget_usd=config.budget_usd,
                  requests_per_minute=config.requests_per_minute, deployments=pinnable(config),
                  log_prompts=config.log_prompts)


@dataclass(slots=True)
class LogThrottle:
    """At most one line per `every_s`; the lines in between are counted, not lost."""

    every_s: float = OUTAGE_LOG_EVERY_S
    next_at: float = 0.0
    suppressed: int = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            return False
        self.next_at = now + self.every_s
        return True


def on_outage(setting: OutageSetting, tenant: Tenant, what: str, exc: Exception,
              throttle: LogThrottle | None = None) -> None:
    """The store could not answer a budget or rate check: refuse (fail_closed) or carry on (fail_open)."""
    if throttle is None or throttle.due():
        more = f" ({throttle.suppressed} more since the last line)" if throttle and throttle.suppressed else ""
        verb = "refused" if setting == "fail_closed" else "let through unchecked"
        log.warning("store unavailable for the %s of tenant %s: request %s (on_store_outage: %s): %s%s",
                    what, tenant.name, verb, setting, exc, more)
        if throttle is not None:
            throttle.suppressed = 0
    if setting == "fail_closed":
        raise StoreOutage(f"the {what} of tenant '{tenant.name}' cannot be checked right now; retry shortly",
                          headers={"retry-after": str(OUTAGE_RETRY_AFTER_S)})


def _log_refusal(tenant: Tenant, verdict: str, spent: float, reserved: float, asked: float) -> None:
    if verdict == "budget":
        log.warning("tenant %s refused: over its budget", tenant.name, extra={
            "event": "budget_refused", "tenant": tenant.name, "budget_usd": tenant.budget_usd,
            "spent_usd": round(spent, 12), "reserved_usd": round(reserved, 12), "request_worst_case_usd": asked})
    else:
        log.warning("tenant %s refused: over its request rate", tenant.name, extra={
            "event": "rate_refused", "tenant": tenant.name, "requests_per_minute": tenant.requests_per_minute})


OPEN_TENANT = Tenant("default")


def _holds(digest: str | None, authorization: str | None) -> bool:
    """Whether `Authorization: Bearer <key>` carries the key whose sha256 is `digest`."""
    scheme, _, key = (authorization or "").partition(" ")
    if digest is None or scheme.lower() != "bearer" or not key.strip():
        return False
    return hmac.compare_digest(digest, hash_key(key.strip()))


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
    def __init__(self, tenants: list[TenantConfig], store: Store,
                 on_store_outage: OutageSetting = "fail_closed", admin_sha256: str | None = None,
                 viewer_sha256: str | None = None) -> None:
        self.store = store
        self._admin = admin_sha256
        self._viewer = viewer_sha256
        self.on_store_outage: OutageSetting = on_store_outage
        self._outage_log = LogThrottle()
        self._by_hash: dict[str, Tenant] = {}
        for t in tenants:
            digest = t.api_key_sha256 or hash_key(os.environ.get(t.api_key_env or "", ""))
            if not t.api_key_sha256 and not os.environ.get(t.api_key_env or ""):
                log.warning("tenant %s: env var %s is empty; the tenant cannot log in", t.name, t.api_key_env)
                continue
            if digest in self._by_hash:  # the config validates sha256 keys; env keys are only known now
                raise ConfigError(f"tenants '{self._by_hash[digest].name}' and '{t.name}' have the same API key")
            self._by_hash[digest] = tenant_from_config(t)
        self.open = not tenants
        # Whether a store outage refuses requests: readiness depends on it, so it is known up front.
        self.outage_refuses = on_store_outage == "fail_closed" and any(
            t.limited for t in self._by_hash.values())

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

    def is_admin(self, authorization: str | None) -> bool:
        """Whether the caller holds the admin key (`admin_api_key_sha256`), which sees every tenant."""
        return _holds(self._admin, authorization)

    def may_view(self, authorization: str | None) -> bool:
        """Whether the caller may read the dashboard: the admin key or the viewer key; on an open
        gateway (whose spend anyone may read) anyone, unless one of those keys is configured."""
        if self._admin is None and self._viewer is None:
            return self.open
        return _holds(self._admin, authorization) or _holds(self._viewer, authorization)

    @staticmethod
    def check_policy(tenant: Tenant, policy: str) -> None:
        if not tenant.may_use(policy):
            allowed = ", ".join(sorted(tenant.policies or ()))
            raise PermissionDenied(f"tenant '{tenant.name}' may not use policy '{policy}' (allowed: {allowed})")

    @staticmethod
    def check_pin(tenant: Tenant, deployment: str) -> None:
        """Naming a deployment skips routing; only the tenant's `deployments` list allows it."""
        if not tenant.may_pin(deployment):
            allowed = ", ".join(sorted(tenant.deployments or ())) or "none"
            raise PermissionDenied(f"tenant '{tenant.name}' may not call deployment '{deployment}' by name "
                                   f"(allowed: {allowed}); use 'auto' or 'router/<policy>'",
                                   code="deployment_not_allowed", param="model")

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
            on_outage(self.on_store_outage, tenant, "budget or rate limit", exc, self._outage_log)
            return Reservation(self.store, tenant.name)  # fail_open: spend is still settled, unheld
        if got.verdict != "ok":
            _log_refusal(tenant, got.verdict, got.spent, got.reserved, budget.amount if budget else 0.0)
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

    async def hold(self, tenant: Tenant, reserve_usd: float, ttl_s: float) -> Reservation | None:
        """A budget hold for work the tenant did not ask for in this request (shadow evaluation):
        not counted in its rate window, and None (do not spend) when the budget is short or the
        store cannot say."""
        if tenant.budget_usd is None:
            return Reservation(self.store, tenant.name)
        budget = Budget(spend_key(tenant.name), holds_key(tenant.name), os.urandom(8).hex(),
                        max(0.0, reserve_usd), tenant.budget_usd, ttl_s)
        try:
            got = await self.store.reserve(budget, None)
        except StoreUnavailable:
            return None
        if got.verdict != "ok":
            return None
        return Reservation(self.store, tenant.name, budget.hold_id if budget.amount > 0 else None, budget.amount)
