"""Predicted quality (q̂), cost (ĉ) and latency (l̂) of a plan for one request, and the bounds on
what it can cost and take.

Each plan kind estimates itself (`gateway.plans.<kind>.estimate`, through `gateway.plans.KINDS`):
single calls take q̂ from the router and ĉ from prices and token estimates; test-time-compute plans
(best-of-n, cascades) build on the members' q̂ with the answer model in `gateway.plans.odds`.
Worst cases price the calls each kind declares (`Kind.calls`), the ones its runner makes.
"""

from __future__ import annotations

import math

from gateway import plans
from gateway.plans import Plan, Single
from gateway.plans.base import Catalog, Estimate, Live, worst_tokens
from gateway.signal import RouteSignal

__all__ = ["Catalog", "Estimate", "estimate", "fit_to_cap", "max_tokens_within", "output_ceiling",
           "worst_case_billed", "worst_case_cost", "worst_case_duration_s", "worst_case_tokens"]


def estimate(plan: Plan, signal: RouteSignal, catalog: Catalog, live_latency_s: Live,
             max_tokens: int | None = None, choices: int = 1) -> Estimate:
    """`choices`: the client's `n`, which multiplies what the calls that answer it directly generate."""
    return plans.KINDS[type(plan)].estimate(plan, signal, catalog, live_latency_s, max_tokens, choices)


def worst_case_cost(plan: Plan, prompt_tokens: int, catalog: Catalog, max_tokens: int | None,
                    choices: int = 1) -> float:
    """The most this plan can cost for this request: every call it may make, each generating up to
    `max_tokens` (else its deployment's `max_output_tokens`). Budgets reserve it before any call;
    cost caps bound `max_tokens` by it. `choices` is the client's `n` for calls that answer directly.

    single: the dearest deployment of the fallback chain (one of them answers); best-of: every
    sample plus the judge, whose prompt carries every sample; cascade: every step and its samples.
    """
    return plans.KINDS[type(plan)].worst_case(plan, prompt_tokens, catalog, max_tokens, choices)


def worst_case_billed(plan: Plan, prompt_tokens: int, catalog: Catalog, max_tokens: int | None,
                      choices: int = 1, *, within_s: float, hedged: bool = False, resumes: bool = False) -> float:
    """The most the request's calls can be billed: what a budget reserves. `worst_case_cost` prices one
    run of the plan; a run may be billed for more calls than answer it:
    - an attempt the gateway stopped waiting for at its deployment's `timeout_s` is still read, and
      billed if it answers late (`executor.drain`), while a retry or fallback goes on. Each such
      attempt used up its whole `timeout_s` of the request's deadline (`within_s`), so at most
      ceil(within_s / the shortest timeout_s) - 1 of them precede the last attempt;
    - `hedged`: both legs of a hedge run at once, and both may be billed (and time out, in parallel);
    - `resumes` (a stream that may be continued, `executor.resume`): the cut call is billed for what
      it streamed, and its continuation on a fallback is sent the prompt plus up to the whole output.
    A plan that can make no second attempt (one deployment, no retries, or a deadline no longer than
    its timeout) reserves `worst_case_cost`, as before.
    """
    reachable = [catalog.deployments[n] for n in plan.reachable]
    timed_out = max(0, math.ceil(within_s / min(d.timeout_s for d in reachable)) - 1)
    if not isinstance(plan, Single):  # each of its calls may be billed once per attempt the deadline allows
        attempts = max(min(d.max_retries + 1, 1 + timed_out) for d in reachable)
        return worst_case_cost(plan, prompt_tokens, catalog, max_tokens, choices) * attempts
    produced = output_ceiling(plan, catalog, max_tokens) if resumes else 0
    priced: list[float] = []  # every attempt the chain may make, at the most it may cost
    for d in reachable:
        prompt = prompt_tokens + (produced if d.name != plan.deployment else 0)
        cost = catalog.prices[d.name].bound(prompt, (max_tokens or d.max_output_tokens) * choices)
        priced += [cost] * (d.max_retries + 1)
    billed = (1 + timed_out) * (2 if hedged else 1) + (1 if resumes and plan.fallbacks else 0)
    return sum(sorted(priced, reverse=True)[:billed])


