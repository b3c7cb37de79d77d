"""The store's side of admission: budgets with periods, sliding-window rate limits, key records.

One `admit` call is one atomic step (a Lua script on Redis, code without `await` in memory) that
checks every budget that applies to a request (its tenant's and its key's: spend + live holds +
this request's worst case against the limit, expired holds dropped) and every sliding window
(requests and tokens per minute, of the tenant, the key, or a deployment), and only when all of
them allow it adds the holds and counts the request in each window. A refusal changes nothing but
expired entries. `settle_admission` then drops the hold, adds the real cost to each spend counter
and corrects each token window by (actual − reserved) tokens, also atomically; `renew_hold` gives a
hold still there (a stream's, which may outlast its time to live) a new expiry.

A settlement may keep part of the room it drops: calls the request gave up on but still reads
(`executor.drain`) may yet be billed, so each gets a hold of its own (`residual`: id → its worst
case) in the same step, in every holds hash the request's hold was in. When such a call ends, its
own settlement (that hold's id, the call's cost) drops it and bills the call, again in one step.

A settlement is applied at most once: it carries an id (`Settlement.settle_id`), which its script
marks (`sy:settled:{<tag>}:<id>`, kept `SETTLED_MARK_S`) in the same atomic step, and a settlement
whose id is marked applies nothing. redis-py resends a script call once on a fresh connection when
the first one broke, which may be after Redis ran it; the ledger retries a settlement whose reply
was lost with the same id too (and, past the mark's life, trusts the hold as witness,
`only_if_held`).

An admission is applied at most once the same way: it carries an id (`Admission.admit_id`), and its
script stores its reply under the id's mark (`sy:admitted:{<tag>}:<id>`, kept `ADMITTED_MARK_S`) in
the same atomic step. A resend that finds the mark changes nothing and answers that reply: the
request is counted once in its windows, held once in its budgets, refused (or not) as the first run
decided, and a threshold alert the first run fired is still reported, in the reply that arrives.

A budget threshold (0.8: 80%) fires the first time in its period that the budget's committed
amount (settled spend + holds + this request) reaches it; a request refused by the budget fires
every threshold up to 100%. "First time" is an HSETNX on the period's alert hash, so N replicas
fire it once between them.

Keys of one admission all carry the same hash tag (the tenant, or `deploy:<name>`), so a Redis
Cluster keeps them in one slot. The arithmetic of windows is `gateway.windows`'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from gateway.windows import STEP_MS, WINDOW_STEPS, step_of, window_check

T = TypeVar("T")

# How long a settlement's id stays marked: far longer than a resend on a fresh connection takes
# (milliseconds), and than a short store outage the ledger retries through; short enough that the
# marks of a busy gateway stay small (one key of ~100 bytes per settlement: 12 MB at 1,000 a second).
SETTLED_MARK_S = 120.0
# How long an admission's reply is kept under its id: only redis-py's resend on a fresh connection
# sends an admission again (milliseconds to a few seconds later; nothing retries one after a reply
# is lost, the request is refused or let through unheld), and every limited request writes one.
ADMITTED_MARK_S = 30.0
# How often the memory store looks for a budget period's spend and alert keys past their time (kept
# `BudgetHold.keep_ms`, as Redis keeps them): they expire days after their period ends, so once a
# minute is soon enough, and a request does not scan them all.
PERIOD_SWEEP_S = 60.0


def new_mark_id() -> str:
    """An id for one admission or settlement, marked by its script so that a resend applies nothing."""
    return os.urandom(8).hex()


def hash_slot_tag(key: str) -> str:
    """What Redis Cluster hashes a key by: the first non-empty `{...}`, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


@dataclass(frozen=True, slots=True)
class BudgetHold:
    """Hold `amount` against `limit` in one budget's current period."""

    spend_key: str
    holds_key: str
    alerts_key: str
    amount: float
    limit: float
    keep_ms: int = 0  # how long the period's spend and alert keys are kept (0: for ever)
    thresholds: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Window:
    """Count `cost` (1 request, or N tokens) in a sliding window over `limit`."""

    key: str
    limit: float
    cost: int


