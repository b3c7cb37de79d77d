"""The outcome of running a plan: the client's answer plus every upstream call that made it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.providers.base import Usage


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One upstream call that answered: what it used and cost (the ledger bills these)."""

    deployment: str
    usage: Usage
    cost_usd: float
    latency_s: float
    role: str = "answer"  # answer | sample | judge | escalation


@dataclass(frozen=True, slots=True)
class Result:
    body: dict[str, Any]           # OpenAI chat.completion for the client, usage summed over calls
    deployment: str                # the deployment whose answer was returned
    plan_label: str                # what was done, e.g. "cascade:small>large:escalated"
    calls: tuple[CallRecord, ...]
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for c in self.calls:
            total = total + c.usage
        return total

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)


def with_usage(body: dict[str, Any], usage: Usage) -> dict[str, Any]:
    return {**body, "usage": usage.as_dict()}
