"""Virtual keys: API keys that the admin API creates, changes, rotates and revokes at run time.

A key looks like `sk-sy-<id>-<secret>`: the 12 hex digits of its id let the gateway find its record
with one store read, and the secret is checked against the record's sha256 (the key itself is
never stored; it is shown once, when created or rotated). Records live in the shared store
(`sy:vkey:{<id>}`, JSON; ids in the set `sy:vkeys`), so every replica sees the same keys. Each
replica keeps what it read for at most `CACHE_TTL_S`, so a revoked, rotated or expired key is
refused everywhere within that time, with no restart and no message between replicas.

A key belongs to a tenant. If the tenant is in the config file, the key narrows it (its policies
and pinnable deployments are the intersection of both) and both budgets and both sets of rate
limits apply; otherwise the key's own limits are all there is. Writes are last-writer-wins.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import ConfigDict, Field, ValidationError, field_validator

from gateway.config import Budget, BudgetConfig, NoBooleanNumbers
from gateway.state import VIRTUAL_KEYS_INDEX, Store, StoreUnavailable, virtual_key_key

KEY_PREFIX = "sk-sy-"
ID_HEX = 12
CACHE_TTL_S = 0.5  # how stale a replica's view of a key may be: revocation reaches it within this
_CACHE_MAX = 10_000
NAME_PATTERN = r"^[A-Za-z0-9._:-]+$"  # no braces: a tenant name is a Redis Cluster hash tag

Status = Literal["active", "revoked", "expired"]


class _Body(NoBooleanNumbers):
    """An admin API body. Its `true` is no number, as a config file's is not: read as 1, a PATCH of
    `requests_per_minute: true` held the key to one request a minute."""

    model_config = ConfigDict(extra="forbid")


class KeyLimits(_Body):
    """What a key may do; every field is optional (absent: no limit of the key's own)."""

    name: str | None = Field(default=None, max_length=200)
    policies: list[str] | None = Field(default=None, description="allowed policies; None: the tenant's")
    deployments: list[str] | None = Field(default=None, description="deployments the key may pin by name")
    budget: Budget | None = Field(default=None, description="{usd, period} or a total in USD")
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    expires_at: datetime | None = Field(default=None, description="ISO 8601; naive times are UTC")
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=64)

    @field_validator("metadata", mode="before")
    @classmethod
    def _null_clears(cls, value: Any) -> Any:
        return {} if value is None else value  # as for every other field, `null` clears it

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @property
    def spend_budget(self) -> BudgetConfig | None:
        return self.budget


class KeyCreate(KeyLimits):
    tenant: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


class KeyRecord(KeyCreate):
    """What the store keeps about a key."""

    id: str
    sha256: str
    prefix: str  # the key's first characters, to recognise it in a list
    created_at: float
    updated_at: float
    revoked_at: float | None = None

    def status(self, now: float) -> Status:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at.timestamp() <= now:
            return "expired"
        return "active"

    def public(self, now: float | None = None) -> dict[str, Any]:
        """The record as the admin API shows it: never the key, only its prefix and hash's first bytes."""
        out = self.model_dump(mode="json", exclude={"sha256"})
        out["sha256_prefix"] = self.sha256[:12]
        out["status"] = self.status(time.time() if now is None else now)
        out["object"] = "key"
        return out


def new_key(key_id: str) -> str:
    return f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(24)}"


def _prefix(key: str) -> str:
    """What a listing shows of a key: its id and the first few characters of its secret."""
    return key[:len(KEY_PREFIX) + ID_HEX + 5]


def key_id_of(key: str) -> str | None:
    """The id inside a virtual key, or None when `key` does not have that shape."""
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + ID_HEX + 2:
        return None
    key_id = key[len(KEY_PREFIX):len(KEY_PREFIX) + ID_HEX]
    if key[len(KEY_PREFIX) + ID_HEX] != "-" or any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(record: KeyRecord, key: str) -> bool:
    return hmac.compare_digest(record.sha256, sha256_hex(key))


def _is_id(key_id: str) -> bool:
    return len(key_id) == ID_HEX and all(c in "0123456789abcdef" for c in key_id)


def _parsed(raw: bytes | None) -> KeyRecord | None:
    """A stored record, or None when there is none or it does not parse."""
    if raw is None:
        return None
    try:
        return KeyRecord.model_validate(orjson.loads(raw))
    except (ValidationError, orjson.JSONDecodeError):
        return None


_CHANGE_TRIES = 20


def _encoded(record: KeyRecord) -> bytes:
    """A record as the store keeps it (`_parsed` reads it back)."""
    return orjson.dumps(record.model_dump(mode="json"))


