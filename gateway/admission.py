"""What one request is admitted against: its tenant's and its key's budgets and rate windows.

`plan_admission` turns a caller (`Tenant`, with its key's `KeyLimits` if it came with a virtual key)
into the store's `Admission`: a `BudgetHold` per budget (keys of the current UTC period), a
`Window` per requests/tokens-per-minute limit. `refusal` turns the store's verdict into the
client's error, naming the limit; `Reservation` settles the request exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.admission_store import Admission, Admitted, BudgetHold, Settlement, Window
from gateway.errors import BudgetExceeded, GatewayError, RateLimited
from gateway.state import (
    Store,
    StoreUnavailable,
    alerts_key,
    holds_key,
    period_spend_key,
    scoped_holds_key,
    spend_key,
    window_key,
)
from gateway.windows import Period, period_id, retry_after_s, seconds_to_reset

if TYPE_CHECKING:
    from gateway.executor.result import CallRecord

log = logging.getLogger("switchyard.auth")
# A retried settlement trusts a missing hold as "already settled" only this long before the hold
# would lapse on its own (after that, missing may just mean expired, and the spend is added).
_LAPSE_MARGIN_S = 5.0
# A stream outlives any bound on its duration known in advance (it is only held to a pause between
# chunks): while it runs, its hold is renewed at most this often, so that it does not lapse and
# free budget the stream will still spend. Each chunk comes within its deployment's timeout_s, and
# a hold lasts that plus `HOLD_MARGIN_S` at least, so a renewal comes before the hold lapses.
RENEW_EVERY_S = 5.0

# A period's spend and alert marks are kept this long after the period's end (then expire).
KEEP_AFTER_PERIOD_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Limits:
    """One scope's limits: a tenant's (from the config) or a virtual key's."""

    budget_usd: float | None = None
    period: Period = "total"
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @property
    def any(self) -> bool:
        return (self.budget_usd is not None or self.requests_per_minute is not None
                or self.tokens_per_minute is not None)


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose limit: the tenant (`key_id` None) or one of its keys."""

    tenant: str
    key_id: str | None
    limits: Limits

    @property
    def label(self) -> str:
        return f"tenant '{self.tenant}'" if self.key_id is None else f"key '{self.key_id}' of tenant '{self.tenant}'"


def budget_hold(scope: Scope, amount: float, now: float, thresholds: Sequence[float]) -> BudgetHold:
    limits = scope.limits
    assert limits.budget_usd is not None
    pid = period_id(limits.period, now)
    left = seconds_to_reset(limits.period, now)
    keep_ms = 0 if left is None else int((left + KEEP_AFTER_PERIOD_S) * 1000)
    return BudgetHold(period_spend_key(scope.tenant, scope.key_id, pid), scoped_holds_key(scope.tenant, scope.key_id),
                      alerts_key(scope.tenant, scope.key_id, pid), max(0.0, amount), limits.budget_usd, keep_ms,
                      tuple(thresholds))


@dataclass(frozen=True, slots=True)
class Plan:
    """An admission and what each of its entries stands for, to explain a refusal."""

    admission: Admission
    budget_scopes: tuple[Scope, ...]
    window_names: tuple[tuple[Scope, str], ...]  # (scope, "requests_per_minute" | "tokens_per_minute")
    spends: tuple[tuple[str, str, int], ...]
    token_windows: tuple[tuple[str, int], ...]  # (window key, reserved tokens)


def plan_admission(scopes: Sequence[Scope], hold_id: str, amount: float, tokens: int, ttl_s: float,
                   thresholds: Sequence[float], now: float | None = None) -> Plan:
    now = time.time() if now is None else now
    budgets: list[BudgetHold] = []
    budget_scopes: list[Scope] = []
    windows: list[Window] = []
    names: list[tuple[Scope, str]] = []
    tenant = scopes[0].tenant
    spends: dict[str, tuple[str, str, int]] = {spend_key(tenant): (spend_key(tenant), holds_key(tenant), 0)}
    token_windows: list[tuple[str, int]] = []
    for scope in scopes:
        limits = scope.limits
        if limits.budget_usd is not None:
            hold = budget_hold(scope, amount, now, thresholds)
            budgets.append(hold)
            budget_scopes.append(scope)
            spends[hold.spend_key] = (hold.spend_key, hold.holds_key, hold.keep_ms)
        if limits.requests_per_minute is not None:
            windows.append(Window(window_key(scope.tenant, scope.key_id, "rpm"), limits.requests_per_minute, 1))
            names.append((scope, "requests_per_minute"))
        if limits.tokens_per_minute is not None:
            key = window_key(scope.tenant, scope.key_id, "tpm")
            windows.append(Window(key, limits.tokens_per_minute, tokens))
            names.append((scope, "tokens_per_minute"))
            if tokens > 0:  # a cache hit reserves none: nothing to settle
                token_windows.append((key, tokens))
    return Plan(Admission(hold_id, ttl_s, tuple(budgets), tuple(windows)), tuple(budget_scopes), tuple(names),
                tuple(spends.values()), tuple(token_windows))


def refusal(plan: Plan, got: Admitted) -> GatewayError:
    """The 429 for a refused admission, naming the limit (and when to retry)."""
    if got.verdict == "budget":
        scope = plan.budget_scopes[got.index]
        hold = plan.admission.budgets[got.index]
        limits = scope.limits
        left = max(0.0, hold.limit - got.spent - got.reserved)
        period = "" if limits.period == "total" else f" {limits.period}ly".replace("dayly", "daily")
        reset = seconds_to_reset(limits.period, time.time())
        log.warning("%s refused: over its budget", scope.label, extra={
            "event": "budget_refused", "tenant": scope.tenant, "key_id": scope.key_id, "budget_usd": hold.limit,
            "period": limits.period, "spent_usd": round(got.spent, 12), "reserved_usd": round(got.reserved, 12),
            "request_worst_case_usd": hold.amount})
        return BudgetExceeded(
            f"{scope.label} has spent ${got.spent:.6f} of its ${hold.limit:g}{period} budget and holds "
            f"${got.reserved:.6f} for requests in flight; this request may cost up to ${hold.amount:.6f}, "
            f"${left:.6f} is left", headers={"retry-after": str(int(reset) + 1)} if reset is not None else None)
    scope, name = plan.window_names[got.index]
    window = plan.admission.windows[got.index]
    unit = "requests" if name == "requests_per_minute" else "tokens"
    log.warning("%s refused: over its %s", scope.label, name, extra={
        "event": "rate_refused", "tenant": scope.tenant, "key_id": scope.key_id, "limit": name,
        name: window.limit, "used": got.used})
    if got.retry_after_ms < 0:
        return RateLimited(f"{scope.label}: this request needs {window.cost} {unit}, more than its {name} limit "
                           f"of {window.limit:g} allows at all",
                           headers={"retry-after": "60", "x-switchyard-limit": name})
    wait = retry_after_s(got.retry_after_ms)
    return RateLimited(f"{scope.label} is over its {name} limit ({window.limit:g} {unit} per minute, "
                       f"{got.used:g} used in the last minute); retry after {wait} s",
                       headers={"retry-after": str(wait), "x-switchyard-limit": name})


@dataclass(slots=True)
class Reservation:
    """What `admit` held for one request; `settle` runs once, whatever happens after."""

    store: Store | None
    tenant: str
    hold_id: str | None = None  # None: nothing held (no budget, a cache hit, or the store was down)
    amount: float = 0.0
    settled: bool = field(default=False)
    spends: tuple[tuple[str, str, int], ...] = ()  # where the real cost goes; () = the tenant's total
    tokens: tuple[tuple[str, int, int], ...] = ()  # token windows: (key, step, tokens reserved)
    expires_at: float = 0.0  # time.monotonic() when the hold lapses on its own
    ttl_s: float = 0.0       # how long the hold lasts from its admission or its last renewal

    async def settle(self, actual_usd: float, calls: Sequence[CallRecord] = (), *, retry: bool = False) -> None:
        """Record the real cost (and tokens), drop the hold, atomically; later calls do nothing.

        `retry`: the first try failed with the store unavailable, which may have been a lost reply
        of a settlement that went through. While the hold cannot have lapsed, it is the witness:
        gone means settled, so nothing is added twice."""
        if self.settled or self.store is None:
            return
        self.settled = True
        only_if_held = retry and self.hold_id is not None and time.monotonic() < self.expires_at - _LAPSE_MARGIN_S
        spends = self.spends or ((spend_key(self.tenant), holds_key(self.tenant), 0),)
        tokens: tuple[tuple[str, int, int], ...] = ()
        if self.tokens:
            used = sum(c.usage.prompt_tokens + c.usage.completion_tokens for c in calls)
            tokens = tuple((key, step, used - reserved) for key, step, reserved in self.tokens)
        await self.store.settle_admission(Settlement(self.hold_id, actual_usd, spends, tokens, only_if_held))

    async def keep(self) -> None:
        """Renew the hold of work still under way (a stream), when `RENEW_EVERY_S` has passed since
        it was taken or last renewed."""
        if self.hold_id is None or self.settled or self.store is None:
            return
        now = time.monotonic()
        if now < self.expires_at - self.ttl_s + RENEW_EVERY_S:
            return
        holds = tuple(dict.fromkeys(h for _, h, _ in self.spends)) or (holds_key(self.tenant),)
        try:
            await self.store.renew_hold(holds, self.hold_id, self.ttl_s)
        except StoreUnavailable as exc:  # it may lapse: the spend is still settled when the stream ends
            log.warning("hold %s of %s not renewed (store unavailable): %s", self.hold_id, self.tenant, exc)
        self.expires_at = now + self.ttl_s

    async def release(self) -> None:
        """The request failed before costing anything we know of: give the hold (and tokens) back."""
        if self.settled or self.store is None or (self.hold_id is None and not self.tokens):
            self.settled = True
            return
        try:
            await self.settle(0.0)
        except StoreUnavailable as exc:  # the hold expires on its own
            log.warning("hold %s of %s not released (store unavailable): %s", self.hold_id, self.tenant, exc)
