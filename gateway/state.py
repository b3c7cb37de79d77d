"""Shared state behind one small interface: Redis (single node or cluster) or process memory.

The gateway keeps these keys, all under `sy:` and all built here: cached answers
(`sy:cache:...`), tenant spend (`sy:spend:{<tenant>}`, USD), budget holds of requests in flight
(`sy:hold:{<tenant>}`, a hash: hold id → "amount expiry_ms"; `<hold id>:late:<n>` holds a call a
settled request still reads, `gateway.admission`), rate windows
(`sy:rate:{<tenant>}:<minute>`), the request log (`sy:requests`, a stream capped at about
`max_records` entries) and each logged request's record and feedback (`sy:req:{<tenant>}:<request
id>`, a hash with a TTL: `record` → the record's JSON, `fb:<source>` → a client's feedback of that source,
`fb:gateway:<source>` → the gateway's own, `gateway.feedback`). A
tenant's keys share one hash tag so that a Redis Cluster keeps them in one slot, where one script
can touch them all. Keys read and written alone carry no tag, so that they spread over the
masters: cached answers, the request stream, the ledger's tenant index and the router's keys
(`tests/unit/test_cluster_keys.py` checks both). The promoted router lives in `sy:router:current`
(a small JSON pointer every replica polls), `sy:router:history` (a list, one JSON entry per promotion or rollback) and
`sy:router:artifact:<sha256>` (the artifact's bytes). Target policies' score sketches live in
`sy:calib:{<tenant>}:<policy>:<version>:<time bucket>` (a hash of sums that every replica adds its
observations to: each tenant is calibrated on its own traffic, see `gateway.policy.sharing`), under
the tenant's tag like its other keys.
The spend ledger keeps one hash per tenant and
hour (`sy:ledger:{<tenant>}:<unix hour>`, fields `deployment|policy|plan kind|metric` → a float
sum, kept `LEDGER_TTL_S`), the set of tenants that ever spent (`sy:ledger:tenants`) and, per tenant,
the last write each ledger writer added (`sy:ledger:{<tenant>}:writes`, writer id → sequence
number), so that a write retried after its reply was lost is not added twice. A budget settlement
marks its id (`sy:settled:{<tag>}:<id>`, for two minutes, `gateway.admission_store`) for the same
reason, and an admission stores its reply under its id (`sy:admitted:{<tag>}:<id>`, for 30 s).
The secret that keys prompt digests and prefix-cache salts (`gateway.keyed`), when the config names
none, is `sy:secret` (written once, if absent, and never expired).
Policy versions: `sy:policy:audit:{<policy>}` (a list, one JSON entry per version that came into
force, with its spec) and `sy:policy:current:{<policy>}` (the latest entry: the version every
replica follows; see `gateway.policy.versions`). `record_version` appends and points in one atomic
step, and skips the append when the last entry already has that version and the pointer does not
move, so N replicas loading the same file write one entry.

`reserve` is the budget gate: in one atomic step (a Lua script on Redis, code with no `await` in
memory) it drops expired holds, checks spend + holds + this request's worst case against the
limit, counts the request in its rate window and adds the hold. `settle` removes the hold and adds
what the request really cost, also atomically. Holds expire, so a replica that dies mid-request
does not keep a tenant's budget locked.

The in-memory store is the embedded default and a real second implementation, not a test double.
The Redis store fails fast while its circuit breaker (`gateway.store_breaker`) holds it for down.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import orjson

from gateway.admission_store import (
    Admission,
    Admitted,
    MemoryAdmission,
    RedisAdmission,
    Settlement,
    hash_slot_tag,
)
from gateway.exc_chain import causes, traceback_modules
from gateway.store_breaker import StoreBreaker

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The backing store did not answer; callers decide whether that is fatal.

    `unsent`: the call surely never reached the store (its breaker was open, or no connection could
    be made), so it changed nothing there. Otherwise it may have been carried out and only its reply
    lost (a timeout, a connection cut mid-call), which a retried write must allow for."""

    def __init__(self, message: str, *, unsent: bool = False) -> None:
        super().__init__(message)
        self.unsent = unsent


def _raised_in_redis(exc: BaseException) -> bool:
    """Whether `exc` was raised inside redis-py: past the gateway's innermost frame, the traceback goes
    through a `redis` module (the error itself may come from asyncio's transport below it)."""
    modules = traceback_modules(exc)
    ours = max((i for i, m in enumerate(modules) if m.startswith("gateway.")), default=-1)
    return any(m.startswith("redis.") for m in modules[ours + 1:])


# Plain refusals that still speak of the whole server, not of the one command: a script running too long,
# snapshots failing, too few replicas to write to. (redis-py's own subclasses say the rest: OOM, READONLY,
# LOADING, CLUSTERDOWN, ...)
_SERVER_WIDE = ("BUSY ", "MISCONF ", "NOREPLICAS ")  # the space: BUSYKEY is RESTORE's, about its key alone


def _refused_command(exc: BaseException) -> bool:
    """Whether Redis answered `exc` to this command alone (a wrong argument, a wrong type, a script's own
    error): the store is up, and one request's bad command must not open the breaker every tenant shares."""
    from redis.exceptions import ResponseError

    if type(exc) is not ResponseError:
        return False
    reply = str(exc)
    if reply.startswith("Command # "):  # a pipeline's: redis-py puts the command's place before the reply
        reply = reply.rpartition(" of pipeline caused error: ")[2].lstrip("('\"")
    return not reply.startswith(_SERVER_WIDE)


def _no_free_connection(exc: BaseException) -> bool:
    """Whether `exc` is this process's pool having had no connection free within the timeout: more of its
    own calls at once than it has connections (a burst on one worker), not a store that failed. Such a call
    fails alone (nothing was sent); taken for an outage, one tenant's burst opened the breaker every tenant
    shares. A store that hangs still opens it: the calls holding the connections time out."""
    from redis.exceptions import ConnectionError as NoConnection
    from redis.exceptions import MaxConnectionsError

    if isinstance(exc, MaxConnectionsError):  # a cluster node's pool, full (refused at once)
        return True
    return type(exc) is NoConnection and isinstance(exc.__cause__, TimeoutError) \
        and str(exc) == NO_FREE_CONNECTION