def worst_case_tokens(plan: Plan, prompt_tokens: int, catalog: Catalog, max_tokens: int | None,
                      choices: int = 1) -> int:
    """The most tokens (prompt + output) the plan's calls may use: what a tokens-per-minute limit
    reserves. A single: its largest candidate of the fallback chain; best-of and cascades: every
    call they may make (`Kind.calls`), as `worst_case_cost` prices them."""
    if isinstance(plan, Single):
        return max(prompt_tokens + (max_tokens or catalog.deployments[n].max_output_tokens) * choices
                   for n in plan.reachable)
    of = plans.KINDS[type(plan)].calls
    planned = catalog.calls(plan, of) if choices == 1 else of(plan, catalog, choices)
    return worst_tokens(planned, prompt_tokens, catalog, max_tokens)


def max_tokens_within(plan: Plan, prompt_tokens: int, catalog: Catalog, cap_usd: float,
                      max_tokens: int | None, choices: int = 1) -> int | None:
    """The largest `max_tokens` (at most the client's, else the deployments' `max_output_tokens`)
    whose worst case stays within `cap_usd`; None when not even one output token fits."""
    hi = output_ceiling(plan, catalog, max_tokens)
    if worst_case_cost(plan, prompt_tokens, catalog, hi, choices) <= cap_usd:
        return hi
    lo = 0  # invariant: lo fits (or is 0), hi does not
    while hi - lo > 1:  # the worst case grows with max_tokens: bisect, ~12 steps
        mid = (lo + hi) // 2
        if worst_case_cost(plan, prompt_tokens, catalog, mid, choices) <= cap_usd:
            lo = mid
        else:
            hi = mid
    return lo or None


def output_ceiling(plan: Plan, catalog: Catalog, max_tokens: int | None) -> int:
    """What a call of the plan may generate without a cap: the client's max_tokens, else the largest
    `max_output_tokens` among its deployments."""
    return max_tokens or max(catalog.deployments[d].max_output_tokens for d in plan.reachable)


def fit_to_cap(plan: Plan, prompt_tokens: int, catalog: Catalog, cap_usd: float, max_tokens: int | None,
               choices: int = 1) -> tuple[Plan, int] | None:
    """The plan and the `max_tokens` that keep its worst case within `cap_usd`, or None.
    When the cap does not bind, the returned bound is `output_ceiling(plan, ...)`.

    A single call's fallbacks are kept only where they fit at the chosen deployment's bound: the
    cap serves the deployment the policy chose, and a dearer fallback must not shrink its answer.
    """
    if isinstance(plan, Single) and plan.fallbacks:
        primary = Single(plan.deployment)
        bound = max_tokens_within(primary, prompt_tokens, catalog, cap_usd, max_tokens, choices)
        if bound is None:
            return None
        kept = tuple(f for f in plan.fallbacks
                     if worst_case_cost(Single(f), prompt_tokens, catalog, bound, choices) <= cap_usd)
        return Single(plan.deployment, kept), bound
    bound = max_tokens_within(plan, prompt_tokens, catalog, cap_usd, max_tokens, choices)
    return None if bound is None else (plan, bound)


def worst_case_duration_s(plan: Plan, catalog: Catalog) -> float:
    """An upper bound on how long the plan's calls can take: every attempt of every deployment it
    may call timing out in turn, with the retry back-off (at most 2 s each) between attempts."""
    return sum((d.max_retries + 1) * d.timeout_s + 2.0 * d.max_retries
               for d in (catalog.deployments[name] for name in plan.reachable))
