"""The durable spend ledger: what every call cost, per tenant × deployment × policy × plan kind × hour,
with the savings against always taking the policy's dearest candidate. An observer: it logs and
carries on, never fails a request.

Two things happen when a request (or a shadow evaluation) is billed:

- the tenant's spend counter, which budgets are checked against, is settled through the request's
  `Reservation` (one round trip that also drops the request's budget hold), as before; so is a
  call the request gave up on that answers later (`LateBills`, `executor.drain`), to the same
  spend keys (the tenant's and its key's) and token windows;
- a `Spent` value goes on a small bounded queue (no await). A writer task drains it in batches,
  sums the batch per (tenant, hour) hash and field, and adds the sums to the store in one round
  trip (`Store.add_to_hashes`: HINCRBYFLOAT on Redis), at most every `LINGER_S`. A full queue or a
  failed write loses spend from this view (never from the budget counter): counted in `stats()`
  and logged with the amount. A store that is down does not fail the write: the writer holds the
  unwritten sums (a few numbers per tenant and hour, however many bills) and retries every
  `RETRY_S` until the store is back; only what is still held when the ledger closes is lost.
  A write can reach the store and its reply still be lost (a timeout, a connection cut, a failover):
  each write therefore carries this writer's id and a sequence number, and the store adds a
  tenant's sums at most once per (writer, sequence) (`Store.add_to_hashes_once`), so a retry never
  counts the same bills twice. Writes are retried in order, one at a time; bills that arrive while
  one is held join the next write, which has not been sent yet.

Every call counts under its own deployment (samples, judges, escalations, shadow calls, streams cut
short); the request itself (`requests`, the counterfactual and the predicted qualities) counts under
the deployment that answered. The counterfactual of a routed request is the predicted cost of the
policy's dearest candidate, and its predicted quality that candidate's (its own cost when it took
that candidate); a pinned request's is its own cost (nothing was chosen for it), the calls billed
apart from its answer included (a stream read on after its client left). Cache hits count as
requests of plan kind `cache` costing nothing, shadow evaluations as plan kind `shadow` with no request.

`/v1/spend` and `switchyard spend` read these hashes back through `read_spend` and `spend_table`;
with Redis every replica sees the same numbers, and they survive restarts. The in-memory store
keeps them for the life of the process only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.admission import LateCall, Reservation
from gateway.decimals import written_number
from gateway.executor.drain import READ_ON, LateBill
from gateway.executor.result import CallRecord
from gateway.handoff import Handoff
from gateway.inflight import NO_SLOT, Slot
from gateway.log_throttle import LogThrottle
from gateway.metrics import Metrics
from gateway.observer import PINNED
from gateway.policy import Decision
from gateway.policy.decide import Candidate
from gateway.state import (
    LEDGER_TENANTS,
    LEDGER_TTL_S,
    Store,
    StoreUnavailable,
    SumsOnce,
    ledger_key,
    ledger_writes_key,
)

log = logging.getLogger("switchyard.ledger")

HOUR_S = 3600
GROUPS = ("tenant", "deployment", "policy", "plan_kind", "hour")
# Summed per field; the predicted qualities are sums over the `predicted` requests that had one.
METRICS = ("requests", "calls", "cost_usd", "prompt_tokens", "completion_tokens", "counterfactual_usd",
           "predicted", "quality_chosen", "quality_counterfactual")
CACHE, SHADOW = "cache", "shadow"
FAILED = "failed"  # what calls of a request that answered nothing are counted as, beside answers
_BATCH = 10_000
# The writer waits this long after a bill before writing, so that one round trip carries every bill
# of the moment: a Redis pipeline costs ~0.25 ms of CPU whether it carries one bill or a thousand.
LINGER_S = 0.25
RETRY_S = 1.0  # while the store is down, held sums are retried this often
_MAX_HELD_KEYS = 100_000  # tenant-hours held through an outage; past this they are given up as lost
_MAX_UNSETTLED = 100_000  # budget settlements held through an outage; more are logged as lost
_SEP = "|"
# How long a tenant remembers a writer's last write: a writer that has not written for this tenant
# for a month starts afresh (its id is new per process anyway).
_WRITES_TTL_S = 31 * 24 * 3600


@dataclass(slots=True)
class Spent:
    """What the request path hands over: references only; the writer does the arithmetic.
    Not frozen, though never changed: built on every request, where a frozen one costs more."""

    at: float
    tenant: str
    policy: str | None       # None: a pinned deployment
    plan: str                # the plan label; its kind is the part before the first ':'
    deployment: str          # the deployment that answered ("" when none did)
    calls: tuple[CallRecord, ...]
    decision: Decision | None = None
    requests: int = 1        # 0 for shadow work, which is no request of the tenant's
    # a call billed apart from its request's answer (requests 0), whose request is its own counterfactual
    own_counterfactual: bool = False

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)


def _dearest(candidates: Sequence[Candidate]) -> Candidate:
    """The first candidate of the highest predicted cost: the counterfactual ("always the large model").
    A plain loop, no key function: it runs on every request."""
    dearest = candidates[0]
    for c in candidates:
        if c.estimate.cost_usd > dearest.estimate.cost_usd:
            dearest = c
    return dearest


def own_counterfactual(decision: Decision | None) -> bool:
    """Is a request its own counterfactual (`savings`): pinned, or routed to its policy's dearest candidate?"""
    if decision is None or not decision.candidates:
        return True
    return _dearest(decision.candidates).plan == decision.plan


