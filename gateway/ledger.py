"""Cost per request, per tenant and per deployment. An observer: it logs and carries on, never fails a request.

The totals here are this process's own (`/v1/spend`); the tenant's spend in the store, which
budgets are checked against, is written by settling the request's `Reservation` (one round trip
that also drops the request's budget hold). Shadow evaluation (`gateway.shadow`) is billed to the
tenant like any call and also counted apart, under `shadow`, so that its price stays visible.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from gateway.auth import Reservation
from gateway.executor.upstreams import CallRecord
from gateway.state import Store, StoreUnavailable, spend_key

log = logging.getLogger("switchyard.ledger")


@dataclass(slots=True)
class Totals:
    requests: int = 0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, cost: float, prompt: int, completion: int, requests: int = 1) -> None:
        self.requests += requests
        self.cost_usd += cost
        self.prompt_tokens += prompt
        self.completion_tokens += completion


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.by_tenant: dict[str, Totals] = defaultdict(Totals)
        self.by_deployment: dict[str, Totals] = defaultdict(Totals)
        self.shadow_by_tenant: dict[str, Totals] = defaultdict(Totals)
        self.cache_hits = 0

    async def record(self, tenant: str, calls: tuple[CallRecord, ...], cached: bool = False,
                     reservation: Reservation | None = None) -> None:
        if cached:
            self.cache_hits += 1
            self.by_tenant[tenant].add(0.0, 0, 0)
            if reservation is not None:
                await reservation.release()
            return
        cost = sum(c.cost_usd for c in calls)
        self.by_tenant[tenant].add(cost, sum(c.usage.prompt_tokens for c in calls),
                                   sum(c.usage.completion_tokens for c in calls))
        for c in calls:
            self.by_deployment[c.deployment].add(c.cost_usd, c.usage.prompt_tokens, c.usage.completion_tokens)
        try:
            if reservation is not None:
                await reservation.settle(cost)
            elif cost > 0:
                await self.store.incr_float(spend_key(tenant), cost)
        except StoreUnavailable as exc:
            log.warning("spend of %s not recorded (store unavailable): $%.6f: %s", tenant, cost, exc)

    async def record_shadow(self, tenant: str, calls: tuple[CallRecord, ...], reservation: Reservation) -> None:
        """A shadow evaluation's calls: the tenant's spend (no request counted) and the shadow totals."""
        cost = sum(c.cost_usd for c in calls)
        prompt = sum(c.usage.prompt_tokens for c in calls)
        completion = sum(c.usage.completion_tokens for c in calls)
        self.by_tenant[tenant].add(cost, prompt, completion, requests=0)
        self.shadow_by_tenant[tenant].add(cost, prompt, completion)
        for c in calls:
            self.by_deployment[c.deployment].add(c.cost_usd, c.usage.prompt_tokens, c.usage.completion_tokens)
        try:
            await reservation.settle(cost)
        except StoreUnavailable as exc:
            log.warning("shadow spend of %s not recorded (store unavailable): $%.6f: %s", tenant, cost, exc)

    def snapshot(self) -> dict[str, Any]:
        def rows(d: dict[str, Totals]) -> dict[str, dict[str, Any]]:
            return {k: {"requests": v.requests, "cost_usd": round(v.cost_usd, 10),
                        "prompt_tokens": v.prompt_tokens, "completion_tokens": v.completion_tokens}
                    for k, v in sorted(d.items())}
        return {"tenants": rows(self.by_tenant), "deployments": rows(self.by_deployment),
                "cache_hits": self.cache_hits, "shadow": rows(self.shadow_by_tenant)}