def _never_connected(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) is a refused connection: nothing was sent."""
    return any(isinstance(e, ConnectionRefusedError) for e in (exc, *causes(exc)))


def spend_key(tenant: str) -> str:
    return f"sy:spend:{{{tenant}}}"


def holds_key(tenant: str) -> str:
    return f"sy:hold:{{{tenant}}}"


def rate_key(tenant: str, minute: int) -> str:
    return f"sy:rate:{{{tenant}}}:{minute}"


def scoped(tenant: str, key_id: str | None) -> str:
    """The hash tag and scope of a tenant's (or one of its keys') budget and window keys."""
    return f"{{{tenant}}}" if key_id is None else f"{{{tenant}}}:key:{key_id}"


def period_spend_key(tenant: str, key_id: str | None, period_id: str) -> str:
    """A budget's spend in one period; a tenant's `total` is the plain `spend_key`."""
    return f"sy:spend:{scoped(tenant, key_id)}" + ("" if period_id == "total" else f":{period_id}")


def scoped_holds_key(tenant: str, key_id: str | None) -> str:
    return f"sy:hold:{scoped(tenant, key_id)}"


def alerts_key(tenant: str, key_id: str | None, period_id: str) -> str:
    """Which budget thresholds already fired in a period: hash threshold → when."""
    return f"sy:alert:{scoped(tenant, key_id)}:{period_id}"


def window_key(tenant: str, key_id: str | None, limit: str) -> str:
    """A sliding window (`gateway.windows`) of a tenant or key: hash step → count."""
    return f"sy:window:{scoped(tenant, key_id)}:{limit}"


def deployment_window_key(deployment: str, limit: str) -> str:
    return f"sy:window:{{deploy:{deployment}}}:{limit}"


def settled_key(key: str, settle_id: str) -> str:
    """The mark of settlement `settle_id`, in the slot of `key` (one of the keys it settles)."""
    return f"sy:settled:{{{hash_slot_tag(key)}}}:{settle_id}"


def admitted_key(key: str, admit_id: str) -> str:
    """The mark of admission `admit_id` (holding its reply), in the slot of `key` (one it checks)."""
    return f"sy:admitted:{{{hash_slot_tag(key)}}}:{admit_id}"


def virtual_key_key(key_id: str) -> str:
    """An admin-created key's record (JSON, with the key's sha256, never the key)."""
    return f"sy:vkey:{{{key_id}}}"


VIRTUAL_KEYS_INDEX = "sy:vkeys"


def router_current_key() -> str:
    return "sy:router:current"


def router_history_key() -> str:
    return "sy:router:history"


def router_artifact_key(digest: str) -> str:
    return f"sy:router:artifact:{digest}"


def policy_audit_key(policy: str) -> str:
    return f"sy:policy:audit:{{{policy}}}"


def policy_current_key(policy: str) -> str:
    return f"sy:policy:current:{{{policy}}}"


def calibration_key(policy: str, version: str, tenant: str, bucket: int) -> str:
    return f"sy:calib:{{{tenant}}}:{policy}:{version}:{bucket}"


REQUESTS_STREAM = "sy:requests"
DIGEST_SECRET_KEY = "sy:secret"
LEDGER_TENANTS = "sy:ledger:tenants"
LEDGER_TTL_S = 400 * 24 * 3600  # a year of hourly spend, and a month to compare it with


def ledger_key(tenant: str, hour: int) -> str:
    """One tenant's spend in one hour (`hour`: unix seconds // 3600)."""
    return f"sy:ledger:{{{tenant}}}:{hour}"


def ledger_writes_key(tenant: str) -> str:
    """Writer id → the last write sequence added to this tenant's ledger hashes (same slot as them)."""
    return f"sy:ledger:{{{tenant}}}:writes"


def record_digest(record: bytes) -> str:
    """What names one stored request record (`Store.put_feedback`'s `about`): Redis's own `sha1hex`."""
    return hashlib.sha1(record, usedforsecurity=False).hexdigest()


def request_key(tenant: str, request_id: str) -> str:
    return f"sy:req:{{{tenant}}}:{request_id}"


def request_tenant(key: str) -> str:
    """The tenant of a `request_key`: up to the first `}:`, which only the tenant's part can hold
    before a client's request id, which may hold anything printable."""
    return key[len("sy:req:{"):].partition("}:")[0]


def answer_key(namespace: str, tenant: str, digest: str) -> str:
    """A cached answer. Untagged on purpose: each is read and written alone, and one tenant's
    answers would otherwise all land on one Redis Cluster node."""
    return f"sy:cache:{namespace}:{tenant}:{digest}"


RATE_WINDOW_TTL_S = 120  # a minute window, kept a minute longer for clock skew between replicas


@dataclass(frozen=True, slots=True)
class Budget:
    """A reservation request: hold `amount` against `limit` for at most `ttl_s`."""

    spend_key: str
    holds_key: str
    hold_id: str
    amount: float
    limit: float
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Rate:
    """Count this request in a fixed window; over `limit` is a refusal."""

    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class Reserved:
    verdict: Literal["ok", "budget", "rate"]
    spent: float = 0.0     # settled spend when the check ran
    reserved: float = 0.0  # other requests' live holds when the check ran
    requests: int = 0      # this request's number in its rate window (0: not counted)


