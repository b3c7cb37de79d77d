"""What one request is admitted against: its tenant's and its key's budgets and rate windows.

`plan_admission` turns a caller (`Tenant`, with its key's `KeyLimits` if it came with a virtual key)
into the store's `Admission`: a `BudgetHold` per budget (keys of the current UTC period), a
`Window` per requests/tokens-per-minute limit. `refusal` turns the store's verdict into the
client's error, naming the limit; `Reservation` settles the request exactly once.

Calls the request gave up on but still reads (`executor.drain`) are billed through its
`Reservation` too, to every spend key and token window it charges: one that lands before the
request settles rides on that settlement; one still being read then keeps its worst case held
(out of the request's hold, in the same step) until it lands, fails or runs out of time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.admission_store import Admission, Admitted, BudgetHold, Settlement, Window, new_mark_id
from gateway.decimals import as_written
from gateway.errors import BudgetExceeded, BudgetHeldInFlight, GatewayError, RateLimited, RateLimitNeverFits
from gateway.executor.drain import DRAIN_S
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
# How long the hold of a call still being read when its request settles lasts: it ends within
# DRAIN_S of being given up on (before the settlement); the margin covers pricing and billing it.
LATE_HOLD_S = DRAIN_S + 30.0


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
        told = (f"{scope.label} has spent ${got.spent:.6f} of its ${as_written(hold.limit)}{period} budget and holds "
                f"${got.reserved:.6f} for requests in flight; this request may cost up to ${hold.amount:.6f}, "
                f"${left:.6f} is left")
        if got.spent + hold.amount <= hold.limit:
            # What is spent leaves room: requests in flight hold it, and give back what they do not spend
            # when they end (in seconds, mostly), so this is no reason to wait for the next period.
            return BudgetHeldInFlight(f"{told}: it fits once requests in flight end", headers={"retry-after": "1"})
        return BudgetExceeded(told, headers={"retry-after": str(int(reset) + 1)} if reset is not None else None)
    scope, name = plan.window_names[got.index]
    window = plan.admission.windows[got.index]
    unit = "requests" if name == "requests_per_minute" else "tokens"
    log.warning("%s refused: over its %s", scope.label, name, extra={
        "event": "rate_refused", "tenant": scope.tenant, "key_id": scope.key_id, "limit": name,
        name: window.limit, "used": got.used})
    if got.retry_after_ms < 0:
        return RateLimitNeverFits(f"{scope.label}: this request needs {window.cost} {unit}, more than its {name} "
                                  f"limit of {_count(window.limit)} allows at all",
                                  headers={"x-switchyard-limit": name})
    wait = retry_after_s(got.retry_after_ms)
    return RateLimited(f"{scope.label} is over its {name} limit ({_count(window.limit)} {unit} per minute, "
                       f"{_count(got.used)} used in the last minute); retry after {wait} s",
                       headers={"retry-after": str(wait), "x-switchyard-limit": name})


def _count(value: float) -> str:
    """A rate limit or a window's usage, every digit: `:g` wrote a tokens_per_minute of 12,345,678 as
    `1.23457e+07`."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


