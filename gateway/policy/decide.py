"""The routing decision: a pure function of the signal, the policy, live state and per-request limits.

Among the policy's candidate plans that meet every constraint, pick the one with the best utility
`value_usd · q̂ − ĉ` (the design's `q̂ − λ·ĉ` with λ = 1/value_usd). A policy with a `target`
instead takes the cheapest feasible plan unless the request's score (the quality the best costlier
plan adds) reaches the threshold in force, a `Cutoff` calibrated on recent traffic and passed in
(`gateway.policy.calibration`). Every candidate's numbers and the constraint that removed it travel
with the decision, so it can explain itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gateway.decimals import as_decimal
from gateway.errors import ConstraintUnsatisfiable
from gateway.plans import Cascade, Plan, Single, kind_of
from gateway.policy.calibration import Cutoff
from gateway.policy.estimate import Catalog, Estimate, estimate
from gateway.policy.loader import BoundPolicy
from gateway.policy.prepared import prepared
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


@dataclass(slots=True)
class Routing:
    """A decision under a target: the two choices, the request's score and the threshold it met or not.
    Not frozen, though never changed: one is built per routed request, and a frozen one costs ~1 µs
    more (it holds a Cutoff, so it never hashed anyway)."""

    cheap: Candidate
    strong: Candidate
    score: float
    cutoff: Cutoff | None  # None: no calibration available, the cheap choice
    chose_strong: bool     # score ≥ the cutoff's threshold

    def explain(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score": round(self.score, 6), "cheap": self.cheap.plan.label,
                               "strong": self.strong.plan.label, "chose_strong": self.chose_strong}
        c = self.cutoff
        if c is not None:
            out |= {"target": c.target.describe(), "threshold": json_number(c.threshold),
                    "strong_share_in_force": round(c.share, 4),
                    "quantile": round(c.quantiles.quantile(self.score), 4),
                    "recent_requests": round(c.observations, 1)}
        return out


def json_number(x: float) -> float | str:
    """A threshold as JSON can carry it: rounded, or "inf" / "-inf" (JSON has no infinity)."""
    return round(x, 6) if abs(x) != float("inf") else ("inf" if x > 0 else "-inf")


@dataclass(slots=True)
class Decision:
    """Not frozen, though never changed: built per routed request (see Routing); its signal's maps
    never let it hash."""

    policy: str
    plan: Plan
    candidates: tuple[Candidate, ...]
    signal: RouteSignal
    reasons: tuple[str, ...] = field(default=())
    routing: Routing | None = None  # set under a target when there was a choice to make

    def explain(self) -> dict[str, Any]:
        s = self.signal
        out = {
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
        if self.routing is not None:
            out["calibration"] = self.routing.explain()
        return out


def _rejection(plan: Plan, e: Estimate, limits: Limits, live: LiveView) -> str | None:
    if limits.allowed is not None and any(d not in limits.allowed for d in plan.deployments):
        return "allowed_deployments"
    return _live_rejection(plan, e, limits, live)


def _live_rejection(plan: Plan, e: Estimate, limits: Limits, live: LiveView) -> str | None:
    """`_rejection` after the allowed deployments (fixed per policy: `Prepared.allowed`)."""
    if live.open_circuits and any(d in live.open_circuits for d in plan.deployments):
        return "circuit_open"
    if limits.max_cost_usd is not None and e.cost_usd > limits.max_cost_usd:
        return f"max_cost_usd ({as_decimal(e.cost_usd)} > {as_decimal(limits.max_cost_usd)})"
    if limits.latency_slo_ms is not None and e.latency_ms > limits.latency_slo_ms:
        return f"latency_slo_ms ({e.latency_ms:.0f} > {as_decimal(limits.latency_slo_ms)})"
    if limits.min_quality is not None and e.quality < limits.min_quality:
        return f"min_quality ({e.quality:.3f} < {as_decimal(limits.min_quality)})"
    return None


def _too_few(plan: Plan, choices: int, catalog: Catalog) -> str | None:
    """Why a plan cannot answer with `choices` (the client's n > 1): it picks them from fewer samples, or
    one of its calls would ask `n` of a deployment that answers one choice per call (`supports_n: false`;
    sent anyway, such a server refuses the call or answers one choice, billed as n)."""
    most = plan.most_choices
    if most is not None and choices > most:
        return f"n ({choices} choices > the {most} it answers with)"
    for call in kind_of(plan).calls(plan, catalog, choices):
        if call.outputs > 1 and not catalog.deployments[call.deployment].supports_n:
            return f"n ({choices} choices: '{call.deployment}' answers one per call)"
    return None


def _still_answers(c: Candidate, limits: Limits, live: LiveView) -> Candidate:
    """A plan removed only because a circuit is open, taken back when it can answer without that
    deployment (the executor skips an open circuit): a single plan through a healthy fallback, a
    cascade whose last step is healthy (a failed step escalates), best-of with a healthy sampler (it
    answers from the samples that came back). Judged again on every other limit."""
    plan, open_now = c.plan, live.open_circuits
    if c.rejected_by != "circuit_open":
        return c
    if isinstance(plan, Single):
        healthy = any(f not in open_now for f in plan.fallbacks)
    elif isinstance(plan, Cascade):
        healthy = plan.steps[-1] not in open_now
    else:
        healthy = any(d not in open_now for d in plan.samplers)
    if not healthy:
        return c
    return replace(c, rejected_by=_rejection(plan, c.estimate, limits, LiveView(frozenset(), live.pace)))


class PlansBehindOpenCircuits(Exception):
    """No plan can answer now, and one would once these deployments' circuits close: a transient
    outage (the pipeline answers 503 with Retry-After), not a request no plan can ever meet (422)."""

    def __init__(self, deployments: tuple[str, ...]) -> None:
        super().__init__(", ".join(deployments))
        self.deployments = deployments


def decide(policy: BoundPolicy, signal: RouteSignal, catalog: Catalog, live: LiveView,
           overrides: Overrides = Overrides(), max_tokens: int | None = None,
           cutoff: Cutoff | None = None, choices: int = 1) -> Decision:
    """`cutoff` is the threshold in force for a policy with a target (ignored without one). `choices`:
    the client's `n`; a plan that answers with fewer (best-of picks from its samples) is not a candidate."""
    table = prepared(policy, catalog)  # what does not depend on this request, worked out once
    no_headers = overrides.max_cost_usd is None and overrides.latency_slo_ms is None
    limits = table.limits if no_headers else Limits.of(policy, overrides)
    value = table.value
    quality, prompt_tokens, observed = signal.quality, signal.prompt_tokens, live.pace
    evaluated = []
    for plan, fixed, disallowed in zip(policy.plans, table.fixed(max_tokens), table.allowed, strict=True):
        if fixed is None:
            e = estimate(plan, signal, catalog, observed, max_tokens, choices)
        else:  # gateway.plans.single.estimate, its request-independent terms taken from the table
            pace = observed.get(fixed.name)
            e = Estimate(quality[fixed.name], prompt_tokens * fixed.input_rate + fixed.output_cost * choices,
                         fixed.expected_latency_ms if pace is None else fixed.expected_latency_ms * pace)
        rejected = disallowed or (_too_few(plan, choices, catalog) if choices > 1 else None) or \
            _live_rejection(plan, e, limits, live)
        evaluated.append(Candidate(plan, e, value * e.quality - e.cost_usd, rejected))
    feasible = [c for c in evaluated if c.rejected_by is None]
    if not feasible:  # open circuits removed every plan? one that can work around them still answers
        evaluated = [_still_answers(c, limits, live) for c in evaluated]
        feasible = [c for c in evaluated if c.rejected_by is None]
    if not feasible:
        healthy = LiveView(frozenset(), live.pace)
        otherwise = {i: _live_rejection(c.plan, c.estimate, limits, healthy)
                     for i, c in enumerate(evaluated) if c.rejected_by == "circuit_open"}
        waiting = [evaluated[i] for i, reason in otherwise.items() if reason is None]
        if waiting:
            raise PlansBehindOpenCircuits(tuple(sorted({d for c in waiting for d in c.plan.deployments
                                                        if d in live.open_circuits})))
        # none would answer with every circuit closed either: name what stops each for good
        evaluated = [replace(c, rejected_by=otherwise.get(i, c.rejected_by)) for i, c in enumerate(evaluated)]
        why = "; ".join(f"{c.plan.label}: {c.rejected_by}" for c in evaluated)
        # Where the client's `n` alone rules every plan out, the error names it, as OpenAI's name the field at fault
        only_n = all((c.rejected_by or "").startswith("n (") for c in evaluated)
        raise ConstraintUnsatisfiable(f"no plan of policy '{policy.name}' meets the constraints: {why}",
                                      param="n" if only_n else None)
    if policy.spec.target is not None:
        return _on_target(policy, signal, evaluated, feasible, cutoff, table.target_words)
    best = max(feasible, key=lambda c: (c.utility, -c.estimate.cost_usd))
    reasons = [f"highest utility value_usd*q - cost = {as_decimal(best.utility)} among {len(feasible)} "
               f"feasible of {len(evaluated)} candidates (value_usd={as_decimal(value)})"]
    reasons += [f"{c.plan.label} removed by {c.rejected_by}" for c in evaluated if c.rejected_by]
    return Decision(policy.name, best.plan, tuple(evaluated), signal, tuple(reasons))


def split(feasible: list[Candidate]) -> tuple[Candidate, Candidate] | None:
    """The cheapest feasible plan (first listed among equals) and the strong choice: the best predicted
    of the others (the cheaper among equals). None when only one plan is feasible."""
    if len(feasible) < 2:
        return None
    cheap = feasible[0]
    for c in feasible:  # plain loops: this runs on every request of a target policy
        if c.estimate.cost_usd < cheap.estimate.cost_usd:
            cheap = c
    strong: Candidate | None = None
    for c in feasible:
        if c is cheap:
            continue
        if strong is None or c.estimate.quality > strong.estimate.quality or (
                c.estimate.quality == strong.estimate.quality and c.estimate.cost_usd < strong.estimate.cost_usd):
            strong = c
    assert strong is not None
    return cheap, strong


def _on_target(policy: BoundPolicy, signal: RouteSignal, evaluated: list[Candidate], feasible: list[Candidate],
               cutoff: Cutoff | None, target_words: str) -> Decision:
    removed = () if len(feasible) == len(evaluated) else \
        tuple(f"{c.plan.label} removed by {c.rejected_by}" for c in evaluated if c.rejected_by)
    pair = split(feasible)
    if pair is None:
        only = feasible[0]
        return Decision(policy.name, only.plan, tuple(evaluated), signal,
                        (f"{only.plan.label} is the only feasible plan", *removed))
    cheap, strong = pair
    score = strong.estimate.quality - cheap.estimate.quality
    chose_strong = cutoff is not None and score >= cutoff.threshold
    routing = Routing(cheap, strong, score, cutoff, chose_strong)
    if cutoff is None:
        why = f"{target_words}: no calibration yet, the cheapest feasible plan"
    else:
        why = (f"{target_words}: score {score:.4f} (q gain of {strong.plan.label} over "
               f"{cheap.plan.label}) {'>=' if chose_strong else '<'} threshold {cutoff.threshold:.4f}, the "
               f"{1 - cutoff.share:.0%} quantile of recent traffic")
    return Decision(policy.name, (strong if chose_strong else cheap).plan, tuple(evaluated), signal,
                    (why, *removed), routing)