def savings(decision: Decision | None, actual_usd: float) -> tuple[float, float | None, float | None]:
    """(counterfactual cost, predicted quality of the chosen plan, of the counterfactual).

    The counterfactual is the policy's dearest candidate by predicted cost ("always the large
    model"); without a decision (a pinned deployment), or when that candidate was the one chosen, it is
    what the request cost: taking the dearest plan saved nothing, however its cost was predicted."""
    if decision is None or not decision.candidates:
        return actual_usd, None, None
    dearest, plan = _dearest(decision.candidates), decision.plan
    chosen = next((c for c in decision.candidates if c.plan == plan), None)
    return (actual_usd if chosen is dearest else dearest.estimate.cost_usd, chosen.estimate.quality if chosen else None,
            dearest.estimate.quality)


def plan_kind(label: str) -> str:
    return label.partition(":")[0]


@functools.lru_cache(maxsize=4096)
def _fields(deployment: str, policy: str | None, kind: str) -> dict[str, str]:
    """Each metric's hash field for one (deployment, policy, plan kind): built once, not per request."""
    return {m: f"{deployment}{_SEP}{policy or ''}{_SEP}{kind}{_SEP}{m}" for m in METRICS}


def add_spent(sums: dict[str, dict[str, float]], s: Spent) -> None:
    """Add one request's numbers to a batch's sums: hash key → field → amount."""
    row = sums.setdefault(ledger_key(s.tenant, int(s.at // HOUR_S)), defaultdict(float))
    kind = plan_kind(s.plan)
    for c in s.calls:
        f = _fields(c.deployment, s.policy, kind)
        row[f["calls"]] += 1
        row[f["cost_usd"]] += c.cost_usd
        row[f["prompt_tokens"]] += c.usage.prompt_tokens
        row[f["completion_tokens"]] += c.usage.completion_tokens
    if not s.requests:
        if (s.policy is None or s.own_counterfactual) and kind not in (CACHE, SHADOW) and s.calls:
            # A call billed apart from the answer of a request that is its own counterfactual (pinned, or
            # routed to the dearest candidate): read on after its client left, given up on and answering late.
            f = _fields(s.deployment or s.calls[-1].deployment, s.policy, kind)
            row[f["counterfactual_usd"]] += s.cost_usd
        return
    f = _fields(s.deployment or (s.calls[-1].deployment if s.calls else ""), s.policy, kind)
    row[f["requests"]] += s.requests
    if kind in (CACHE, SHADOW):
        return
    counterfactual, chosen, dearest = savings(s.decision, s.cost_usd)
    row[f["counterfactual_usd"]] += counterfactual
    if chosen is not None and dearest is not None:
        row[f["predicted"]] += 1
        row[f["quality_chosen"]] += chosen
        row[f["quality_counterfactual"]] += dearest


@dataclass(slots=True)
class _Unsettled:
    """A budget settlement the store could not take, held until it is back."""

    reservation: Reservation
    tenant: str
    usd: float
    calls: tuple[CallRecord, ...]
    late: LateCall | None  # the late call it bills, if that is what it is
    # Whether a failed try may have been carried out with its reply lost (else the hold, if gone from a
    # store that is back, went with the store's data, and the spend is still added).
    maybe_applied: bool = True


@dataclass(slots=True)
class _Write:
    """One numbered write of the ledger's writer: per tenant, hash key → field → amount."""

    seq: int
    sums: dict[str, dict[str, dict[str, float]]]
    bills: int = 0
    usd: float = 0.0
    sent: bool = False  # tried at least once: it may have reached the store, so it never changes

    def add(self, batch: Sequence[Spent]) -> None:
        for s in batch:
            add_spent(self.sums.setdefault(s.tenant, {}), s)
        self.bills += len(batch)
        self.usd += sum(s.cost_usd for s in batch)

    @property
    def keys(self) -> int:
        return sum(len(hashes) for hashes in self.sums.values())


class Ledger:
    """Settles budgets, and queues every bill for the durable ledger's writer."""

    def __init__(self, store: Store, queue_size: int = 10_000, linger_s: float = LINGER_S,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics  # counts what is billed beside answers (`background_cost`)
        self.linger_s = linger_s
        self._bills: Handoff[Spent] = Handoff(queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._throttle = LogThrottle()
        self.written = self.dropped = self.failed = 0
        self.lost_usd = 0.0  # spend that never reached the durable ledger (dropped or failed)
        # Writes the store has not acknowledged yet (it is down), retried in order until it is back.
        self.writer_id = uuid.uuid4().hex
        self._seq = 0
        self._held: list[_Write] = []
        # Budget settlements the store could not take (it was down), retried with the held sums, in order.
        self._unsettled: list[_Unsettled] = []

    async def record(self, spent: Spent, reservation: Reservation | None = None) -> None:
        """Queue the bill, then settle the tenant's budget with its real cost (a cache hit releases
        its hold)."""
        self.add(spent)
        if not spent.requests:  # no answer: a shadow evaluation, or the calls of a request that failed
            self._beside_answers(spent, SHADOW if spent.plan == SHADOW else FAILED)
        if spent.plan == CACHE:
            if reservation is not None:
                await reservation.release()
            return
        cost = spent.cost_usd
        if reservation is None:
            if cost <= 0:
                return
            # Settled as a reservation that holds nothing, so that it counts once however often it is
            # sent (`Settlement.settle_id`): a plain INCRBYFLOAT resent after a lost reply counts twice.
            reservation = Reservation(self.store, spent.tenant)
        try:
            await reservation.settle(cost, spent.calls)
        except StoreUnavailable as exc:
            self._hold_unsettled(reservation, spent.tenant, cost, spent.calls, None, exc)

    async def record_late(self, tenant: str, held: Reservation, call: LateCall, spent: Spent | None) -> None:
        """A call the request gave up on ended: it answered (`spent`, its one call) or not (None). Its
        bill goes to every spend key and token window the request's reservation charges, and what was
        held for it is given back."""
        if spent is not None:
            self.add(spent)
            self._beside_answers(spent)
        record = spent.calls[0] if spent is not None else None
        try:
            await held.bill_late(call, record)
        except StoreUnavailable as exc:
            self._hold_unsettled(held, tenant, 0.0 if record is None else record.cost_usd,
                                 () if record is None else (record,), call, exc)

    def _hold_unsettled(self, reservation: Reservation, tenant: str, usd: float,
                        calls: tuple[CallRecord, ...], late: LateCall | None, exc: StoreUnavailable) -> None:
        """Held for the writer to settle once the store is back: a budget must not forget what was
        spent during an outage."""
        if len(self._unsettled) < _MAX_UNSETTLED:
            self._unsettled.append(_Unsettled(reservation, tenant, usd, calls, late, maybe_applied=not exc.unsent))
        else:
            self._lost(usd, "budget spend of %s not recorded (store unavailable, backlog full): $%.6f", tenant)
        if self._throttle.due():
            log.warning("spend of %s held until the store is back (store unavailable): $%.6f: %s", tenant, usd, exc)

    async def record_shadow(self, tenant: str, calls: tuple[CallRecord, ...], reservation: Reservation | None,
                            policy: str | None = None) -> None:
        """A shadow evaluation's calls: the tenant's spend, under plan kind `shadow`, no request."""
        await self.record(Spent(time.time(), tenant, policy, SHADOW, "", calls, requests=0), reservation)

    def _beside_answers(self, spent: Spent, kind: str | None = None) -> None:
        """Count calls billed beside any answer in the metrics, by kind (`kind`, else each call's role:
        late, cut), and their tokens with every other billed token: `switchyard_tokens_total` adds up to
        the ledger's as the two cost counters do. `observer.billed` counts those that answered requests,
        a stream's call read on after its client left (`READ_ON`) among them, when it ends."""
        if self.metrics is None:
            return
        m, policy = self.metrics, spent.policy if spent.policy is not None else PINNED
        for c in spent.calls:
            if c.role != READ_ON:
                m.background_cost.add((spent.tenant, c.deployment, policy, kind or c.role), c.cost_usd)
                m.tokens.add((spent.tenant, c.deployment, policy, "input"), c.usage.prompt_tokens)
                m.tokens.add((spent.tenant, c.deployment, policy, "output"), c.usage.completion_tokens)

    def add(self, spent: Spent) -> None:
        """Queue one bill; never waits. A full queue drops it, counted and logged with its amount."""
        if not self._bills.put(spent):
            self.dropped += 1
            self._lost(spent.cost_usd, "ledger queue full (%d): a bill of $%.6f dropped", self._bills.limit)

    def _lost(self, usd: float, message: str, *args: Any) -> None:
        self.lost_usd += usd
        if self._throttle.due():
            log.warning(message + " (lost so far: %d dropped, %d failed, $%.6f)", *args, usd,
                        self.dropped, self.failed, self.lost_usd)

    # -- the writer -------------------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._run(), name="switchyard.ledger")

    async def flushed(self, timeout_s: float = 2.0) -> None:
        """Wait (at most `timeout_s`) until what this process queued is written."""
        if self._writer is not None and not self._writer.done():
            await self._bills.drained(timeout_s)

    async def close(self, timeout_s: float = 2.0) -> None:
        await self.flushed(timeout_s)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._held or self._unsettled:
            await self.write([])  # a last try; what the store still cannot take is lost
            self._give_up_held()
            for u in self._unsettled:
                log.warning("spend of %s not added to its budget counter (store unavailable): $%.6f", u.tenant, u.usd)

    async def _run(self) -> None:
        while True:
            if self._held or self._unsettled:
                if not await self._bills.wait(RETRY_S):
                    await self.write([])  # no new bills: retry the held sums alone
                    continue
            else:
                await self._bills.wait()
            await asyncio.sleep(self.linger_s)
            batch = self._bills.take(_BATCH)
            try:
                await self.write(batch)
            except Exception:  # the writer must outlive any one bad batch
                self.failed += len(batch)
                self._lost(sum(s.cost_usd for s in batch), "ledger: a batch of %d could not be written: $%.6f",
                           len(batch))
                log.exception("ledger: batch failed")
            finally:
                self._bills.done()

    async def write(self, batch: Sequence[Spent]) -> None:
        """Add `batch` (after any writes held from an outage) to the store; if it is down, hold it."""
        if self._unsettled:
            await self._settle_unsettled()
        if batch:
            if not self._held or self._held[-1].sent:
                self._seq += 1
                self._held.append(_Write(self._seq, {}))
            self._held[-1].add(batch)
        while self._held:
            w = self._held[0]
            w.sent = True
            try:
                await self.store.add_to_hashes_once(
                    [SumsOnce(ledger_writes_key(t), self.writer_id, w.seq, hashes) for t, hashes in w.sums.items()],
                    LEDGER_TTL_S, _WRITES_TTL_S, (LEDGER_TENANTS, sorted(w.sums)))
            except StoreUnavailable as exc:
                if self._throttle.due():
                    log.warning("ledger: store unavailable (%s); %d bills ($%.6f) held, retried every %g s",
                                exc, self._held_bills, self._held_usd, RETRY_S)
                if sum(h.keys for h in self._held) > _MAX_HELD_KEYS:
                    self._give_up_held()
                return
            except Exception:  # the store refused it (not an outage): retrying would refuse it again
                self._held.pop(0)
                self.failed += w.bills
                self._lost(w.usd, "ledger: a write of %d bills could not be stored: $%.6f", w.bills)
                log.exception("ledger: write %d refused", w.seq)
                continue
            self._held.pop(0)
            self.written += w.bills

    @property
    def _held_bills(self) -> int:
        return sum(w.bills for w in self._held)

    @property
    def _held_usd(self) -> float:
        return sum(w.usd for w in self._held)

    async def _settle_unsettled(self) -> None:
        while self._unsettled:
            u = self._unsettled[0]
            reservation, calls = u.reservation, u.calls
            try:
                if u.late is not None:
                    await reservation.bill_late(u.late, calls[0] if calls else None, retry=True,
                                                maybe_applied=u.maybe_applied)
                else:
                    reservation.settled = False  # its settlement failed (or only its reply was lost)
                    await reservation.settle(u.usd, calls, retry=True, maybe_applied=u.maybe_applied)
            except StoreUnavailable as exc:
                u.maybe_applied = u.maybe_applied or not exc.unsent
                return  # still down: retried with the held sums
            except Exception:  # not an outage: retrying would fail again, and the bills behind it must go on
                log.exception("ledger: a held settlement of %s failed", u.tenant)
                self._lost(u.usd, "budget spend of %s not recorded (its settlement failed): $%.6f", u.tenant)
            self._unsettled.pop(0)

    def _give_up_held(self) -> None:
        bills, usd = self._held_bills, self._held_usd
        self._held = []
        if bills:  # rare and final: logged every time, not throttled
            self.failed += bills
            self.lost_usd += usd
            log.warning("ledger: %d bills not stored (store unavailable): $%.6f (lost so far: $%.6f)",
                        bills, usd, self.lost_usd)

    def stats(self) -> dict[str, Any]:
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                "lost_usd": round(self.lost_usd, 10), "queued": len(self._bills), "held": self._held_bills,
                "unsettled_usd": round(sum(u.usd for u in self._unsettled), 10)}


@dataclass(slots=True)
class LateBills:
    """A request's sink for its calls given up on (`executor.drain`): each is held for in its
    reservation while it is read, and billed there when it answers; and it keeps the request's
    in-flight slot taken (it still holds an upstream connection) until it ends. Built on every
    request, so not frozen (a frozen one costs more)."""

    ledger: Ledger
    held: Reservation
    tenant: str
    policy: str | None
    plan: str
    slot: Slot = NO_SLOT
    own_counterfactual: bool = False  # the request's (`own_counterfactual`): its calls billed apart count in it

    def open(self, worst_usd: float) -> LateBill:
        self.slot.keep()
        return functools.partial(self._ended, self.held.given_up(worst_usd))

    async def _ended(self, call: LateCall, record: CallRecord | None) -> None:
        try:
            spent = None if record is None else Spent(time.time(), self.tenant, self.policy, self.plan,
                                                      record.deployment, (record,), requests=0,
                                                      own_counterfactual=self.own_counterfactual)
            await self.ledger.record_late(self.tenant, self.held, call, spent)
        finally:
            self.slot.let_go()


# -- reading it back ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Whole hours: those that overlap [start, end) (unix seconds)."""

    start: float
    end: float

    @property
    def hours(self) -> range:
        return range(int(self.start // HOUR_S), -(-int(self.end) // HOUR_S))


async def read_spend(store: Store, window: Window, tenants: Iterable[str] | None = None,
                     ) -> list[tuple[str, int, dict[str, float]]]:
    """(tenant, hour, fields) for every tenant (or those given) and hour of the window with spend."""
    names = list(tenants) if tenants is not None else await store.set_members(LEDGER_TENANTS)
    wanted = [(t, h) for t in names for h in window.hours]
    rows = await store.read_hashes([ledger_key(t, h) for t, h in wanted])
    return [(t, h, row) for (t, h), row in zip(wanted, rows, strict=True) if row]


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hour_iso(hour: int) -> str:
    return iso(hour * HOUR_S)


def empty_row() -> dict[str, Any]:
    return _row({}, dict.fromkeys(METRICS, 0.0))


def spend_table(hashes: Iterable[tuple[str, int, Mapping[str, float]]], group_by: Sequence[str],
                ) -> list[dict[str, Any]]:
    """Rows grouped by `group_by` (of GROUPS), sorted, each with its sums, savings and mean qualities."""
    return spend_tables(hashes, (group_by,))[0]


def spend_tables(hashes: Iterable[tuple[str, int, Mapping[str, float]]], groupings: Sequence[Sequence[str]],
                 ) -> list[list[dict[str, Any]]]:
    """`spend_table` for each of `groupings`, from one pass over the hashes.

    The pass runs on the event loop every tenant's requests share, over every field of every hash read (a
    hash per tenant and hour, nine fields per deployment, policy and plan kind in it): tens of thousands
    of tenant-hours for a week of a busy gateway's dashboard. Each field name is parsed once per process
    (`_field`), not once per hash, and an hour is formatted once per hash and only when grouped by, so
    the pass costs a dictionary lookup and an addition per field."""
    fine_by = tuple(g for g in GROUPS if any(g in grouping for grouping in groupings))
    fine = _sums(hashes, fine_by)
    return [_table(_regrouped(fine, fine_by, tuple(grouping)), tuple(grouping)) for grouping in groupings]


@functools.lru_cache(maxsize=1 << 14)
def _field(name: str) -> tuple[tuple[str, str | None, str], str] | None:
    """A ledger field's ((deployment, policy or None, plan kind), metric); None for a field this version
    does not know, skipped rather than misread. Field names are few (deployments × policies × plan kinds ×
    metrics) and repeat in every hash."""
    parts = name.rsplit(_SEP, 3)
    if len(parts) != 4 or parts[3] not in METRICS:
        return None
    deployment, policy, kind, metric = parts
    return (deployment, policy or None, kind), metric


def _sums(hashes: Iterable[tuple[str, int, Mapping[str, float]]], group_by: tuple[str, ...],
          ) -> dict[tuple[Any, ...], dict[str, float]]:
    sums: dict[tuple[Any, ...], dict[str, float]] = {}
    by_hour = "hour" in group_by
    for tenant, hour, fields in hashes:
        parts: dict[tuple[str, str | None, str], dict[str, float]] = {}
        for name, amount in fields.items():
            known = _field(name)
            if known is None:
                continue
            part, metric = known
            m = parts.get(part)
            if m is None:
                m = parts[part] = dict.fromkeys(METRICS, 0.0)
            m[metric] += amount
        at = hour_iso(hour) if by_hour else None
        for (deployment, policy, kind), m in parts.items():
            facets = {"tenant": tenant, "deployment": deployment, "policy": policy, "plan_kind": kind, "hour": at}
            _add(sums, tuple(facets[g] for g in group_by), m)
    return sums


def _regrouped(sums: dict[tuple[Any, ...], dict[str, float]], by: tuple[str, ...], to: tuple[str, ...],
               ) -> dict[tuple[Any, ...], dict[str, float]]:
    """Sums grouped `by` some facets, grouped again by some of them (`to`)."""
    if to == by:
        return sums
    at = [by.index(g) for g in to]
    out: dict[tuple[Any, ...], dict[str, float]] = {}
    for group, m in sums.items():
        _add(out, tuple(group[i] for i in at), m)
    return out


def _add(sums: dict[tuple[Any, ...], dict[str, float]], group: tuple[Any, ...], m: Mapping[str, float]) -> None:
    row = sums.get(group)
    if row is None:
        row = sums[group] = dict.fromkeys(METRICS, 0.0)
    for metric, amount in m.items():
        row[metric] += amount


def _table(sums: dict[tuple[Any, ...], dict[str, float]], group_by: tuple[str, ...]) -> list[dict[str, Any]]:
    return [_row(dict(zip(group_by, group, strict=True)), m)
            for group, m in sorted(sums.items(), key=lambda kv: tuple(str(v or "") for v in kv[0]))]


def _row(keys: dict[str, Any], m: Mapping[str, float]) -> dict[str, Any]:
    n = m["predicted"]
    return {**keys, "requests": round(m["requests"]), "calls": round(m["calls"]), "cost_usd": round(m["cost_usd"], 10),
            "prompt_tokens": round(m["prompt_tokens"]), "completion_tokens": round(m["completion_tokens"]),
            "counterfactual_usd": round(m["counterfactual_usd"], 10),
            "savings_usd": round(m["counterfactual_usd"] - m["cost_usd"], 10),
            "predicted_quality_chosen": round(m["quality_chosen"] / n, 4) if n else None,
            "predicted_quality_counterfactual": round(m["quality_counterfactual"] / n, 4) if n else None}


# -- the questions `/v1/spend` and `switchyard spend` take ------------------------------------------

DEFAULT_SPAN_S = 24 * HOUR_S


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """`deployment,policy` → ("deployment", "policy"); default: by tenant."""
    if not text or not text.strip():
        return ("tenant",)
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise ValueError(f"cannot group by {_named(unknown) if unknown else repr(text[:64])}: "
                         f"use a comma-separated list of {', '.join(GROUPS)}")
    return names


def _named(unknown: list[str], shown: int = 3) -> str:
    """The first few unknown names, each cut at 64 characters: a query holds thousands, all echoed back."""
    named = ", ".join(repr(u[:64]) for u in unknown[:shown])
    return named + (f" and {len(unknown) - shown} more" if len(unknown) > shown else "")


# The times a window may name: from the epoch to the end of year 9999 (what `iso` can write back).
LAST_TIME_S = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC unless it says otherwise), from 1970 to the end of 9999."""
    if (written := written_number(text)) is not None:  # not what float() also takes: "1_795_826_000", "nan"
        seconds = written
    else:
        try:
            # upper-cased: RFC 3339 allows a lower-case "t" and "z", which fromisoformat refuses
            when = dt.datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text[:64]!r} is neither unix seconds nor an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds <= LAST_TIME_S:
        raise ValueError(f"{text[:64]!r} is not a time from 1970 to 9999")
    return seconds


def window(start: float | None, end: float | None, now: float | None = None) -> Window:
    """[start, end): by default the last 24 hours; at most as far back as the ledger keeps."""
    end = (now if now is not None else time.time()) if end is None else end
    start = end - DEFAULT_SPAN_S if start is None else start
    if not start < end:
        raise ValueError("`from` must be before `to`")
    if end - start > LEDGER_TTL_S:
        raise ValueError(f"the window may span at most {LEDGER_TTL_S // 86400} days (what the ledger keeps)")
    return Window(start, end)