@dataclass(frozen=True, slots=True)
class Admission:
    hold_id: str
    ttl_s: float
    budgets: tuple[BudgetHold, ...] = ()
    windows: tuple[Window, ...] = ()
    # Marked with the reply when run: the same admission sent again counts nothing and gets that reply.
    admit_id: str = field(default_factory=new_mark_id)


@dataclass(frozen=True, slots=True)
class Admitted:
    verdict: Literal["ok", "budget", "rate"]
    index: int = 0             # the budget or window that refused (0-based)
    spent: float = 0.0         # refused by a budget: its settled spend and others' holds
    reserved: float = 0.0
    used: float = 0.0          # refused by a window: its usage
    retry_after_ms: int = 0    # refused by a window: until the request would fit (-1: never)
    step: int = 0              # admitted: the window step the request was counted in
    alerts: tuple[tuple[int, float], ...] = ()  # (budget index, threshold) reached first in its period


@dataclass(frozen=True, slots=True)
class Settlement:
    hold_id: str | None
    actual_usd: float
    spends: tuple[tuple[str, str, int], ...]       # (spend key, holds key, keep ms)
    tokens: tuple[tuple[str, int, int], ...] = ()  # (window key, step, actual − reserved tokens)
    # A retry of a settlement whose reply was lost: settle only if the hold is still there (the
    # first try removed it if it went through). Only meaningful while the hold cannot have expired.
    only_if_held: bool = False
    # Holds that replace part of the dropped one, in each holds hash it was found in: (hold id, usd),
    # each lasting `residual_ttl_s` (calls still being read, which may yet be billed).
    residual: tuple[tuple[str, float], ...] = ()
    residual_ttl_s: float = 0.0
    # Marked when applied: the same settlement sent again (a resend, a retry) applies nothing.
    settle_id: str = field(default_factory=new_mark_id)