# KEYS: spend, holds, rate window (optional). ARGV: hold id, amount, limit, hold ttl ms, rate limit.
# Returns {verdict, spent, reserved, count}; numbers as strings (Lua would truncate them to integers).
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local spent, reserved = 0, 0
local amount = tonumber(ARGV[2])
if ARGV[3] ~= '' then
  spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  local holds = redis.call('HGETALL', KEYS[2])
  for i = 1, #holds, 2 do
    local held, expires = string.match(holds[i + 1], '(%S+) (%S+)')
    if tonumber(expires) <= now then
      redis.call('HDEL', KEYS[2], holds[i])
    else
      reserved = reserved + tonumber(held)
    end
  end
  local limit = tonumber(ARGV[3])
  if spent >= limit or spent + reserved + amount > limit then
    return {'budget', tostring(spent), tostring(reserved), '0'}
  end
end
local count = 0
if #KEYS > 2 then
  count = redis.call('INCR', KEYS[3])
  if count == 1 then redis.call('EXPIRE', KEYS[3], 120) end  -- RATE_WINDOW_TTL_S
  if count > tonumber(ARGV[5]) then
    return {'rate', tostring(spent), tostring(reserved), tostring(count)}
  end
end
if ARGV[3] ~= '' and amount > 0 then
  local ttl = tonumber(ARGV[4])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. string.format('%d', now + ttl))
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return {'ok', tostring(spent), tostring(reserved), tostring(count)}
"""


@dataclass(frozen=True, slots=True)
class SumsOnce:
    """Float sums for hashes in one cluster slot, added unless this writer's write `seq` (or a later
    one) was already added there: `marker` is a hash of writer → last sequence added, in the same
    slot as the sums' keys. A writer numbers its writes in order and retries one until it is added."""

    marker: str
    writer: str
    seq: int
    sums: Mapping[str, Mapping[str, float]]


class Store(Protocol):
    kind: str

    async def get(self, key: str) -> bytes | None: ...
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...
    async def set_if_absent(self, key: str, value: bytes) -> bytes: ...  # what the key holds after: lasting
    async def replace_if(self, key: str, expected: bytes, value: bytes) -> bool: ...  # set only over `expected`
    async def incr(self, key: str, ttl_s: float) -> int: ...
    async def incr_float(self, key: str, amount: float) -> float: ...
    async def get_float(self, key: str) -> float: ...
    async def reserve(self, budget: Budget | None, rate: Rate | None) -> Reserved: ...
    async def settle(self, spend_key: str, holds_key: str, hold_id: str | None, actual: float) -> None: ...
    async def list_append(self, key: str, value: bytes) -> None: ...
    async def list_read(self, key: str) -> list[bytes]: ...
    async def record_version(self, log_key: str, current_key: str, entry: bytes, version: str,
                             replace_current: bool) -> bool: ...
    # The request log: records (index key, JSON) appended to a capped stream and indexed by key.
    async def append_records(self, stream: str, items: Sequence[tuple[str, bytes]], maxlen: int,
                             ttl_s: float) -> None: ...
    async def request_entries(self, keys: Sequence[str]) -> list[dict[str, bytes] | None]: ...
    async def put_feedback(self, key: str, field: str, value: bytes, about: str | None = None) -> bool | None: ...
    async def records_after(self, stream: str, after: str, count: int) -> list[tuple[str, bytes]]: ...
    # Float sums added to hashes (score sketches, the spend ledger), merged rather than overwritten
    # across replicas, each hash given a TTL; plus members added to an index set.
    async def add_to_hashes(self, sums: Mapping[str, Mapping[str, float]], ttl_s: float,
                            index: tuple[str, Sequence[str]] | None = None) -> None: ...
    async def add_to_hashes_once(self, groups: Sequence[SumsOnce], ttl_s: float, marker_ttl_s: float,
                                 index: tuple[str, Sequence[str]] | None = None) -> None: ...
    async def read_hashes(self, keys: Sequence[str]) -> list[dict[str, float]]: ...
    async def set_members(self, key: str) -> list[str]: ...
    async def set_add(self, key: str, member: str) -> None: ...
    # Admission (`gateway.admission_store`): budgets and sliding windows, checked and taken atomically.
    async def admit(self, a: Admission) -> Admitted: ...
    async def settle_admission(self, s: Settlement) -> None: ...
    async def renew_hold(self, holds_keys: Sequence[str], hold_id: str, ttl_s: float) -> None: ...
    async def budget_state(self, spend_key: str, holds_key: str) -> tuple[float, float]: ...
    async def window_usage(self, key: str) -> float: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


# A stream id is "<ms>-<seq>"; `records_after` takes one exclusively, so "<ms - 1>-<max>" starts at <ms>.
MAX_SEQ = 2**64 - 1


