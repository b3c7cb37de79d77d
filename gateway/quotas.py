"""Per-deployment rate limits that mirror the provider's quota, shared by every replica.

A deployment with `requests_per_minute` or `tokens_per_minute` in its config gets sliding windows
in the store (`sy:window:{deploy:<name>}:rpm|tpm`, `gateway.windows`). Every attempt on it (each
retry too: the provider counts them) takes one request and its worst-case tokens (prompt + max
output) before the call; a non-streamed answer then settles the tokens to the real count. A
deployment at its limit is skipped like one whose circuit is open, so the request falls back to
the next candidate; when every candidate was skipped that way the request is a 429 that names the
limit, with Retry-After. So one tenant's burst is held at the gateway instead of getting the
organisation's key throttled upstream.

If the store cannot answer, the call goes ahead (logged): the provider's own 429 still protects it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.admission_store import Admission, Settlement, Window
from gateway.config import DeploymentConfig
from gateway.errors import RateLimited, RateLimitNeverFits
from gateway.messages import prompt_tokens
from gateway.state import Store, StoreUnavailable, deployment_window_key
from gateway.windows import retry_after_s

log = logging.getLogger("switchyard.upstream")


@dataclass(frozen=True, slots=True)
class Taken:
    """One attempt's place in a deployment's token window, to settle with the real count."""

    key: str
    step: int
    tokens: int


class DeploymentOverQuota(Exception):
    def __init__(self, deployment: str, limit: str, retry_after_ms: int) -> None:
        super().__init__(f"deployment '{deployment}' is at its {limit} limit")
        self.deployment, self.limit, self.retry_after_ms = deployment, limit, retry_after_ms


class DeploymentQuotas:
    def __init__(self, store: Store, deployments: Mapping[str, DeploymentConfig]) -> None:
        self.store = store
        self.limited = {n: d for n, d in deployments.items()
                        if d.requests_per_minute is not None or d.tokens_per_minute is not None}

    def _windows(self, d: DeploymentConfig, body: dict[str, Any]) -> tuple[list[Window], list[str], int]:
        windows, names, counted = [], [], 0
        if d.requests_per_minute is not None:
            windows.append(Window(deployment_window_key(d.name, "rpm"), d.requests_per_minute, 1))
            names.append("requests_per_minute")
        if d.tokens_per_minute is not None:
            out = body.get("max_completion_tokens") or body.get("max_tokens") or d.max_output_tokens
            counted = prompt_tokens(body) + int(out) * int(body.get("n") or 1)
            windows.append(Window(deployment_window_key(d.name, "tpm"), d.tokens_per_minute, counted))
            names.append("tokens_per_minute")
        return windows, names, counted

    async def take(self, name: str, body: dict[str, Any]) -> Taken | None:
        """Count one attempt on `name`; raises `DeploymentOverQuota` when it is at a limit."""
        d = self.limited.get(name)
        if d is None:
            return None
        windows, names, counted = self._windows(d, body)
        try:
            got = await self.store.admit(Admission(os.urandom(8).hex(), 0.0, (), tuple(windows)))
        except StoreUnavailable as exc:
            log.warning("deployment '%s': its rate limits cannot be checked (store unavailable); calling it: %s",
                        name, exc)
            return None
        if got.verdict == "rate":
            raise DeploymentOverQuota(name, names[got.index], got.retry_after_ms)
        if d.tokens_per_minute is None:
            return None
        return Taken(deployment_window_key(name, "tpm"), got.step, counted)

    async def settle(self, taken: Taken | None, used_tokens: int) -> None:
        if taken is None:
            return
        try:
            await self.store.settle_admission(Settlement(None, 0.0, (), ((taken.key, taken.step,
                                                                          used_tokens - taken.tokens),)))
        except StoreUnavailable:
            pass  # the window keeps the reserved count: stricter, never looser


def over_quota_error(skipped: list[DeploymentOverQuota]) -> RateLimited:
    told = "; ".join(f"'{s.deployment}' is at its {s.limit} limit" for s in skipped)
    waits = [s.retry_after_ms for s in skipped if s.retry_after_ms >= 0]
    if not waits:  # the request needs more than every limit allows in a minute: no wait admits it
        return RateLimitNeverFits(f"every deployment that could answer is at its rate limit: {told}; this request "
                                  "needs more than each allows in a minute",
                                  headers={"x-switchyard-limit": skipped[0].limit})
    wait = min(waits)
    return RateLimited(f"every deployment that could answer is at its rate limit: {told}; "
                       f"retry after {retry_after_s(wait)} s",
                       headers={"retry-after": str(retry_after_s(wait)), "x-switchyard-limit": skipped[0].limit})