# KEYS: per budget: spend, holds, alerts; then per window its key; last, the admission's mark.
# ARGV: nb, nw, hold id, hold ttl ms, step ms, steps; per budget: amount, limit, keep ms, thresholds
# ("0.8,1"); per window: limit, cost; last, the mark's ttl ms. Returns {verdict, index, a, b, step,
# alerts ("i:t,i:t")}; numbers as strings (Lua would truncate them to integers). Every reply is
# stored under the mark (set NX, in this same step): a resend that finds it returns it, touching
# nothing else.
ADMIT_LUA = """
local mark = KEYS[#KEYS]
local first = redis.call('GET', mark)
if first then return cjson.decode(first) end
local function answer(reply)
  redis.call('SET', mark, cjson.encode(reply), 'NX', 'PX', ARGV[#ARGV])
  return reply
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nb, nw = tonumber(ARGV[1]), tonumber(ARGV[2])
local step, steps = tonumber(ARGV[5]), tonumber(ARGV[6])
local cur = math.floor(now / step)
local fired = {}
-- A window's usage: its running total 't', less the buckets that slid out since 'o' (the oldest
-- step that may still hold counts), which are dropped now: O(1) a request, amortised.
local function window_total(key)
  local got = redis.call('HMGET', key, 't', 'o')
  local total, oldest = tonumber(got[1] or '0'), tonumber(got[2] or cur)
  local live = cur - steps + 1
  if oldest < live then
    if live - oldest >= steps then
      redis.call('DEL', key)
      total = 0
    else
      for s = oldest, live - 1 do
        local field = string.format('%d', s)
        local c = redis.call('HGET', key, field)
        if c then total = total - tonumber(c); redis.call('HDEL', key, field) end
      end
      redis.call('HSET', key, 't', total, 'o', string.format('%d', live))
    end
  end
  return total
end
local function alert(i, committed, limit, over)
  local a = 6 + (i - 1) * 4
  if ARGV[a + 4] == '' then return end
  for frac in string.gmatch(ARGV[a + 4], '[^,]+') do
    local f = tonumber(frac)
    if (committed >= f * limit or (over and f <= 1)) and redis.call('HSETNX', KEYS[3 * i], frac, now) == 1 then
      local keep = tonumber(ARGV[a + 3])
      if keep > 0 then redis.call('PEXPIRE', KEYS[3 * i], keep) end
      fired[#fired + 1] = tostring(i - 1) .. ':' .. frac
    end
  end
end
local spent, reserved = {}, {}
for i = 1, nb do
  local a = 6 + (i - 1) * 4
  local amount, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local s = tonumber(redis.call('GET', KEYS[3 * i - 2]) or '0')
  local r = 0
  local holds = redis.call('HGETALL', KEYS[3 * i - 1])
  for j = 1, #holds, 2 do
    local held, expires = string.match(holds[j + 1], '(%S+) (%S+)')
    if tonumber(expires) <= now then redis.call('HDEL', KEYS[3 * i - 1], holds[j]) else r = r + tonumber(held) end
  end
  if s >= limit or s + r + amount > limit then
    alert(i, s + r + amount, limit, true)
    return answer({'budget', tostring(i - 1), tostring(s), tostring(r), '0', table.concat(fired, ',')})
  end
  spent[i], reserved[i] = s, r
end
local wb, ab = 3 * nb, 6 + 4 * nb
local totals = {}
for i = 1, nw do
  local key = KEYS[wb + i]
  local limit, cost = tonumber(ARGV[ab + 2 * i - 1]), tonumber(ARGV[ab + 2 * i])
  local used = window_total(key)
  totals[i] = used
  if used + cost > limit then
    local retry = -1
    if cost <= limit then
      local rows, live = redis.call('HGETALL', key), {}
      for j = 1, #rows, 2 do
        local b = tonumber(rows[j])
        if b then live[#live + 1] = {b, tonumber(rows[j + 1])} end
      end
      table.sort(live, function(x, y) return x[1] < y[1] end)
      local freed = 0
      for _, bc in ipairs(live) do
        freed = freed + bc[2]
        if used - freed + cost <= limit then retry = (bc[1] + steps) * step - now; break end
      end
    end
    return answer({'rate', tostring(i - 1), tostring(used), string.format('%d', retry), '0', ''})
  end
end
for i = 1, nw do
  local cost = tonumber(ARGV[ab + 2 * i])
  if cost > 0 then
    redis.call('HINCRBY', KEYS[wb + i], string.format('%d', cur), cost)
    redis.call('HINCRBY', KEYS[wb + i], 't', cost)
    redis.call('HSETNX', KEYS[wb + i], 'o', string.format('%d', cur))
    redis.call('PEXPIRE', KEYS[wb + i], (steps + 1) * step)
  end
end
local ttl = tonumber(ARGV[4])
for i = 1, nb do
  local a = 6 + (i - 1) * 4
  local amount, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if amount > 0 then
    redis.call('HSET', KEYS[3 * i - 1], ARGV[3], ARGV[a + 1] .. ' ' .. string.format('%d', now + ttl))
    if redis.call('PTTL', KEYS[3 * i - 1]) < ttl then redis.call('PEXPIRE', KEYS[3 * i - 1], ttl) end
  end
  alert(i, spent[i] + reserved[i] + amount, limit, false)
end
return answer({'ok', '0', '', '', string.format('%d', cur), table.concat(fired, ',')})
"""

