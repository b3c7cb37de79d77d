"""Exact-match answer cache: Redis when configured, process memory otherwise.

Only requests that are safe to reuse are cached: temperature 0, or an explicit opt-in header
(`x-switchyard-cache: force`). The key is a hash of the normalised request: the entry point
(policy or deployment), the tenant (answers never cross tenants), the messages and every
parameter that changes the answer. The cache is an observer of the store's health: if Redis is
down a lookup is a miss and a write is skipped, and the request is served all the same.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.state import Store, StoreUnavailable

log = logging.getLogger("switchyard.cache")

CacheStatus = Literal["hit", "miss", "bypass"]
# Parameters that change the answer; everything else (stream, user, stream_options) does not.
_ANSWER_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "seed",
                  "tools", "tool_choice", "response_format", "frequency_penalty", "presence_penalty",
                  "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: dict[str, Any]
    deployment: str
    plan: str


def is_cacheable(request: dict[str, Any], header: str | None) -> bool:
    if header in ("bypass", "no-store"):
        return False
    if header == "force":
        return True
    return request.get("temperature") == 0


def cache_key(namespace: str, entry: str, tenant: str, request: dict[str, Any]) -> str:
    normal = {"entry": entry, "messages": request["messages"],
              **{k: request[k] for k in _ANSWER_PARAMS if request.get(k) is not None}}
    digest = hashlib.sha256(orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"sy:cache:{namespace}:{tenant}:{digest}"


class ExactCache:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def lookup(self, key: str) -> CachedAnswer | None:
        try:
            raw = await self.store.get(key)
        except StoreUnavailable as exc:
            log.warning("cache lookup skipped, store unavailable: %s", exc)
            return None
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            return CachedAnswer(data["body"], data["deployment"], data["plan"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed cache entry at %s", key)
            return None

    async def save(self, key: str, body: dict[str, Any], deployment: str, plan: str, ttl_s: float) -> None:
        payload = orjson.dumps({"body": body, "deployment": deployment, "plan": plan})
        try:
            await self.store.set(key, payload, ttl_s)
        except StoreUnavailable as exc:
            log.warning("cache write skipped, store unavailable: %s", exc)
