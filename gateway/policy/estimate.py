"""Predicted quality (q̂), cost (ĉ) and latency (l̂) of a plan for one request.

Single calls take q̂ from the router and ĉ from prices and token estimates. Test-time-compute
plans (best-of-n, cascades) build on those numbers: their estimates are analytic
(binomial vote, escalation probability) with an error-correlation factor measured on recorded
outcomes (benchmarks/test_time_compute.py), because samples of one model are not independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config import DeploymentConfig
from gateway.plans import BestOfN, Cascade, Plan, Single
from gateway.providers.pricing import DeploymentPrice
from gateway.signal import RouteSignal

# Share of the independent-sample gain that correlated samples keep (see module docstring).
VOTE_CORRELATION_KEEP = 0.5
JUDGE_OUTPUT_TOKENS = 16


@dataclass(frozen=True, slots=True)
class Estimate:
    quality: float
    cost_usd: float
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the policy needs to know about each deployment, fixed at start-up."""

    deployments: Mapping[str, DeploymentConfig]
    prices: Mapping[str, DeploymentPrice]


def output_tokens(d: DeploymentConfig, max_tokens: int | None) -> int:
    return min(d.expected_output_tokens, max_tokens) if max_tokens else d.expected_output_tokens


def single_latency_ms(d: DeploymentConfig, out_tokens: int, observed_s: float | None) -> float:
    if observed_s is not None:
        return observed_s * 1000
    return d.expected_ttft_ms + 1000 * out_tokens / d.expected_tokens_per_s


def majority_vote_quality(p: float, n: int) -> float:
    """P(the correct answer wins a majority of n independent samples), ties split evenly."""
    win = 0.0
    for k in range(n + 1):
        pk = math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if 2 * k > n:
            win += pk
        elif 2 * k == n:
            win += pk / 2
    return win


def _single(plan: Single, s: RouteSignal, cat: Catalog, live: Mapping[str, float],
            max_tokens: int | None) -> Estimate:
    d = cat.deployments[plan.deployment]
    out = output_tokens(d, max_tokens)
    cost = cat.prices[d.name].estimate(s.prompt_tokens, out)
    return Estimate(s.quality[d.name], cost, single_latency_ms(d, out, live.get(d.name)))


def _judge_cost(judge: str, s: RouteSignal, cat: Catalog, answers_tokens: int) -> float:
    return cat.prices[judge].estimate(s.prompt_tokens + answers_tokens, JUDGE_OUTPUT_TOKENS)


def _best_of(plan: BestOfN, s: RouteSignal, cat: Catalog, live: Mapping[str, float],
             max_tokens: int | None) -> Estimate:
    singles = [_single(Single(d), s, cat, live, max_tokens) for d in plan.samplers]
    p = sum(e.quality for e in singles) / len(singles)
    d0 = cat.deployments[plan.samplers[0]]
    out = output_tokens(d0, max_tokens)
    if len(set(plan.samplers)) == 1 and d0.supports_n:  # one call with n: the prompt is billed once
        cost = cat.prices[d0.name].estimate(s.prompt_tokens, out * plan.n)
    else:
        cost = sum(e.cost_usd for e in singles)
    latency = max(e.latency_ms for e in singles)
    ideal = majority_vote_quality(p, plan.n) if plan.selector == "vote" else 1 - (1 - p) ** plan.n
    if plan.judge:
        judge = _single(Single(plan.judge), s, cat, live, JUDGE_OUTPUT_TOKENS)
        cost += _judge_cost(plan.judge, s, cat, out * plan.n)
        latency += judge.latency_ms
    quality = p + VOTE_CORRELATION_KEEP * (ideal - p)
    return Estimate(min(1.0, max(0.0, quality)), cost, latency)


def _cascade(plan: Cascade, s: RouteSignal, cat: Catalog, live: Mapping[str, float],
             max_tokens: int | None) -> Estimate:
    """Two or more steps; each step is accepted when its confidence clears the threshold.

    P(accept) of a step is modelled as the step's own q̂ (confident answers are mostly right ones),
    so the expected quality mixes the step's answer with the next step's, and the cost adds the
    next step's cost with the probability of getting there. Latency is the worst case (all steps),
    which is what an SLO must allow for.
    """
    quality, cost, latency, reach = 0.0, 0.0, 0.0, 1.0
    for i, name in enumerate(plan.steps):
        first = i == 0 and plan.confidence == "agreement" and plan.samples > 1
        step: Plan = BestOfN((name,) * plan.samples) if first else Single(name)
        e = estimate(step, s, cat, live, max_tokens)
        last = i == len(plan.steps) - 1
        accept = 1.0 if last else min(1.0, e.quality + 0.5 * (1 - plan.threshold))
        quality += reach * accept * e.quality
        cost += reach * e.cost_usd
        latency += e.latency_ms
        reach *= 1 - accept
    return Estimate(min(1.0, quality), cost, latency)


def estimate(plan: Plan, signal: RouteSignal, catalog: Catalog, live_latency_s: Mapping[str, float],
             max_tokens: int | None = None) -> Estimate:
    if isinstance(plan, Single):
        return _single(plan, signal, catalog, live_latency_s, max_tokens)
    if isinstance(plan, BestOfN):
        return _best_of(plan, signal, catalog, live_latency_s, max_tokens)
    return _cascade(plan, signal, catalog, live_latency_s, max_tokens)
