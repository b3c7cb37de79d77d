"""API keys → tenant, with the tenant's allowed policies and pinnable deployments, spend budget and rate.

Keys are stored hashed (sha256) in the config, or read from an env var at start-up and hashed
then. With no tenants configured the gateway is open and every caller is the `default` tenant
(the embedded default). Gates raise. What a store outage does to the budget and rate gates is the
gateway's `on_store_outage` setting (`on_outage`): refuse with 503 (`fail_closed`, the default) or
let the request through (`fail_open`); both are logged, at most once per `gateway.log_throttle.OUTAGE_LOG_EVERY_S`.
Tenants without limits never touch the store here, so an outage does not concern them.

Admin-created keys (`gateway.keys`) are found by `authenticate`, which also accepts config keys;
such a key narrows its tenant and adds limits of its own.

`admit` is the one gate a request passes: it checks that the tenant may use the policy (or call the
deployment it names), then reserves the request's worst-case cost against the
tenant's budget and its key's (both must hold, each in its current period), and counts the
request (and its worst-case tokens) in every sliding window that applies, in one store round
trip, before any upstream call (`gateway.admission`). The returned `Reservation` is settled exactly
once with the real cost and tokens (by the ledger), or released when the request fails. Budget
thresholds (`budget_alerts`) reached for the first time in a period log a warning and count in
`switchyard.budget.alerts`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.admission import Limits, Reservation, Scope, plan_admission, refusal
from gateway.config import OutageSetting, TenantConfig
from gateway.errors import (
    AuthenticationFailed,
    ConfigError,
    PermissionDenied,
    StoreOutage,
)
from gateway.keys import KeyRecord, KeyRegistry, key_id_of, matches
from gateway.log_throttle import LogThrottle
from gateway.state import Store, StoreUnavailable

__all__ = ["NOTHING", "OPEN_TENANT", "Authenticator", "LogThrottle", "Need", "Reservation", "Tenant", "hash_key",
           "on_outage"]

log = logging.getLogger("switchyard.auth")

OUTAGE_RETRY_AFTER_S = 2


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    policies: frozenset[str] | None = None  # None: any policy
    default_policy: str | None = None
    budget_usd: float | None = None
    requests_per_minute: int | None = None
    deployments: frozenset[str] | None = None  # pinnable by name; None: any deployment
    log_prompts: bool = False  # request records keep the prompt text, else only its keyed digest
    budget_period: str = "total"
    tokens_per_minute: int | None = None
    key_id: str | None = None  # the admin-created key the caller used, if any
    max_concurrent_requests: int | None = None  # in flight at once per worker (None: the gateway's default)
    key_limits: Limits | None = None

    def may_use(self, policy: str) -> bool:
        return self.policies is None or policy in self.policies

    def may_pin(self, deployment: str) -> bool:
        return self.deployments is None or deployment in self.deployments

    @property
    def limits(self) -> Limits:
        return Limits(self.budget_usd, self.budget_period, self.requests_per_minute,  # type: ignore[arg-type]
                      self.tokens_per_minute)

    @property
    def limited(self) -> bool:
        """Whether the budget and rate gates need the store for this tenant."""
        return (self.budget_usd is not None or self.requests_per_minute is not None
                or self.tokens_per_minute is not None or (self.key_limits is not None and self.key_limits.any))

    @property
    def holds_budget(self) -> bool:
        """Whether a request must reserve its worst-case cost (a budget applies)."""
        return self.budget_usd is not None or (self.key_limits is not None and self.key_limits.budget_usd is not None)

    @property
    def counts_tokens(self) -> bool:
        return self.tokens_per_minute is not None or (
            self.key_limits is not None and self.key_limits.tokens_per_minute is not None)

    def scopes(self) -> list[Scope]:
        scopes = [Scope(self.name, None, self.limits)]
        if self.key_id is not None and self.key_limits is not None:
            scopes.append(Scope(self.name, self.key_id, self.key_limits))
        return scopes


def pinnable(config: TenantConfig) -> frozenset[str] | None:
    """The deployments a tenant may name: as listed; else all for an open tenant and none for one
    restricted to some policies (pinning must not be a way around the policy allow-list)."""
    if config.deployments is not None:
        return frozenset(config.deployments)
    return None if config.policies is None else frozenset()


def tenant_from_config(config: TenantConfig) -> Tenant:
    budget = config.spend_budget
    return Tenant(config.name, policies=frozenset(config.policies) if config.policies is not None else None,
                  default_policy=config.default_policy, budget_usd=budget.usd if budget else None,
                  budget_period=budget.period if budget else "total",
                  requests_per_minute=config.requests_per_minute, deployments=pinnable(config),
                  log_prompts=config.log_prompts, tokens_per_minute=config.tokens_per_minute,
                  max_concurrent_requests=config.max_concurrent_requests)


def _narrowed(mine: frozenset[str] | None, theirs: list[str] | None) -> frozenset[str] | None:
    if theirs is None:
        return mine
    return frozenset(theirs) if mine is None else mine & frozenset(theirs)


def tenant_for_key(record: KeyRecord, base: Tenant | None) -> Tenant:
    """The caller of a virtual key: its tenant (from the config, if there) narrowed by the key."""
    base = base or Tenant(record.tenant, deployments=None if record.policies is None else frozenset())
    budget = record.spend_budget
    limits = Limits(budget.usd if budget else None, budget.period if budget else "total",
                    record.requests_per_minute, record.tokens_per_minute)
    pinned = _narrowed(base.deployments, record.deployments)
    if record.deployments is None and record.policies is not None:
        pinned = frozenset()  # as for tenants: a key held to some policies pins nothing it is not given
    return replace(base, policies=_narrowed(base.policies, record.policies), deployments=pinned,
                   key_id=record.id, key_limits=limits)


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


@dataclass(frozen=True, slots=True)
class Need:
    """The most one request may use, held against its budgets and windows until it settles."""

    usd: float = 0.0           # its worst-case cost
    tokens: int = 0            # its worst-case tokens (prompt + max output, every call)
    ttl_s: float = DEFAULT_HOLD_TTL_S  # how long the hold lasts if never settled


NOTHING = Need()  # a cache hit, or a caller without budget or token limits: only counted as a request


class Authenticator:
    def __init__(self, tenants: list[TenantConfig], store: Store,
                 on_store_outage: OutageSetting = "fail_closed", admin_sha256: str | None = None,
                 viewer_sha256: str | None = None, *, keys: KeyRegistry | None = None,
                 budget_alerts: Sequence[float] = (), alerts: Any = None) -> None:
        self.store = store
        self.keys = keys if keys is not None else KeyRegistry(store)
        self.budget_alerts = tuple(budget_alerts)
        self._alerts = alerts  # a `Tally` (tenant, scope, period, threshold), or None
        self._key_tenants: dict[str, tuple[KeyRecord, Tenant]] = {}
        self._admin = admin_sha256
        self._viewer = viewer_sha256
        self.on_store_outage: OutageSetting = on_store_outage
        self._outage_log = LogThrottle()
        self._key_outage_log = LogThrottle()
        self._by_hash: dict[str, Tenant] = {}
        self._by_name = {t.name: tenant_from_config(t) for t in tenants}
        for t in tenants:
            digest = t.api_key_sha256 or hash_key(os.environ.get(t.api_key_env or "", ""))
            if not t.api_key_sha256 and not os.environ.get(t.api_key_env or ""):
                log.warning("tenant %s: env var %s is empty; the tenant cannot log in", t.name, t.api_key_env)
                continue
            if digest in self._by_hash:  # the config validates sha256 keys; env keys are only known now
                raise ConfigError(f"tenants '{self._by_hash[digest].name}' and '{t.name}' have the same API key")
            self._by_hash[digest] = tenant_from_config(t)
        # One key, one role: a tenant's key that is also the admin's (or the viewer's) would make that
        # tenant the admin of every tenant's keys and spend; the admin and the viewer are not tenants.
        roles = [(r, d.lower()) for r, d in (("admin_api_key_sha256", admin_sha256),
                                             ("viewer_api_key_sha256", viewer_sha256)) if d]
        for role, digest in roles:
            if digest in self._by_hash:
                raise ConfigError(f"{role} is the API key of tenant '{self._by_hash[digest].name}': "
                                  f"give each role its own key")
        if len(roles) == 2 and roles[0][1] == roles[1][1]:
            raise ConfigError("admin_api_key_sha256 and viewer_api_key_sha256 are the same key: give each its own")
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
        # A dict lookup by the key's SHA-256, not a constant-time scan over every tenant: what its
        # timing could reveal is where a *hash* of a valid key lies, which does not help forge a key,
        # and a scan costs a compare per configured tenant on every request.
        tenant = self._by_hash.get(hash_key(key.strip()))
        if tenant is None:
            if self.is_admin(authorization) or self.is_viewer(authorization):
                # a valid key, though no tenant's: "invalid API key" sent its holder looking for a typo
                raise PermissionDenied("this needs a tenant's key: the admin and viewer keys belong to no tenant",
                                       code="tenant_key_required")
            raise AuthenticationFailed("invalid API key")
        return tenant

    async def authenticate(self, authorization: str | None) -> Tenant:
        """`identify`, plus admin-created keys (`sk-sy-...`), which are looked up in the store."""
        scheme, _, key = (authorization or "").partition(" ")
        key_id = key_id_of(key.strip()) if scheme.lower() == "bearer" else None
        if key_id is None:
            return self.identify(authorization)
        try:
            was_cached = self.keys.cached(key_id)
            record = await self.keys.lookup(key_id)
            if was_cached and record is not None and not matches(record, key.strip()):
                # Rotated on another replica since this one read it: the cached record has the old secret's
                # hash, and the new key, which its holder uses at once, was refused for up to the cache's TTL.
                record = await self.keys.lookup(key_id, fresh=True)
        except StoreUnavailable as exc:
            # What the store said (its host and port) is logged for the operator, never sent: this caller
            # has shown no valid key yet, and a guess shaped like one got this far.
            if self._key_outage_log.due():
                log.warning("store unavailable: admin-made API keys cannot be checked: %s", exc)
            raise StoreOutage("API keys cannot be checked right now; retry shortly",
                              headers={"retry-after": str(OUTAGE_RETRY_AFTER_S)}) from None
        if record is None or not matches(record, key.strip()):
            raise AuthenticationFailed("invalid API key")
        status = record.status(time.time())
        if status != "active":
            raise AuthenticationFailed(f"API key {record.prefix}... is {status}", code=f"key_{status}")
        known = self._key_tenants.get(key_id)
        if known is not None and known[0] is record:
            return known[1]
        tenant = tenant_for_key(record, self._by_name.get(record.tenant))
        self._key_tenants[key_id] = (record, tenant)
        return tenant

    def configured(self, name: str) -> Tenant | None:
        """The tenant of that name in the config file (None: it is named by admin-made keys alone)."""
        return self._by_name.get(name)

    @property
    def has_admin_key(self) -> bool:
        return self._admin is not None

    def is_admin(self, authorization: str | None) -> bool:
        """Whether the caller holds the admin key (`admin_api_key_sha256`), which sees every tenant."""
        return _holds(self._admin, authorization)

    def is_viewer(self, authorization: str | None) -> bool:
        """Whether the caller holds the dashboard's viewer key (`viewer_api_key_sha256`): valid, not a tenant."""
        return _holds(self._viewer, authorization)

    def may_view(self, authorization: str | None) -> bool:
        """Whether the caller may read the dashboard: the admin key or the viewer key; on an open
        gateway (whose spend anyone may read) anyone, unless one of those keys is configured."""
        if self._admin is None and self._viewer is None:
            return self.open
        return self.is_admin(authorization) or self.is_viewer(authorization)

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

    def permit(self, tenant: Tenant, policy: str | None, pinned: str | None = None) -> None:
        """May the tenant use `policy`, or call `pinned` by name? Pinning is governed by the tenant's
        `deployments` alone, never by its policy allow-list (a pinned call only borrows the default
        policy's settings, so that policy is not checked)."""
        if pinned is not None:
            self.check_pin(tenant, pinned)
        elif policy is not None:
            self.check_policy(tenant, policy)

    async def admit(self, tenant: Tenant, policy: str | None = None,
                    need: Need | Callable[[], Awaitable[Need]] = NOTHING, *, pinned: str | None = None
                    ) -> Reservation:
        """The gate every request passes before any upstream call: permission (`permit`), then the
        budget and rate gates for `need`, in one store round trip. `need` may be worked out only
        once the tenant is known to be allowed (the pipeline looks up the cache and routes there:
        a refused caller costs neither, nor counts in a policy's calibration). Raises the
        request's 403, 429 or 503; else returns the `Reservation` to settle exactly once."""
        self.permit(tenant, policy, pinned)
        wanted = need if isinstance(need, Need) else await need()
        return await self._reserve(tenant, wanted)

    async def _reserve(self, tenant: Tenant, need: Need) -> Reservation:
        """Each budget (the tenant's, the key's) gets `need.usd` (the request's worst-case cost) held
        until the reservation is settled or `need.ttl_s` passes; each tokens-per-minute window counts
        `need.tokens` (prompt + max output) until settled with the real count. Callers without
        limits skip the store entirely."""
        if not tenant.limited:
            return Reservation(self.store, tenant.name)  # settles spend without a hold
        reserve_usd = need.usd
        plan = plan_admission(tenant.scopes(), os.urandom(8).hex(), reserve_usd, need.tokens, need.ttl_s,
                              self.budget_alerts)
        try:
            got = await self.store.admit(plan.admission)
        except StoreUnavailable as exc:
            on_outage(self.on_store_outage, tenant, "budget or rate limit", exc, self._outage_log)
            # fail_open: nothing is held, but the spend is still settled into every budget that applies
            # (the key's, a period's), not only the tenant's total, once the store is back
            return Reservation(self.store, tenant.name, spends=plan.spends)
        self._report_alerts(plan.budget_scopes, got.alerts)
        if got.verdict != "ok":
            raise refusal(plan, got)
        held = any(b.amount > 0 for b in plan.admission.budgets)
        return Reservation(self.store, tenant.name, plan.admission.hold_id if held else None,
                           max(0.0, reserve_usd) if held else 0.0, spends=plan.spends,
                           tokens=tuple((key, got.step, n) for key, n in plan.token_windows),
                           expires_at=time.monotonic() + need.ttl_s, ttl_s=need.ttl_s)

    def _report_alerts(self, scopes: Sequence[Scope], alerts: Sequence[tuple[int, float]]) -> None:
        for index, threshold in alerts:
            scope = scopes[index]
            limits = scope.limits
            log.warning("%s reached %g%% of its $%g %s budget", scope.label, threshold * 100, limits.budget_usd,
                        limits.period, extra={"event": "budget_alert", "tenant": scope.tenant,
                                              "key_id": scope.key_id, "threshold": threshold,
                                              "budget_usd": limits.budget_usd, "period": limits.period})
            if self._alerts is not None:
                self._alerts.add((scope.tenant, "tenant" if scope.key_id is None else "key", limits.period,
                                  f"{threshold:g}"))

    async def hold(self, tenant: Tenant, reserve_usd: float, ttl_s: float) -> Reservation | None:
        """A budget hold for work the tenant did not ask for in this request (shadow evaluation):
        not counted in its rate windows, and None (do not spend) when a budget is short or the
        store cannot say."""
        if not tenant.holds_budget:
            return Reservation(self.store, tenant.name)
        scopes = [Scope(s.tenant, s.key_id, Limits(s.limits.budget_usd, s.limits.period)) for s in tenant.scopes()]
        plan = plan_admission(scopes, os.urandom(8).hex(), reserve_usd, 0, ttl_s, ())
        try:
            got = await self.store.admit(plan.admission)
        except StoreUnavailable:
            return None
        if got.verdict != "ok":
            return None
        held = any(b.amount > 0 for b in plan.admission.budgets)
        return Reservation(self.store, tenant.name, plan.admission.hold_id if held else None,
                           max(0.0, reserve_usd) if held else 0.0, spends=plan.spends,
                           expires_at=time.monotonic() + ttl_s, ttl_s=ttl_s)