@dataclass(slots=True)
class LateCall:
    """A call the request gave up on and still reads (`executor.drain`), until it ends."""

    worst_usd: float              # the most it may be billed
    hold_id: str | None = None    # its own hold, when the request settled while it was still read
    expires_at: float = 0.0       # time.monotonic() when that hold lapses on its own
    done: bool = False            # its outcome is recorded (or rides on the request's settlement)
    settle_id: str = field(default_factory=new_mark_id)  # its settlement's, the same on a retry


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
    late: tuple[LateCall, ...] = ()       # calls given up on, still read or ended
    landed: tuple[CallRecord, ...] = ()   # their answers that came before the settlement, billed with it
    sent: asyncio.Event | None = None  # with calls still read: set once the first settlement's round trip is over
    settle_id: str = field(default_factory=new_mark_id)  # its settlement's, the same on a retry

    async def settle(self, actual_usd: float, calls: Sequence[CallRecord] = (), *, retry: bool = False,
                     maybe_applied: bool = True) -> None:
        """Record the real cost (and tokens), drop the hold, atomically; later calls do nothing.
        Late answers that landed meanwhile are billed with it; calls still being read keep their
        worst case held, each in a hold of its own (`bill_late` drops it).

        `retry`: the first try failed with the store unavailable. `maybe_applied`: that failure may
        have been a lost reply of a settlement that went through; while the hold cannot have lapsed,
        it is then the witness: gone means settled, so nothing is added twice. A try that never
        reached the store (`StoreUnavailable.unsent`) settles as a first one does: a hold gone then
        went with the store's data (a restart), and the spend must still be added."""
        if self.settled or self.store is None:
            return
        self.settled = True
        only_if_held = (retry and maybe_applied and self.hold_id is not None
                        and time.monotonic() < self.expires_at - _LAPSE_MARGIN_S)
        spends = self.spends or ((spend_key(self.tenant), holds_key(self.tenant), 0),)
        if self.landed:
            calls = (*calls, *self.landed)
            actual_usd += sum(c.cost_usd for c in self.landed)
        tokens: tuple[tuple[str, int, int], ...] = ()
        if self.tokens:
            used = sum(c.usage.prompt_tokens + c.usage.completion_tokens for c in calls)
            tokens = tuple((key, step, used - reserved) for key, step, reserved in self.tokens)
        sent: asyncio.Event | None = None
        residual: tuple[tuple[str, float], ...] = ()
        if self.late:
            if not retry:  # the first try: the holds of calls still read are decided once, here
                sent = self.sent = asyncio.Event()
                self._hold_late(actual_usd)
            residual = tuple((c.hold_id, c.worst_usd) for c in self.late if c.hold_id is not None and not c.done)
        try:
            await self.store.settle_admission(Settlement(self.hold_id, actual_usd, spends, tokens, only_if_held,
                                                         residual, LATE_HOLD_S, self.settle_id))
        finally:
            if sent is not None:
                sent.set()

    def _hold_late(self, spent_usd: float) -> None:
        """Give each call still being read a hold of its own: its worst case, out of what the request
        held beyond what it spent (the hold covered every call that can be billed). Decided once, at
        the first settlement, so that a retried one keeps the same holds."""
        if self.hold_id is None:
            return
        room = self.amount - spent_usd
        expires_at = time.monotonic() + LATE_HOLD_S
        for i, call in enumerate(self.late):
            share = min(call.worst_usd, room)
            if call.done or share <= 0:
                continue
            room -= share
            call.worst_usd, call.hold_id, call.expires_at = share, f"{self.hold_id}:late:{i}", expires_at

    def given_up(self, worst_usd: float) -> LateCall:
        """A call of the request's is given up on but still read; it may cost up to `worst_usd`."""
        call = LateCall(max(0.0, worst_usd))
        self.late += (call,)
        return call

    async def bill_late(self, call: LateCall, record: CallRecord | None, *, retry: bool = False,
                        maybe_applied: bool = True) -> None:
        """`call` ended: it answered (`record`, its bill) or not (None). Before the request settles,
        its bill joins that settlement; after, it is billed to every spend key and token window the
        request charges, and its own hold dropped, in one step. `retry`, `maybe_applied`: as for
        `settle`, with the call's own hold as the witness."""
        if call.done or self.store is None:
            return
        if not self.settled:
            call.done = True
            if record is not None:
                self.landed += (record,)
            return
        if self.sent is not None and not retry:
            await self.sent.wait()  # its hold, if it has one, is made by that round trip
        if record is None and call.hold_id is None:
            call.done = True
            return
        cost = 0.0 if record is None else record.cost_usd
        tokens: tuple[tuple[str, int, int], ...] = ()
        if record is not None and self.tokens:
            used = record.usage.prompt_tokens + record.usage.completion_tokens
            tokens = tuple((key, step, used) for key, step, _ in self.tokens)
        only_if_held = (retry and maybe_applied and call.hold_id is not None
                        and time.monotonic() < call.expires_at - _LAPSE_MARGIN_S)
        spends = self.spends or ((spend_key(self.tenant), holds_key(self.tenant), 0),)
        await self.store.settle_admission(Settlement(call.hold_id, cost, spends, tokens, only_if_held,
                                                     settle_id=call.settle_id))
        call.done = True

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
        if self.settled or self.store is None or (self.hold_id is None and not self.tokens and not self.landed):
            self.settled = True
            return
        try:
            await self.settle(0.0)
        except StoreUnavailable as exc:  # the hold expires on its own
            log.warning("hold %s of %s not released (store unavailable): %s", self.hold_id, self.tenant, exc)