# KEYS: per spend: spend, holds; then per token window its key; last, the settlement's mark. ARGV:
# ns, nw, nr, hold id ('' for none), actual usd, only-if-held ('1': a retry, which adds nothing unless
# it finds the hold, since the first try may have settled it and lost its reply), residual ttl ms;
# per residual hold: id, amount; per spend: keep ms; per window: step, delta; last, the mark's ttl ms.
# A marked settlement was applied (its reply lost): nothing again, 0. The hold counts as found when
# any holds hash had it (a budget of the key alone leaves the tenant's without it); the residual
# holds go to each hash it was found in.
SETTLE_LUA = """
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[#ARGV]) then return 0 end
local ns, nw, nr = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, actual = ARGV[4], tonumber(ARGV[5])
local ttl = tonumber(ARGV[7])
local found = {}
if hold ~= '' then
  for i = 1, ns do
    if redis.call('HDEL', KEYS[2 * i], hold) == 1 then found[#found + 1] = KEYS[2 * i] end
  end
end
if ARGV[6] == '1' and #found == 0 then return 0 end
if nr > 0 and #found > 0 then
  local t = redis.call('TIME')
  local expires = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl)
  for _, holds in ipairs(found) do
    for j = 1, nr do
      redis.call('HSET', holds, ARGV[6 + 2 * j], ARGV[7 + 2 * j] .. ' ' .. expires)
    end
    if redis.call('PTTL', holds) < ttl then redis.call('PEXPIRE', holds, ttl) end
  end
end
local a = 7 + 2 * nr
if actual > 0 then
  for i = 1, ns do
    redis.call('INCRBYFLOAT', KEYS[2 * i - 1], ARGV[5])
    local keep = tonumber(ARGV[a + i])
    if keep > 0 and redis.call('PTTL', KEYS[2 * i - 1]) < 0 then redis.call('PEXPIRE', KEYS[2 * i - 1], keep) end
  end
end
a = a + ns
for i = 1, nw do
  local step, delta = ARGV[a + 2 * i - 1], tonumber(ARGV[a + 2 * i])
  if delta ~= 0 and redis.call('HEXISTS', KEYS[2 * ns + i], step) == 1 then
    redis.call('HINCRBY', KEYS[2 * ns + i], step, delta)
    redis.call('HINCRBY', KEYS[2 * ns + i], 't', delta)
  end
end
return 1
"""


# KEYS: the holds hashes of one reservation. ARGV: hold id, ttl ms. A hold still there (not settled,
# not lapsed) gets a new expiry, now + ttl; a settled or lapsed one is not brought back.
RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i = 1, #KEYS do
  local held, expires = string.match(redis.call('HGET', KEYS[i], ARGV[1]) or '', '(%S+) (%S+)')
  if held and tonumber(expires) > now then
    redis.call('HSET', KEYS[i], ARGV[1], held .. ' ' .. string.format('%d', now + ttl))
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
return 1
"""


def admit_call(a: Admission) -> tuple[list[str], list[Any]]:
    """The script's KEYS and ARGV for one admission."""
    from gateway.state import admitted_key  # every key is built in `gateway.state`, which imports this module

    keys: list[str] = []
    args: list[Any] = [len(a.budgets), len(a.windows), a.hold_id, int(a.ttl_s * 1000), STEP_MS, WINDOW_STEPS]
    for b in a.budgets:
        keys += [b.spend_key, b.holds_key, b.alerts_key]
        args += [repr(b.amount), repr(b.limit), b.keep_ms, ",".join(f"{t:g}" for t in b.thresholds)]
    for w in a.windows:
        keys.append(w.key)
        args += [repr(float(w.limit)), w.cost]
    keys.append(admitted_key(keys[0], a.admit_id))
    args.append(int(ADMITTED_MARK_S * 1000))
    return keys, args


def parse_admitted(row: list[Any]) -> Admitted:
    verdict, index, a, b, step, fired = (v.decode() if isinstance(v, bytes) else str(v) for v in row)
    alerts = tuple((int(i), float(t)) for i, _, t in (f.partition(":") for f in fired.split(",") if f))
    if verdict == "budget":
        return Admitted("budget", int(index), spent=float(a), reserved=float(b), alerts=alerts)
    if verdict == "rate":
        return Admitted("rate", int(index), used=float(a), retry_after_ms=int(b))
    return Admitted("ok", step=int(step), alerts=alerts)


