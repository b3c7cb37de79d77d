"""Plans: what the gateway will do for one request. Frozen values made by the policy, run by the executor.

Each kind of plan is one module here (single, best_of, cascade) holding its policy-file schema, how
its names bind to deployments, the calls it makes, its estimator and its runner, registered in
`KINDS`. The policy loader, `decide()` (through `gateway.policy.estimate`) and the executor all
look a plan's kind up in this one table: a new kind is a new module, a line below, and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.plans.base import Call, Catalog, Estimate, Kind
from gateway.plans.best_of import KIND as BEST_OF
from gateway.plans.best_of import BestOfN, BestOfSpec, Selector
from gateway.plans.cascade import KIND as CASCADE
from gateway.plans.cascade import Cascade, CascadeSpec, Confidence
from gateway.plans.single import KIND as SINGLE
from gateway.plans.single import Single

Plan = Single | BestOfN | Cascade

# by plan type (the executor and the estimator: one dict lookup per plan) and by policy-file key (the loader)
KINDS: dict[type, Kind[Any]] = {k.plan: k for k in (SINGLE, BEST_OF, CASCADE)}
KEYS: dict[str, Kind[Any]] = {k.key: k for k in KINDS.values()}


def kind_of(plan: Plan) -> Kind[Any]:
    return KINDS[type(plan)]


@dataclass(frozen=True, slots=True)
class Shadow:
    """A policy's shadow evaluation: for a `rate` sample of requests answered by a cheaper deployment,
    `against` answers too, in the background, and the cheap answer is labelled against it (by
    exact agreement of short answers, else by `judge` when there is one)."""

    rate: float
    against: str
    judge: str | None = None


__all__ = ["KEYS", "KINDS", "BestOfN", "BestOfSpec", "Call", "Cascade", "CascadeSpec", "Catalog", "Confidence",
           "Estimate", "Kind", "Plan", "Selector", "Shadow", "Single", "kind_of"]
