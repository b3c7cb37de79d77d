"""The routing decision: a pure function of the signal, the policy, live state and per-request limits.

Among the policy's candidate plans that meet every constraint, pick the one with the best utility
`value_usd · q̂ − ĉ` (the design's `q̂ − λ·ĉ` with λ = 1/value_usd). Every candidate's numbers and
the constraint that removed it travel with the decision, so it can explain itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConstraintUnsatisfiable
from gateway.plans import Plan
from gateway.policy.estimate import Catalog, Estimate, estimate
from gateway.policy.loader import BoundPolicy
from gateway.providers.health import LiveView
from gateway.signal import RouteSignal


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-request tightening from headers; they can only narrow what the policy allows."""

    max_cost_usd: float | None = None
    latency_slo_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_cost_usd: float | None
    latency_slo_ms: float | None
    min_quality: float | None
    allowed: frozenset[str] | None

    @classmethod
    def of(cls, policy: BoundPolicy, o: Overrides) -> Limits:
        c = policy.spec.constraints
        return cls(_tighter(c.max_cost_usd, o.max_cost_usd), _tighter(c.latency_slo_ms, o.latency_slo_ms),
                   c.min_quality, policy.allowed)


def _tighter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


@dataclass(frozen=True, slots=True)
class Candidate:
    plan: Plan
    estimate: Estimate
    utility: float
    rejected_by: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    policy: str
    plan: Plan
    candidates: tuple[Candidate, ...]
    signal: RouteSignal
    reasons: tuple[str, ...] = field(default=())

    def explain(self) -> dict[str, Any]:
        s = self.signal
        return {
            "policy": self.policy,
            "plan": self.plan.label,
            "reasons": list(self.reasons),
            "signal": {"difficulty": round(s.difficulty, 4), "category": s.category,
                       "prompt_tokens_estimate": s.prompt_tokens,
                       "features": {k: round(v, 4) for k, v in s.features.items()}},
            "candidates": [
                {"plan": c.plan.label, "predicted_quality": round(c.estimate.quality, 4),
                 "predicted_cost_usd": c.estimate.cost_usd,
                 "predicted_latency_ms": round(c.estimate.latency_ms, 1),
                 "utility": c.utility, "chosen": c.plan == self.plan, "rejected_by": c.rejected_by}
                for c in self.candidates],
        }


def _rejection(plan: Plan, e: Estimate, limits: Limits, live: LiveView) -> str | None:
    if limits.allowed is not None and any(d not in limits.allowed for d in plan.deployments):
        return "allowed_deployments"
    if any(d in live.open_circuits for d in plan.deployments):
        return "circuit_open"
    if limits.max_cost_usd is not None and e.cost_usd > limits.max_cost_usd:
        return f"max_cost_usd ({e.cost_usd:.6g} > {limits.max_cost_usd:g})"
    if limits.latency_slo_ms is not None and e.latency_ms > limits.latency_slo_ms:
        return f"latency_slo_ms ({e.latency_ms:.0f} > {limits.latency_slo_ms:g})"
    if limits.min_quality is not None and e.quality < limits.min_quality:
        return f"min_quality ({e.quality:.3f} < {limits.min_quality:g})"
    return None


def decide(policy: BoundPolicy, signal: RouteSignal, catalog: Catalog, live: LiveView,
           overrides: Overrides = Overrides(), max_tokens: int | None = None) -> Decision:
    limits = Limits.of(policy, overrides)
    value = policy.spec.objective.value_usd
    evaluated = []
    for plan in policy.plans:
        e = estimate(plan, signal, catalog, live.latency_s, max_tokens)
        evaluated.append(Candidate(plan, e, value * e.quality - e.cost_usd, _rejection(plan, e, limits, live)))
    feasible = [c for c in evaluated if c.rejected_by is None]
    if not feasible:
        why = "; ".join(f"{c.plan.label}: {c.rejected_by}" for c in evaluated)
        raise ConstraintUnsatisfiable(f"no plan of policy '{policy.name}' meets the constraints: {why}")
    best = max(feasible, key=lambda c: (c.utility, -c.estimate.cost_usd))
    reasons = [f"highest utility value_usd*q - cost = {best.utility:.6g} among {len(feasible)} "
               f"feasible of {len(evaluated)} candidates (value_usd={value:g})"]
    reasons += [f"{c.plan.label} removed by {c.rejected_by}" for c in evaluated if c.rejected_by]
    return Decision(policy.name, best.plan, tuple(evaluated), signal, tuple(reasons))