class KeyRevoked(Exception):
    """The key was revoked: it cannot be rotated."""


class KeyRegistry:
    """The keys in the store, with a short-lived local cache for the request path."""

    def __init__(self, store: Store, cache_ttl_s: float = CACHE_TTL_S) -> None:
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}
        # Whether any key exists (None: the store was never asked). Keys are looked up in the store on
        # every use, so while it is down their callers are refused: readiness has to know.
        self.in_use: bool | None = None

    async def probe(self) -> bool | None:
        """`in_use`, asked of the store unless a key was already seen (keys are revoked, never deleted)."""
        if not self.in_use:
            try:
                self.in_use = bool(await self.store.set_members(VIRTUAL_KEYS_INDEX))
            except StoreUnavailable:
                pass  # what was known stays known
        return self.in_use

    async def _write(self, record: KeyRecord) -> None:
        await self.store.set(virtual_key_key(record.id), _encoded(record))
        self._cache.pop(record.id, None)

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record as stored now (no cache)."""
        if not _is_id(key_id):
            return None
        return _parsed(await self.store.get(virtual_key_key(key_id)))

    def cached(self, key_id: str) -> bool:
        """Whether `lookup` would answer from this replica's cache rather than the store."""
        cached = self._cache.get(key_id)
        return cached is not None and time.monotonic() - cached[1] < self.cache_ttl_s

    async def lookup(self, key_id: str, *, fresh: bool = False) -> KeyRecord | None:
        """The record, read at most `cache_ttl_s` ago (`fresh`: read now)."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if not fresh and cached is not None and now - cached[1] < self.cache_ttl_s:
            return cached[0]
        record = await self.get(key_id)
        if record is not None:
            self.in_use = True
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key_id] = (record, now)
        return record

    async def create(self, spec: KeyCreate) -> tuple[KeyRecord, str]:
        key_id = os.urandom(ID_HEX // 2).hex()
        key = new_key(key_id)
        now = time.time()
        record = KeyRecord(**spec.model_dump(), id=key_id, sha256=sha256_hex(key), prefix=_prefix(key),
                           created_at=now, updated_at=now)
        await self._write(record)
        await self.store.set_add(VIRTUAL_KEYS_INDEX, key_id)
        self.in_use = True
        return record, key

    async def list(self) -> list[KeyRecord]:
        """Every record, read in one round trip after the index's (not one per key)."""
        ids = [i for i in await self.store.set_members(VIRTUAL_KEYS_INDEX) if _is_id(i)]
        records = [_parsed(raw) for raw in await self.store.get_many([virtual_key_key(i) for i in ids])]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at)

    async def _change(self, record: KeyRecord, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord:
        """Apply `change` to the record as stored now and write it only over what was read, again on a
        race: a blind write of an earlier read undid a revoke that landed in between (the key went on
        working after DELETE said `revoked`)."""
        key = virtual_key_key(record.id)
        for _ in range(_CHANGE_TRIES):
            raw = await self.store.get(key)
            current = _parsed(raw)
            if raw is None or current is None:
                raise StoreUnavailable(f"key '{record.id}' cannot be read back")
            changed = change(current)
            if changed is current:
                return current
            if await self.store.replace_if(key, raw, _encoded(changed)):
                self._cache.pop(record.id, None)
                return changed
        raise StoreUnavailable(f"key '{record.id}' is being changed by other calls; retry")

    async def update(self, record: KeyRecord, patch: KeyLimits) -> KeyRecord:
        """Only the fields the patch names change (null clears one)."""
        changes = {name: getattr(patch, name) for name in patch.model_fields_set}
        return await self._change(record, lambda r: r.model_copy(update={**changes, "updated_at": time.time()}))

    async def revoke(self, record: KeyRecord) -> KeyRecord:
        def revoked(r: KeyRecord) -> KeyRecord:
            if r.revoked_at is not None:
                return r
            now = time.time()
            return r.model_copy(update={"revoked_at": now, "updated_at": now})
        return await self._change(record, revoked)

    async def rotate(self, record: KeyRecord) -> tuple[KeyRecord, str]:
        """A new secret for the same id: the old key stops working (within the cache's TTL). KeyRevoked
        when the key is revoked (a rotate must not bring a revoked key back)."""
        key = new_key(record.id)

        def rotated(r: KeyRecord) -> KeyRecord:
            if r.revoked_at is not None:
                raise KeyRevoked(r.id)
            return r.model_copy(update={"sha256": sha256_hex(key), "prefix": _prefix(key), "updated_at": time.time()})
        return await self._change(record, rotated), key