def since_id(ms: int) -> str:
    """The exclusive start id that reads a stream from `ms` (unix milliseconds) onwards."""
    return f"{ms - 1}-{MAX_SEQ}" if ms > 0 else "0-0"


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# The non-empty hashes among KEYS (all in one slot), as index, fields: a read of many hashes that are
# mostly absent (a spend report reads one per hour of up to 400 days) costs one command and returns
# what exists, rather than one pipelined command per hash (~45 µs of client CPU each: 0.44 s for a
# 400-day report, on the event loop every tenant's requests share). The page comes back as one JSON
# text, not as a reply of two strings per field: the client's reply parser is Python, ~20 µs per string,
# and a busy gateway's hashes hold a hundred fields each, so a day of fifty tenants' hashes was seconds of
# the event loop; orjson reads the same page in milliseconds.
_READ_HASHES_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local row = redis.call('HGETALL', key)
  if #row > 0 then
    out[#out + 1] = i
    out[#out + 1] = row
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""
# Keys per such read: ~1 ms of Redis each, so no one read holds the store (or waits on it) for long.
READ_HASHES_PAGE = 1024


# KEYS: the request's key. ARGV: field, value. Feedback only for a request that is logged:
# returns -1 when there is no such record, 1 when this field was replaced, 0 when it is new.
# ARGV[3], when given: the SHA-1 of the record the label is about; another record under the key (a
# reused request id) is not it, and is answered as no record at all.
_FEEDBACK_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[3] and redis.sha1hex(redis.call('HGET', KEYS[1], 'record') or '') ~= ARGV[3] then return -1 end
return 1 - redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
"""

# Set KEYS[1] to ARGV[2] only while it still holds ARGV[1]: a read-modify-write that loses no other write.
_REPLACE_IF_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: the writers' marker hash, then the hashes to add to. ARGV: writer, seq, hash TTL, marker TTL,
# then per hash its field count and (field, amount) pairs. Adds nothing when this writer's last
# added write is `seq` or later (a retry of a write whose reply was lost); returns 1 when it added.
_ADD_ONCE_LUA = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if last >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local a = 5
for k = 2, #KEYS do
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    redis.call('HINCRBYFLOAT', KEYS[k], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  redis.call('EXPIRE', KEYS[k], ARGV[3])
end
return 1
"""

# KEYS: a policy's audit list, its current pointer. ARGV: entry JSON, its version, "1" to point at it
# (a change: unless the pointer has this version already) or "0" to point at it only when no pointer
# exists (a start-up load). Returns 1 when the entry was appended (the last one had another version).
_RECORD_VERSION_LUA = """
local last = redis.call('LINDEX', KEYS[1], -1)
local current = redis.call('GET', KEYS[2])
local moved = ARGV[3] == '1' and current and cjson.decode(current)['version'] ~= ARGV[2]
local appended = 0
if not last or moved or cjson.decode(last)['version'] ~= ARGV[2] then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  appended = 1
end
if not current or moved then
  redis.call('SET', KEYS[2], ARGV[1])
end
return appended
"""


def _json_version(raw: bytes) -> str | None:
    value = orjson.loads(raw).get("version")
    return str(value) if value is not None else None


def _owned(value: bytes) -> bytes:
    """An exact-size copy of a value the memory store keeps. orjson (3.12 and later) hands back bytes
    whose allocation is rounded up to several KB and never shrunk: kept as they are, the store's
    100,000 cache entries and request records would hold ~8 KB each whatever their length (a
    200-byte record: 393 MB per 100,000 instead of 23 MB)."""
    return bytes(memoryview(value))


class MemoryStore(MemoryAdmission):
    """A dict with expiry. Bounded so a long-running demo cannot grow without end, in keys and in
    bytes: 100,000 cached answers of a long completion each (or of `n` of them) held gigabytes. What
    it keeps is copied to its exact size (`_owned`)."""

    kind = "memory"

    def __init__(self, max_keys: int = 100_000, max_bytes: int = 256 * 2**20,
                 max_record_bytes: int = 128 * 2**20) -> None:
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._bytes = 0  # of the values in `_data`
        self._max_bytes = max_bytes
        self._floats: dict[str, float] = {}
        self._holds: dict[str, dict[str, tuple[float, float]]] = {}  # holds key -> id -> (amount, expiry)
        self._lists: dict[str, list[bytes]] = {}
        self._hashes: dict[str, tuple[dict[str, float], float]] = {}  # key -> (fields, expiry)
        self._max_keys = max_keys
        self._streams: dict[str, deque[tuple[str, bytes]]] = {}
        # Request records are capped in bytes as well as in count, the stream and each tenant's apart:
        # 100,000 records of `log_prompts` tenants' 12,000-character prompts held gigabytes.
        self._max_record_bytes = max_record_bytes
        self._stream_bytes: dict[str, int] = {}
        self._request_bytes: dict[str, int] = {}  # tenant -> bytes of its records in `_requests`
        # tenant → request key → (fields, expiry), oldest first; each tenant capped apart (`append_records`)
        self._requests: dict[str, OrderedDict[str, tuple[dict[str, bytes], float]]] = {}
        self._last_id = (0, 0)
        self._sets: dict[str, set[str]] = {}
        self._init_admission()

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            self._drop(key)
            return None
        return value

    def _put(self, key: str, value: bytes, expires: float | None) -> None:
        old = self._data.get(key)
        self._bytes += len(value) - (0 if old is None else len(old[0]))
        self._data[key] = (value, expires)

    def _drop(self, key: str) -> None:
        self._bytes -= len(self._data.pop(key)[0])

    async def get(self, key: str) -> bytes | None:
        # A float counter (spend) reads back as Redis returns it after INCRBYFLOAT: its text.
        if key in self._floats:
            return repr(self._floats[key]).encode()
        return self._live(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._floats.pop(key, None)
        if len(self._data) >= self._max_keys and key not in self._data:
            self._evict()
        self._put(key, _owned(value), time.monotonic() + ttl_s if ttl_s else None)
        while self._bytes > self._max_bytes and self._evict():
            pass

    async def set_if_absent(self, key: str, value: bytes) -> bytes:
        kept = self._live(key)
        if kept is None:
            await self.set(key, value)
            kept = self._data[key][0]
        return kept

    async def replace_if(self, key: str, expected: bytes, value: bytes) -> bool:
        if self._live(key) != expected:
            return False
        await self.set(key, value)
        return True

    def _evict(self) -> bool:
        """Drop the oldest entry that expires anyway (a cached answer), never a lasting one (an admin-made
        key's record, a pointer): answers that any tenant can fill the store with must not push out what
        the operator wrote, which would log every admin-made key out. False: there was none."""
        for key, (_, expires) in self._data.items():
            if expires is not None:
                self._drop(key)
                return True  # before the loop would step over the changed dict
        return False

    async def incr(self, key: str, ttl_s: float) -> int:
        return self._incr(key, ttl_s)

    def _incr(self, key: str, ttl_s: float) -> int:
        current = int(self._live(key) or b"0") + 1
        expires = self._data[key][1] if key in self._data else time.monotonic() + ttl_s
        self._put(key, str(current).encode(), expires)
        return current

    async def incr_float(self, key: str, amount: float) -> float:
        self._floats[key] = self._floats.get(key, 0.0) + amount
        return self._floats[key]

    async def get_float(self, key: str) -> float:
        return self._floats.get(key, 0.0)

    async def reserve(self, budget: Budget | None, rate: Rate | None) -> Reserved:
        # No await from here to the end: on one event loop this is atomic, like the Lua script.
        now = time.monotonic()
        spent = reserved = 0.0
        if budget is not None:
            spent = self._floats.get(budget.spend_key, 0.0)
            holds = self._holds.setdefault(budget.holds_key, {})
            for hold_id in [h for h, (_, expires) in holds.items() if expires <= now]:
                del holds[hold_id]
            reserved = sum(amount for amount, _ in holds.values())
            if spent >= budget.limit or spent + reserved + budget.amount > budget.limit:
                return Reserved("budget", spent, reserved)
        count = 0
        if rate is not None:
            count = self._incr(rate.key, RATE_WINDOW_TTL_S)
            if count > rate.limit:
                return Reserved("rate", spent, reserved, count)
        if budget is not None and budget.amount > 0:
            self._holds[budget.holds_key][budget.hold_id] = (budget.amount, now + budget.ttl_s)
        return Reserved("ok", spent, reserved, count)

    async def settle(self, spend_key: str, holds_key: str, hold_id: str | None, actual: float) -> None:
        if hold_id is not None:
            self._holds.get(holds_key, {}).pop(hold_id, None)
        if actual > 0:
            self._floats[spend_key] = self._floats.get(spend_key, 0.0) + actual

    async def list_append(self, key: str, value: bytes) -> None:
        self._lists.setdefault(key, []).append(_owned(value))

    async def list_read(self, key: str) -> list[bytes]:
        return list(self._lists.get(key, ()))

    async def record_version(self, log_key: str, current_key: str, entry: bytes, version: str,
                             replace_current: bool) -> bool:
        log = self._lists.setdefault(log_key, [])
        entry = _owned(entry)
        current = self._live(current_key)
        moved = replace_current and current is not None and _json_version(current) != version
        appended = not log or moved or _json_version(log[-1]) != version
        if appended:
            log.append(entry)
        if current is None or moved:
            self._put(current_key, entry, None)
        return appended

    def _next_id(self) -> str:
        ms, seq = int(time.time() * 1000), 0
        if ms <= self._last_id[0]:
            ms, seq = self._last_id[0], self._last_id[1] + 1
        self._last_id = (ms, seq)
        return f"{ms}-{seq}"

    async def append_records(self, stream: str, items: Sequence[tuple[str, bytes]], maxlen: int,
                             ttl_s: float) -> None:
        log = self._streams.get(stream)
        if log is None or log.maxlen != maxlen:
            log = self._streams[stream] = deque(log or (), maxlen=maxlen)
            self._stream_bytes[stream] = sum(len(record) for _, record in log)
        expires = time.monotonic() + ttl_s
        for key, raw in items:
            record = _owned(raw)
            if len(log) == maxlen:  # append pushes the oldest out
                self._stream_bytes[stream] -= len(log[0][1])
            log.append((self._next_id(), record))
            self._stream_bytes[stream] += len(record)
            while len(log) > 1 and self._stream_bytes[stream] > self._max_record_bytes:
                self._stream_bytes[stream] -= len(log.popleft()[1])
            # `maxlen` records per tenant, not in all: in one pool, one tenant's burst evicted every
            # other tenant's records, and their feedback was a 404 (on Redis each key lives its TTL).
            tenant = request_tenant(key)
            kept = self._requests.setdefault(tenant, OrderedDict())
            if key in kept:
                self._forget_request(tenant, kept, key)
            kept[key] = ({"record": record}, expires)
            self._request_bytes[tenant] = self._request_bytes.get(tenant, 0) + len(record)
            while len(kept) > maxlen or (len(kept) > 1 and self._request_bytes[tenant] > self._max_record_bytes):
                self._forget_request(tenant, kept, next(iter(kept)))

    def _forget_request(self, tenant: str, kept: OrderedDict[str, tuple[dict[str, bytes], float]],
                        key: str) -> None:
        self._request_bytes[tenant] -= len(kept.pop(key)[0]["record"])

    def _request(self, key: str) -> dict[str, bytes] | None:
        tenant = request_tenant(key)
        kept = self._requests.get(tenant)
        item = None if kept is None else kept.get(key)
        if kept is None or item is None:
            return None
        if item[1] <= time.monotonic():
            self._forget_request(tenant, kept, key)
            return None
        return item[0]

    async def request_entries(self, keys: Sequence[str]) -> list[dict[str, bytes] | None]:
        return [None if (f := self._request(k)) is None else dict(f) for k in keys]

    async def put_feedback(self, key: str, field: str, value: bytes, about: str | None = None) -> bool | None:
        fields = self._request(key)
        if fields is None or (about is not None and record_digest(fields.get("record", b"")) != about):
            return None
        replaced = field in fields
        fields[field] = _owned(value)
        return replaced

    async def records_after(self, stream: str, after: str, count: int) -> list[tuple[str, bytes]]:
        start = _stream_id(after)
        out = []
        for entry_id, record in self._streams.get(stream, ()):
            if _stream_id(entry_id) > start:
                out.append((entry_id, record))
                if len(out) >= count:
                    break
        return out

    async def add_to_hashes(self, sums: Mapping[str, Mapping[str, float]], ttl_s: float,
                            index: tuple[str, Sequence[str]] | None = None) -> None:
        now = time.monotonic()
        for k in [k for k, (_, expires) in self._hashes.items() if expires <= now]:
            del self._hashes[k]
        for key, fields in sums.items():
            row, _ = self._hashes.get(key, ({}, 0.0))
            for name, amount in fields.items():
                row[name] = row.get(name, 0.0) + amount
            self._hashes[key] = (row, now + ttl_s)
        if index is not None:
            self._sets.setdefault(index[0], set()).update(index[1])

    async def add_to_hashes_once(self, groups: Sequence[SumsOnce], ttl_s: float, marker_ttl_s: float,
                                 index: tuple[str, Sequence[str]] | None = None) -> None:
        for g in groups:
            marker, _ = self._hashes.get(g.marker, ({}, 0.0))
            if marker.get(g.writer, -1.0) >= g.seq:
                continue
            await self.add_to_hashes(g.sums, ttl_s)
            marker[g.writer] = float(g.seq)
            self._hashes[g.marker] = (marker, time.monotonic() + marker_ttl_s)
        if index is not None:
            self._sets.setdefault(index[0], set()).update(index[1])

    async def read_hashes(self, keys: Sequence[str]) -> list[dict[str, float]]:
        now = time.monotonic()
        out = []
        for key in keys:
            fields, expires = self._hashes.get(key, ({}, now))
            out.append(dict(fields) if expires > now else {})
        return out

    async def set_members(self, key: str) -> list[str]:
        return sorted(self._sets.get(key, ()))

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()
        self._bytes = 0


# A single Redis's connections per process, a cluster's per node (redis-py's default); more calls wait.
POOL_CONNECTIONS = 100
NO_FREE_CONNECTION = "No connection available."  # redis-py's words for a call that waited for one in vain
# A plain `redis://` URL naming a node of a Redis Cluster: the node answers PING, and MOVED to any key of
# another node's slots, so every keyed call fails although the store looks up.
CLUSTER_NODE = ("redis_url names a node of a Redis Cluster (it answered MOVED {reply}): write it as "
                "redis+cluster://host:port, or add ?cluster=true, so the client follows the cluster's slots")


class RedisStore(RedisAdmission):
    """redis-py's asyncio client. Every call has a socket timeout and goes through a circuit breaker
    (`StoreBreaker`); failures become StoreUnavailable. A connection error (a pooled connection left
    stale by a Redis restart) is retried once on a fresh connection; a timeout is not retried."""

    kind = "redis"

    def __init__(self, url: str, *, timeout_s: float = 0.5, breaker: StoreBreaker | None = None) -> None:
        import redis.asyncio as redis  # deferred: the embedded default never needs it
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisClusterException

        # RedisClusterException ("cannot be connected", a slot with no node) is not a RedisError.
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException, OSError,
                                                          asyncio.TimeoutError)
        self.breaker = breaker or StoreBreaker()
        # The most one store call may take on a cluster, however its client retries: one whose nodes stop
        # answering re-reads the topology from every seed (about 4 s) before it gives up. A single Redis is
        # bounded by its socket timeout per read (and one retry), which lets a large call that keeps
        # making progress finish.
        self._call_s: float | None = None
        self._client_errors: tuple[type[BaseException], ...] = ()  # a cluster client's own (below)
        self._slots: asyncio.Semaphore | None = None  # a cluster's calls at once (below)
        self._timeout_s = timeout_s
        # Set when a single-server client is answered MOVED (CLUSTER_NODE), for good: the keys of the node's own
        # slots still answer, but the URL is wrong until it is mended (and the gateway restarted).
        self._cluster_node: str | None = None
        # redis-py's default retries timeouts too, with back-off: a hung Redis would hold every call.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        self._client: Any
        if (seed := cluster_seed_url(url)) is not None:
            url = seed
            self._client = redis.RedisCluster.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=retry,
                max_connections=POOL_CONNECTIONS)
            # Its pool of each node refuses a call past its connections at once (MaxConnectionsError), and one
            # tenant's keys share a slot: a burst of that tenant's requests on one worker reached it on one node,
            # and opened the breaker every tenant shares. As on a single Redis, a call waits for a free one
            # (within the store's timeout): no more calls at once than one node has connections.
            self._slots = asyncio.Semaphore(POOL_CONNECTIONS)
            # redis-py's async cluster client, a node dying under it, reuses the dead connection and fails
            # inside its own code ("'NoneType' object has no attribute 'writelines'", "unable to perform
            # operation on <TCPTransport closed=True>"): a store failure like any other, not a 500 with the
            # request's spend left out of its budget. Only where redis-py raised them (`_guarded`): the same
            # errors from the gateway's own code are bugs, not an outage for every tenant.
            self._client_errors = (RuntimeError, AttributeError)
            self._call_s = 3 * timeout_s
        else:
            # A call waits for a free connection, within the store's timeout: redis-py's default pool refuses
            # the call past its connections at once ("Too many connections"), a failure the breaker takes for
            # an outage, and a burst of requests arriving together on one worker reached it.
            pool = redis.BlockingConnectionPool.from_url(
                single_server_url(url), max_connections=POOL_CONNECTIONS, timeout=timeout_s, socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s, health_check_interval=10, retry_on_timeout=False, retry=retry,
                retry_on_error=[RedisConnectionError])
            self._client = redis.Redis.from_pool(pool)
        self._reserve = self._client.register_script(_RESERVE_LUA)
        self._feedback = self._client.register_script(_FEEDBACK_LUA)
        self._read_hashes = self._client.register_script(_READ_HASHES_LUA)
        self._record_version = self._client.register_script(_RECORD_VERSION_LUA)
        self._add_once = self._client.register_script(_ADD_ONCE_LUA)
        self._replace_if = self._client.register_script(_REPLACE_IF_LUA)
        self._init_admission()

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one store call under the breaker: refused at once while it is open."""
        slots = self._slots
        if slots is None:
            return await self._attempt(call)
        await self._take_slot(slots)
        try:
            return await self._attempt(call)
        finally:
            slots.release()

    async def _take_slot(self, slots: asyncio.Semaphore) -> None:
        """A place among the calls at once, waited for within the store's timeout (the breaker is asked after
        the wait, which a call that hangs may have opened); none while the store is marked down."""
        if not slots.locked():
            await slots.acquire()  # free: returns at once
            return
        if not self.breaker.closed:
            raise StoreUnavailable(self._down(), unsent=True)
        try:
            async with asyncio.timeout(self._timeout_s):
                await slots.acquire()
        except TimeoutError:
            raise StoreUnavailable(NO_FREE_CONNECTION, unsent=True) from None

    def _down(self) -> str:
        down = f"store marked down for {self.breaker.cooldown_s:g} s after a failure"
        return down if self._cluster_node is None else f"{down}: {self._cluster_node}"

    def _moved(self, exc: BaseException) -> str | None:
        """CLUSTER_NODE when a single-server client was answered MOVED or ASK, else None."""
        from redis.exceptions import AskError

        if self._slots is not None or not isinstance(exc, AskError):
            return None
        self._cluster_node = CLUSTER_NODE.format(reply=str(exc))
        return self._cluster_node

    async def _attempt(self, call: Callable[[], Awaitable[T]]) -> T:
        """The call itself, if the breaker lets it through; its outcome reported to the breaker and its failures
        made StoreUnavailable."""
        breaker = self.breaker
        if not breaker.allow():
            raise StoreUnavailable(self._down(), unsent=True)
        trial = not breaker.closed
        try:
            if self._call_s is None:
                result = await call()
            else:
                async with asyncio.timeout(self._call_s):
                    result = await call()
        except self._errors as exc:
            waited = _no_free_connection(exc)
            if waited:
                if trial:
                    breaker.abandoned()  # it never reached the store: it proved nothing
            elif not _refused_command(exc):
                breaker.failed()
            elif trial:
                breaker.succeeded()  # it answered
            message = self._moved(exc) or str(exc) or type(exc).__name__
            raise StoreUnavailable(message, unsent=waited or _never_connected(exc)) from exc
        except self._client_errors as exc:
            if not _raised_in_redis(exc):
                if trial:
                    breaker.abandoned()
                raise
            breaker.failed()
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}", unsent=False) from exc
        except BaseException:
            if trial:
                breaker.abandoned()
            raise
        breaker.succeeded()
        return result

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._guarded(lambda: self._client.get(key))
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One round trip, in order. A pipeline rather than MGET: the keys may sit in different slots,
        and a cluster client sends a pipeline's commands to each key's node (one batch per node)."""
        async def read() -> list[bytes | None]:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(key)
                values: list[bytes | None] = await pipe.execute()
            return values
        return await self._guarded(read) if keys else []

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._guarded(lambda: self._client.set(key, value, px=int(ttl_s * 1000) if ttl_s else None))

    async def set_if_absent(self, key: str, value: bytes) -> bytes:
        """SET NX and GET in one round trip: of replicas racing to write, every one reads the winner's."""
        async def kept() -> bytes:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(key, value, nx=True)
                pipe.get(key)
                _, current = await pipe.execute()
            return value if current is None else bytes(current)  # None: deleted in between (an operator)
        return await self._guarded(kept)

    async def replace_if(self, key: str, expected: bytes, value: bytes) -> bool:
        return bool(await self._guarded(lambda: self._replace_if(keys=[key], args=[expected, value])))

    async def incr(self, key: str, ttl_s: float) -> int:
        async def counted() -> int:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, int(ttl_s), nx=True)
                count, _ = await pipe.execute()
            return int(count)

        return await self._guarded(counted)

    async def incr_float(self, key: str, amount: float) -> float:
        return float(await self._guarded(lambda: self._client.incrbyfloat(key, amount)))

    async def get_float(self, key: str) -> float:
        raw = await self.get(key)
        return float(raw) if raw else 0.0

    async def reserve(self, budget: Budget | None, rate: Rate | None) -> Reserved:
        """One round trip: the budget check and hold, and the rate count, in one script."""
        if budget is None and rate is None:
            return Reserved("ok")
        keys = [budget.spend_key, budget.holds_key] if budget else ["", ""]
        if budget is None and rate is not None:  # the script's keys must share the rate key's slot
            keys = [rate.key, rate.key]
        args = [budget.hold_id, repr(budget.amount), repr(budget.limit), int(budget.ttl_s * 1000)] if budget \
            else ["", "0", "", 0]
        if rate is not None:
            keys.append(rate.key)
            args.append(rate.limit)
        verdict, spent, reserved, count = await self._guarded(lambda: self._reserve(keys=keys, args=args))
        return Reserved(_text(verdict), float(spent), float(reserved), int(count))  # type: ignore[arg-type]

    async def settle(self, spend_key: str, holds_key: str, hold_id: str | None, actual: float) -> None:
        """Release the hold and add the real cost in one transaction (one round trip)."""
        if hold_id is None:
            if actual > 0:
                await self.incr_float(spend_key, actual)
            return

        async def settled() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(holds_key, hold_id)
                if actual > 0:
                    pipe.incrbyfloat(spend_key, actual)
                await pipe.execute()
        await self._guarded(settled)

    async def list_append(self, key: str, value: bytes) -> None:
        await self._guarded(lambda: self._client.rpush(key, value))

    async def list_read(self, key: str) -> list[bytes]:
        items: list[bytes] = await self._guarded(lambda: self._client.lrange(key, 0, -1))
        return items

    async def record_version(self, log_key: str, current_key: str, entry: bytes, version: str,
                             replace_current: bool) -> bool:
        appended = await self._guarded(lambda: self._record_version(
            keys=[log_key, current_key], args=[entry, version, "1" if replace_current else "0"]))
        return bool(appended)

    async def append_records(self, stream: str, items: Sequence[tuple[str, bytes]], maxlen: int,
                             ttl_s: float) -> None:
        """One round trip for a batch: XADD to the capped stream (approximate MAXLEN: trimming whole
        nodes is what keeps it cheap), and each record's key with its TTL."""
        async def appended() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, record in items:
                    pipe.xadd(stream, {"k": key, "r": record}, maxlen=maxlen, approximate=True)
                    pipe.delete(key)  # a reused request id starts afresh: earlier labels were not about this one
                    pipe.hset(key, "record", record)
                    pipe.expire(key, int(ttl_s))
                await pipe.execute()
        await self._guarded(appended)

    async def request_entries(self, keys: Sequence[str]) -> list[dict[str, bytes] | None]:
        async def read() -> list[dict[str, bytes] | None]:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                rows = await pipe.execute()
            return [{_text(k): v for k, v in row.items()} or None for row in rows]
        return await self._guarded(read)

    async def put_feedback(self, key: str, field: str, value: bytes, about: str | None = None) -> bool | None:
        args = [field, value] if about is None else [field, value, about]
        got = int(await self._guarded(lambda: self._feedback(keys=[key], args=args)))
        return None if got < 0 else got == 1

    async def records_after(self, stream: str, after: str, count: int) -> list[tuple[str, bytes]]:
        rows = await self._guarded(lambda: self._client.xrange(stream, min=f"({after}", max="+", count=count))
        return [(_text(entry_id), fields[b"r"]) for entry_id, fields in rows]

    async def add_to_hashes(self, sums: Mapping[str, Mapping[str, float]], ttl_s: float,
                            index: tuple[str, Sequence[str]] | None = None) -> None:
        """One round trip: HINCRBYFLOAT per field, a TTL per hash, SADD of the index."""
        async def added() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, fields in sums.items():
                    for name, amount in fields.items():
                        pipe.hincrbyfloat(key, name, amount)
                    pipe.expire(key, int(ttl_s))
                if index is not None and index[1]:
                    pipe.sadd(index[0], *index[1])
                await pipe.execute()
        await self._guarded(added)

    async def add_to_hashes_once(self, groups: Sequence[SumsOnce], ttl_s: float, marker_ttl_s: float,
                                 index: tuple[str, Sequence[str]] | None = None) -> None:
        """One script per group (each in one slot, atomic: a retry adds a group at most once), run
        concurrently; then the index."""
        async def added() -> None:
            calls = []
            for g in groups:
                args: list[str | int | float] = [g.writer, g.seq, int(ttl_s), int(marker_ttl_s)]
                for fields in g.sums.values():
                    args.append(len(fields))
                    for name, amount in fields.items():
                        args += [name, repr(amount)]
                calls.append(self._add_once(keys=[g.marker, *g.sums], args=args))
            await asyncio.gather(*calls)
            if index is not None and index[1]:
                await self._client.sadd(index[0], *index[1])
        await self._guarded(added)

    async def read_hashes(self, keys: Sequence[str]) -> list[dict[str, float]]:
        """Keys grouped by slot and read a page at a time (`_READ_HASHES_LUA`), each page one bounded
        store call: a reader of thousands of hashes neither holds the event loop nor runs a call past
        the store's timeout, which would mark the store down for every request."""
        out: list[dict[str, float]] = [{} for _ in keys]
        by_slot: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            by_slot.setdefault(hash_slot_tag(key), []).append(i)
        for indices in by_slot.values():
            for start in range(0, len(indices), READ_HASHES_PAGE):
                page = indices[start:start + READ_HASHES_PAGE]
                found = orjson.loads(await self._guarded(
                    functools.partial(self._read_hashes, keys=[keys[i] for i in page])))
                for at, row in zip(found[::2], found[1::2], strict=True):
                    out[page[int(at) - 1]] = {k: float(v) for k, v in zip(row[::2], row[1::2], strict=True)}
        return out

    async def set_members(self, key: str) -> list[str]:
        members = await self._guarded(lambda: self._client.smembers(key))
        return sorted(_text(m) for m in members)

    async def ping(self) -> bool:
        try:
            answered = bool(await self._guarded(self._client.ping))
        except StoreUnavailable:
            return False
        return answered and self._cluster_node is None  # a cluster node answers PING, and MOVED to the rest

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except self._errors:
            pass


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_FLAG_TRUE, _FLAG_FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _cluster_flag(url: str) -> tuple[bool | None, str]:
    """The `cluster` query parameter of `url` (True, False, or None when absent) and `url` without it. A value
    that is no flag is left in the URL, where `redis_url_problem` names it."""
    base, sep, query = url.partition("?")
    flag: bool | None = None
    kept = []
    for param in (p for p in query.split("&") if p):
        name, _, value = param.partition("=")
        if name == "cluster" and value.lower() in _FLAG_TRUE + _FLAG_FALSE:
            flag = value.lower() in _FLAG_TRUE
        else:
            kept.append(param)
    return flag, f"{base}{sep}{'&'.join(kept)}" if kept else base