def settle_call(s: Settlement) -> tuple[list[str], list[Any]]:
    from gateway.state import settled_key  # as in `admit_call`

    keys: list[str] = []
    residual = s.residual if s.hold_id else ()
    args: list[Any] = [len(s.spends), len(s.tokens), len(residual), s.hold_id or "", repr(max(0.0, s.actual_usd)),
                       "1" if s.only_if_held and s.hold_id else "0", int(s.residual_ttl_s * 1000)]
    for hold_id, amount in residual:
        args += [hold_id, repr(amount)]
    for spend, holds, keep in s.spends:
        keys += [spend, holds]
        args.append(keep)
    for key, step, delta in s.tokens:
        keys.append(key)
        args += [step, delta]
    keys.append(settled_key(keys[0], s.settle_id))
    args.append(int(SETTLED_MARK_S * 1000))
    return keys, args


class MemoryAdmission:
    """`MemoryStore`'s admission: the script's logic in Python, with no `await` (atomic on one loop)."""

    _floats: dict[str, float]
    _holds: dict[str, dict[str, tuple[float, float]]]
    _windows: dict[str, dict[int, float]]
    _alerts: dict[str, set[float]]
    _sets: dict[str, set[str]]
    _kept_until: dict[str, float]  # a period's spend and alert keys -> when Redis would expire them
    _next_sweep: float

    def _init_admission(self) -> None:
        self._windows, self._alerts, self._kept_until = {}, {}, {}
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        """Drop the period keys kept as long as Redis keeps them. Each period has keys of its own: kept
        for ever, a gateway with day budgets grew by every key's spend and alert marks every day."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + PERIOD_SWEEP_S
        for key in [k for k, until in self._kept_until.items() if until <= now]:
            del self._kept_until[key]
            self._floats.pop(key, None)
            self._alerts.pop(key, None)

    def _live_holds(self, key: str, now: float) -> float:
        holds = self._holds.setdefault(key, {})
        for hold_id in [h for h, (_, expires) in holds.items() if expires <= now]:
            del holds[hold_id]
        return sum(amount for amount, _ in holds.values())

    def _alert(self, i: int, b: BudgetHold, committed: float, over: bool, fired: list[tuple[int, float]],
               now: float) -> None:
        seen = self._alerts.setdefault(b.alerts_key, set())
        for t in b.thresholds:
            if (committed >= t * b.limit or (over and t <= 1)) and t not in seen:
                seen.add(t)
                fired.append((i, t))
                if b.keep_ms > 0:
                    self._kept_until[b.alerts_key] = now + b.keep_ms / 1000
        if not seen:  # nothing fired: as in Redis, no key
            del self._alerts[b.alerts_key]

    async def admit(self, a: Admission) -> Admitted:
        now = time.monotonic()
        now_ms = int(time.time() * 1000)
        self._sweep(now)
        fired: list[tuple[int, float]] = []
        committed: list[float] = []
        for i, b in enumerate(a.budgets):
            spent, reserved = self._floats.get(b.spend_key, 0.0), self._live_holds(b.holds_key, now)
            if spent >= b.limit or spent + reserved + b.amount > b.limit:
                self._alert(i, b, spent + reserved + b.amount, True, fired, now)
                return Admitted("budget", i, spent, reserved, alerts=tuple(fired))
            committed.append(spent + reserved + b.amount)
        for i, w in enumerate(a.windows):
            buckets = self._windows.setdefault(w.key, {})
            verdict = window_check(buckets, now_ms, w.limit, w.cost)
            if not verdict.allowed:
                return Admitted("rate", i, used=verdict.used, retry_after_ms=verdict.retry_after_ms)
        step = step_of(now_ms)
        for w in a.windows:
            buckets = self._windows[w.key]
            for old in [s for s in buckets if s <= step - WINDOW_STEPS]:
                del buckets[old]
            if w.cost > 0:
                buckets[step] = buckets.get(step, 0) + w.cost
        for i, b in enumerate(a.budgets):
            if b.amount > 0:
                self._holds[b.holds_key][a.hold_id] = (b.amount, now + a.ttl_s)
            self._alert(i, b, committed[i], False, fired, now)
        return Admitted("ok", step=step, alerts=tuple(fired))

    async def settle_admission(self, s: Settlement) -> None:
        found: list[str] = []
        if s.hold_id is not None:
            for _, holds, _ in s.spends:
                if self._holds.get(holds, {}).pop(s.hold_id, None) is not None:
                    found.append(holds)
        if s.only_if_held and s.hold_id is not None and not found:
            return
        now = time.monotonic()
        expires = now + s.residual_ttl_s
        for holds in found:
            for hold_id, amount in s.residual:
                self._holds[holds][hold_id] = (amount, expires)
        for spend, _, keep_ms in s.spends:
            if s.actual_usd > 0:
                self._floats[spend] = self._floats.get(spend, 0.0) + s.actual_usd
                if keep_ms > 0:  # as Redis: its expiry is set once, by its first spend
                    self._kept_until.setdefault(spend, now + keep_ms / 1000)
        for key, step, delta in s.tokens:
            buckets = self._windows.get(key, {})
            if step in buckets:
                buckets[step] += delta

    async def renew_hold(self, holds_keys: Sequence[str], hold_id: str, ttl_s: float) -> None:
        now = time.monotonic()
        for key in holds_keys:
            holds = self._holds.get(key, {})
            if hold_id in holds and holds[hold_id][1] > now:
                holds[hold_id] = (holds[hold_id][0], now + ttl_s)

    async def budget_state(self, spend_key: str, holds_key: str) -> tuple[float, float]:
        return self._floats.get(spend_key, 0.0), self._live_holds(holds_key, time.monotonic())

    async def window_usage(self, key: str) -> float:
        buckets = self._windows.get(key, {})
        return float(window_check(buckets, int(time.time() * 1000), 0, 0).used)

    async def set_add(self, key: str, member: str) -> None:
        self._sets.setdefault(key, set()).add(member)


class RedisAdmission:
    """`RedisStore`'s admission: one script call each."""

    _client: Any
    _guarded: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]

    def _init_admission(self) -> None:
        self._admit = self._client.register_script(ADMIT_LUA)
        self._settle_all = self._client.register_script(SETTLE_LUA)
        self._renew = self._client.register_script(RENEW_LUA)

    async def admit(self, a: Admission) -> Admitted:
        if not a.budgets and not a.windows:
            return Admitted("ok")
        keys, args = admit_call(a)
        return parse_admitted(await self._guarded(lambda: self._admit(keys=keys, args=args)))

    async def settle_admission(self, s: Settlement) -> None:
        if not s.spends and not s.tokens:
            return
        keys, args = settle_call(s)
        await self._guarded(lambda: self._settle_all(keys=keys, args=args))

    async def renew_hold(self, holds_keys: Sequence[str], hold_id: str, ttl_s: float) -> None:
        keys, args = list(holds_keys), [hold_id, int(ttl_s * 1000)]
        await self._guarded(lambda: self._renew(keys=keys, args=args))

    async def budget_state(self, spend_key: str, holds_key: str) -> tuple[float, float]:
        async def read() -> tuple[float, float]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(spend_key)
                pipe.hgetall(holds_key)
                spent, holds = await pipe.execute()
            now_ms = time.time() * 1000
            reserved = 0.0
            for value in holds.values():
                amount, _, expires = value.decode().partition(" ")
                if float(expires) > now_ms:
                    reserved += float(amount)
            return float(spent or 0), reserved
        result: tuple[float, float] = await self._guarded(read)
        return result

    async def window_usage(self, key: str) -> float:
        rows = await self._guarded(lambda: self._client.hgetall(key))
        buckets = {int(k): float(v) for k, v in rows.items() if k.isdigit()}  # not 't' and 'o'
        return float(window_check(buckets, int(time.time() * 1000), 0, 0).used)

    async def set_add(self, key: str, member: str) -> None:
        await self._guarded(lambda: self._client.sadd(key, member))
