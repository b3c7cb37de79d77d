"""Shared state behind one small interface: Redis (single node or cluster) or process memory.

The gateway keeps three kinds of keys, all under `sy:`: cached answers (`sy:cache:...`), tenant
spend (`sy:spend:<tenant>`) and rate windows (`sy:rate:<tenant>:<minute>`). The in-memory store
is the embedded default and a real second implementation, not a test double. The Redis store
fails fast while its circuit breaker (`gateway.store_breaker`) holds it for down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from gateway.store_breaker import StoreBreaker

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The backing store did not answer; callers decide whether that is fatal."""


class Store(Protocol):
    kind: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...
    async def incr(self, key: str, ttl_s: float) -> int: ...
    async def incr_float(self, key: str, amount: float) -> float: ...
    async def get_float(self, key: str) -> float: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class MemoryStore:
    """A dict with expiry. Bounded so a long-running demo cannot grow without end."""

    kind = "memory"

    def __init__(self, max_keys: int = 100_000) -> None:
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._floats: dict[str, float] = {}
        self._max_keys = max_keys

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        if len(self._data) >= self._max_keys and key not in self._data:
            self._data.pop(next(iter(self._data)))  # oldest insertion first
        self._data[key] = (value, time.monotonic() + ttl_s if ttl_s else None)

    async def incr(self, key: str, ttl_s: float) -> int:
        current = int(self._live(key) or b"0") + 1
        expires = self._data[key][1] if key in self._data else time.monotonic() + ttl_s
        self._data[key] = (str(current).encode(), expires)
        return current

    async def incr_float(self, key: str, amount: float) -> float:
        self._floats[key] = self._floats.get(key, 0.0) + amount
        return self._floats[key]

    async def get_float(self, key: str) -> float:
        return self._floats.get(key, 0.0)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


class RedisStore:
    """redis-py's asyncio client. Every call has a socket timeout and goes through a circuit breaker
    (`StoreBreaker`); failures become StoreUnavailable. A connection error (a pooled connection left
    stale by a Redis restart) is retried once on a fresh connection; a timeout is not retried."""

    kind = "redis"

    def __init__(self, url: str, *, timeout_s: float = 0.5, breaker: StoreBreaker | None = None) -> None:
        import redis.asyncio as redis  # deferred: the embedded default never needs it
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, asyncio.TimeoutError)
        self.breaker = breaker or StoreBreaker()
        # redis-py's default retries timeouts too, with back-off: a hung Redis would hold every call.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        self._client: Any
        if "cluster=true" in url or url.startswith("redis+cluster://"):
            url = url.replace("redis+cluster://", "redis://").replace("?cluster=true", "")
            self._client = redis.RedisCluster.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=retry)
        else:
            self._client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                health_check_interval=10, retry_on_timeout=False, retry=retry,
                retry_on_error=[RedisConnectionError])

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one store call under the breaker: refused at once while it is open."""
        breaker = self.breaker
        if not breaker.allow():
            raise StoreUnavailable(f"store marked down for {breaker.cooldown_s:g} s after a failure")
        trial = not breaker.closed
        try:
            result = await call()
        except self._errors as exc:
            breaker.failed()
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
        except BaseException:
            if trial:
                breaker.abandoned()
            raise
        breaker.succeeded()
        return result

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._guarded(lambda: self._client.get(key))
        return value

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._guarded(lambda: self._client.set(key, value, px=int(ttl_s * 1000) if ttl_s else None))

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

    async def ping(self) -> bool:
        try:
            return bool(await self._guarded(self._client.ping))
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except self._errors:
            pass


def open_store(redis_url: str | None) -> Store:
    return RedisStore(redis_url) if redis_url else MemoryStore()