def cluster_seed_url(url: str) -> str | None:
    """A Redis Cluster URL (`redis+cluster://`, `rediss+cluster://` or `?cluster=true`) as the plain
    URL of its seed node, from which the client discovers the others; None for a single server."""
    scheme, sep, _ = url.partition("://")
    flag, url = _cluster_flag(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        return f"{scheme.removesuffix('+cluster')}{sep}{url.partition('://')[2]}"
    return url if flag else None


def single_server_url(url: str) -> str:
    """`url` as redis-py opens a single server: without an explicit `?cluster=false`."""
    return _cluster_flag(url)[1]


def redis_url_problem(url: str) -> str | None:
    """Why redis-py cannot open `url` the way `RedisStore` opens it (nothing is connected), or None. A query
    parameter it does not take, a cluster with a database number, a value it cannot read: at start-up, not
    a traceback from deep in redis-py when the first store call opens a connection. Never the URL itself,
    which may hold a password."""
    import redis.asyncio as redis
    from redis.asyncio.connection import ConnectionPool
    from redis.exceptions import RedisClusterException

    seed = cluster_seed_url(url)
    try:
        if seed is not None:
            redis.RedisCluster.from_url(seed)
        else:
            pool = ConnectionPool.from_url(single_server_url(url))
            pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        name = str(exc).rpartition("keyword argument ")[2] or "?"
        return (f"its query parameter {name} is not one redis-py takes"
                + (" for a single server (rediss:// for TLS)" if seed is None else " for a cluster")
                + "; a Redis Cluster is redis+cluster://host:port or ?cluster=true")
    except (ValueError, RedisClusterException) as exc:
        return f"redis-py cannot open it: {exc}"
    return None


def open_store(redis_url: str | None) -> Store:
    return RedisStore(redis_url) if redis_url else MemoryStore()
