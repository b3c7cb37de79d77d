"""Exact-match answer cache: Redis when configured, process memory otherwise.

Only requests that are safe to reuse are cached: temperature 0, or an explicit opt-in header
(`x-switchyard-cache: force`). The key is a hash of the whole validated request minus a short,
explicit list of fields that cannot change the answer (`stream`, `user`, `metadata`...), plus who
answers it: the entry point (policy or deployment), the policy's version (an edited policy does
not serve answers chosen under the old one), the per-request headers that tighten the policy (an
answer chosen under a caller's cost cap or latency SLO is not served to a call without them, nor
the other way round), the deployments' identities (a changed model string does not serve the old
model's answers), and the tenant (answers never cross tenants).
The cache is an observer of the store's health: if Redis is down a lookup is a miss and a write
is skipped, and the request is served all the same.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.config import DeploymentConfig
from gateway.policy import Overrides
from gateway.state import Store, StoreUnavailable, answer_key

log = logging.getLogger("switchyard.cache")

_UNTIGHTENED = Overrides()  # no header narrows the policy

CacheStatus = Literal["hit", "miss", "bypass"]

# Request fields that cannot change the answer, left out of the key. Everything else is in it,
# including fields the gateway has never heard of (`top_k`, `guided_json`, `reasoning_effort`...):
# an unknown field is assumed to matter. Each exclusion, and why it is safe:
_NOT_IN_KEY = frozenset({
    "model",           # replaced by the resolved entry (policy or deployment) in the key's scope
    "stream",          # the same answer whole or in chunks: entries hold the whole body, replayed as SSE
    "stream_options",  # only whether a usage chunk is sent; replay adds it when asked
    "user",            # an end-user id for the provider's abuse monitoring; the model never sees it
    "safety_identifier",  # the same, under its newer OpenAI name
    "metadata",        # tags on stored completions, not shown to the model
    "store",           # whether the provider keeps a copy, not what it answers
})
# Kept on purpose: `service_tier` (the answer's body reports the tier it ran under, and is billed
# by it), `n`, `seed`, `logprobs` (all change the body), `prompt_cache_key` (provider-specific).


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: dict[str, Any]
    deployment: str
    plan: str


def _served_anew(body: dict[str, Any]) -> dict[str, Any]:
    """A cached answer as a completion of its own: its own id and time, as every answer an OpenAI API gives
    has. Served with the id it was stored under, every hit of a question was one completion to a client that
    keys its records by the id, created hours before it was asked."""
    return {**body, "id": "chatcmpl-" + os.urandom(12).hex(), "created": int(time.time())}


def is_cacheable(request: dict[str, Any], header: str | None) -> bool:
    if header in ("bypass", "no-store"):
        return False
    if header == "force":
        return True
    return request.get("temperature") == 0


def deployment_identity(deployment: DeploymentConfig) -> str:
    """What decides a deployment's answers: the model string, where it is served and by which path.
    A changed model must not serve the old model's answers, even across a restart over Redis."""
    raw = orjson.dumps([deployment.name, deployment.model, deployment.api_base, deployment.backend])
    return hashlib.sha256(raw).hexdigest()[:12]


def cache_key(namespace: str, scope: str, tenant: str, request: dict[str, Any]) -> str:
    """`scope` names who answers (entry, policy version, deployment identities); the digest covers
    the whole validated request minus `_NOT_IN_KEY`."""
    normal = {k: v for k, v in request.items() if k not in _NOT_IN_KEY}
    digest = hashlib.sha256(scope.encode() + b"\n" + orjson.dumps(normal, option=orjson.OPT_SORT_KEYS))
    return answer_key(namespace, tenant, digest.hexdigest())


class ExactCache:
    def __init__(self, store: Store, deployments: Sequence[DeploymentConfig] = (), namespace: str = "default") -> None:
        self.store = store
        self.namespace = namespace
        # Precomputed once: per deployment for pinned calls, all of them for a policy (any may answer).
        self._identity = {d.name: deployment_identity(d) for d in deployments}
        self._all = hashlib.sha256(orjson.dumps(sorted(self._identity.items()))).hexdigest()[:12]

    def key(self, entry: str, pinned: str | None, policy_version: str, tenant: str,
            request: dict[str, Any], overrides: Overrides = _UNTIGHTENED) -> str:
        """The key of this request's answer: who answers it (the entry, the policy version in force
        and the headers tightening it, the deployments' identities), for which tenant, to which question."""
        identity = self._identity.get(pinned, "") if pinned else self._all
        scope = f"{entry}|{policy_version}|{identity}"
        if overrides != _UNTIGHTENED:  # a request without them keeps the key it always had
            scope += f"|cost<={overrides.max_cost_usd!r}|slo<={overrides.latency_slo_ms!r}"
        return cache_key(self.namespace, scope, tenant, request)

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
            return CachedAnswer(_served_anew(data["body"]), data["deployment"], data["plan"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed cache entry at %s", key)
            return None

    async def save(self, key: str, body: dict[str, Any], deployment: str, plan: str, ttl_s: float) -> None:
        payload = orjson.dumps({"body": body, "deployment": deployment, "plan": plan})
        try:
            await self.store.set(key, payload, ttl_s)
        except StoreUnavailable as exc:
            log.warning("cache write skipped, store unavailable: %s", exc)
