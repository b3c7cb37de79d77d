"""Predicted quality (q̂), cost (ĉ) and latency (l̂) of a plan for one request.

Single calls take q̂ from the router and ĉ from prices and token estimates. Test-time-compute
plans (best-of-n, cascades) build on the members' q̂ with a small answer model, calibrated on the
train split of recorded outcomes by `python -m benchmarks.test_time_compute` (see its report):

- Vote: each member is right with its own p̂; wrong answers fall on one of `distractors` equally
  likely wrong options. Members are not independent (hard questions mislead everyone the same
  way), so who is right is a mixture: with weight 1-ρ independent members, with weight ρ one
  shared draw (member i is right iff U < p̂_i: the weaker are wrong first). Ties go to the
  earliest member, as in the executor's `vote`. This gives P(vote right), P(agreement ≥ t) and
  P(agreement ≥ t and right) exactly, from a table precomputed per (n, distractors).
- Cascade: a step is accepted when its agreement clears the threshold. Prompts that reach the
  next step are the harder ones: with reach probability e, a model's P(right | reached) mixes
  independence (p) with the worst case (max(0, p+e-1)/e) by `escalation_correlation`.

Everything is plain Python (no numpy): it runs per request for every candidate plan.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from gateway.config import DeploymentConfig
from gateway.plans import BestOfN, Cascade, Plan, Single
from gateway.providers.pricing import DeploymentPrice
from gateway.signal import RouteSignal
from gateway.tokens import count_text

JUDGE_OUTPUT_TOKENS = 16
# Measured over-prediction of cascades on validation (benchmarks/results/test_time_compute.md).
CASCADE_SHORTFALL = 0.02
MAX_EXACT_MEMBERS = 5  # the vote table has Bell(n+1) rows; more samples are estimated from the first 5


@dataclass(frozen=True, slots=True)
class VoteCalibration:
    member_correlation: float           # ρ among different deployments (fitted on train)
    same_deployment_correlation: float  # ρ among samples of one deployment (prior: not in the data)
    distractors: int                    # effective number of distinct wrong answers (fitted)
    escalation_correlation: float       # how much harder escalated prompts are (fitted)
    judge_keep: float                   # share of the pass@n gain a judge keeps (prior: not in the data)


# Fitted on the mmlu_pro train split by `python -m benchmarks.test_time_compute` (fit quality on
# validation: benchmarks/results/test_time_compute.md). Samples of one deployment agree more than
# different models do, so their ρ is a prior set well above the measured cross-model value.
CALIBRATION = VoteCalibration(member_correlation=0.53, same_deployment_correlation=0.8,
                              distractors=5, escalation_correlation=0.6, judge_keep=0.5)


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


@dataclass(frozen=True, slots=True)
class VoteOdds:
    quality: float         # P(the vote's answer is right)
    accept: float          # P(agreement share ≥ threshold)
    accept_correct: float  # P(agreement ≥ threshold and the answer is right)


# (agreement share, winner right) -> probability
Outcomes = dict[tuple[float, bool], float]


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


def _set_partitions(items: tuple[int, ...]) -> list[list[tuple[int, ...]]]:
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for part in _set_partitions(rest):
        out.append([(first,), *part])
        out += [[*part[:i], (first, *block), *part[i + 1:]] for i, block in enumerate(part)]
    return out


def _winner(clusters: list[tuple[int, int, bool]], n: int) -> tuple[float, bool]:
    """clusters: (size, earliest member, right?). The largest wins; ties go to the earliest member."""
    top = max(size for size, _, _ in clusters)
    _, right = min((first, ok) for size, first, ok in clusters if size == top)
    return top / n, right


@lru_cache(maxsize=64)
def _vote_table(n: int, distractors: int) -> tuple[tuple[tuple[float, bool, float], ...], ...]:
    """For each mask of right members: (agreement share, winner right, P(this wrong-answer split)) rows."""
    table = []
    for mask in range(1 << n):
        right = [i for i in range(n) if mask >> i & 1]
        wrong = tuple(i for i in range(n) if not mask >> i & 1)
        rows: dict[tuple[float, bool], float] = {}
        for part in _set_partitions(wrong):
            b = len(part)
            if b > distractors:
                continue
            weight = math.perm(distractors, b) / distractors ** len(wrong)
            clusters = [(len(blk), blk[0], False) for blk in part] + ([(len(right), right[0], True)] if right else [])
            key = _winner(clusters, n)
            rows[key] = rows.get(key, 0.0) + weight
        table.append(tuple((share, ok, w) for (share, ok), w in rows.items()))
    return tuple(table)


def _add(out: Outcomes, rows: tuple[tuple[float, bool, float], ...], p: float) -> None:
    for share, ok, w in rows:
        out[(share, ok)] = out.get((share, ok), 0.0) + p * w


def independent_outcomes(ps: Sequence[float], distractors: int) -> Outcomes:
    n = len(ps)
    table = _vote_table(n, distractors)
    out: Outcomes = {}
    for mask in range(1 << n):
        p = 1.0
        for i, pi in enumerate(ps):
            p *= pi if mask >> i & 1 else 1 - pi
        _add(out, table[mask], p)
    return out


def shared_draw_outcomes(ps: Sequence[float], distractors: int) -> Outcomes:
    """One U for all members: member i is right iff U < p_i (the wrong ones still split over distractors)."""
    table = _vote_table(len(ps), distractors)
    cuts = sorted({0.0, 1.0, *(min(1.0, max(0.0, p)) for p in ps)})
    out: Outcomes = {}
    for lo, hi in itertools.pairwise(cuts):
        mask = sum(1 << i for i, p in enumerate(ps) if p >= hi)
        _add(out, table[mask], hi - lo)
    return out


def vote_outcomes(ps: Sequence[float], correlation: float, distractors: int) -> Outcomes:
    ps = list(ps)[:MAX_EXACT_MEMBERS]
    out = {k: (1 - correlation) * v for k, v in independent_outcomes(ps, distractors).items()}
    for k, v in shared_draw_outcomes(ps, distractors).items():
        out[k] = out.get(k, 0.0) + correlation * v
    return out


def odds(outcomes: Outcomes, threshold: float) -> VoteOdds:
    quality = sum(v for (_, ok), v in outcomes.items() if ok)
    accept = sum(v for (share, _), v in outcomes.items() if share >= threshold)
    accept_correct = sum(v for (share, ok), v in outcomes.items() if ok and share >= threshold)
    return VoteOdds(quality, accept, accept_correct)


def _correlation(samplers: Sequence[str], cal: VoteCalibration) -> float:
    """Pairwise average: pairs of one deployment share more than pairs of different ones."""
    pairs = [(a == b) for i, a in enumerate(samplers) for b in samplers[i + 1:]]
    if not pairs:
        return 0.0
    same = sum(pairs) / len(pairs)
    return same * cal.same_deployment_correlation + (1 - same) * cal.member_correlation


def escalated_quality(p: float, reach: float, correlation: float) -> float:
    """P(right | the prompt reached this step), reached with probability `reach` (Fréchet mixture)."""
    if reach >= 1.0:
        return p
    if reach <= 0.0:
        return 0.0
    return ((1 - correlation) * p * reach + correlation * max(0.0, p + reach - 1)) / reach


def _single(plan: Single, s: RouteSignal, cat: Catalog, live: Mapping[str, float],
            max_tokens: int | None) -> Estimate:
    d = cat.deployments[plan.deployment]
    out = output_tokens(d, max_tokens)
    cost = cat.prices[d.name].estimate(s.prompt_tokens, out)
    return Estimate(s.quality[d.name], cost, single_latency_ms(d, out, live.get(d.name)))


def _judge_cost(judge: str, s: RouteSignal, cat: Catalog, answers_tokens: int) -> float:
    return cat.prices[judge].estimate(s.prompt_tokens + answers_tokens, JUDGE_OUTPUT_TOKENS)


def _sampling(samplers: Sequence[str], s: RouteSignal, cat: Catalog, live: Mapping[str, float],
              max_tokens: int | None) -> tuple[list[float], float, float]:
    """Members' q̂, the cost and the latency of drawing one sample from each sampler."""
    singles = [_single(Single(d), s, cat, live, max_tokens) for d in samplers]
    d0 = cat.deployments[samplers[0]]
    if len(set(samplers)) == 1 and d0.supports_n:  # one call with n: the prompt is billed once
        cost = cat.prices[d0.name].estimate(s.prompt_tokens, output_tokens(d0, max_tokens) * len(samplers))
    else:
        cost = sum(e.cost_usd for e in singles)
    return [e.quality for e in singles], cost, max(e.latency_ms for e in singles)


def _best_of(plan: BestOfN, s: RouteSignal, cat: Catalog, live: Mapping[str, float],
             max_tokens: int | None, cal: VoteCalibration = CALIBRATION) -> Estimate:
    ps, cost, latency = _sampling(plan.samplers, s, cat, live, max_tokens)
    if plan.selector == "judge" and plan.judge:
        mean = sum(ps) / len(ps)
        pass_at_n = 1 - math.prod(1 - p for p in ps)
        quality = mean + cal.judge_keep * (pass_at_n - mean)
        out = output_tokens(cat.deployments[plan.samplers[0]], max_tokens)
        cost += _judge_cost(plan.judge, s, cat, out * plan.n)
        latency += _single(Single(plan.judge), s, cat, live, JUDGE_OUTPUT_TOKENS).latency_ms
    else:
        quality = odds(vote_outcomes(ps, _correlation(plan.samplers, cal), cal.distractors), 1.0).quality
    return Estimate(min(1.0, max(0.0, quality)), cost, latency)


def _step_odds(members: Sequence[str], ps: list[float], confidence: str, threshold: float,
               cal: VoteCalibration) -> VoteOdds:
    if confidence == "agreement" and len(members) > 1:
        return odds(vote_outcomes(ps, _correlation(members, cal), cal.distractors), threshold)
    # logprob / judge scores: not in the recorded data, so a prior: P(accept) grows as the threshold
    # falls, and accepted answers lean right (the same mixture as escalation, in the other direction).
    q = ps[0]
    accept = min(1.0, q + 0.5 * (1 - threshold))
    rho = cal.escalation_correlation
    return VoteOdds(q, accept, (1 - rho) * accept * q + rho * min(accept, q))


def estimate_cascade(stages: Sequence[Sequence[str]], threshold: float, signal: RouteSignal,
                     catalog: Catalog, live_latency_s: Mapping[str, float], max_tokens: int | None = None,
                     confidence: str = "agreement", judge: str | None = None,
                     cal: VoteCalibration = CALIBRATION) -> Estimate:
    """A cascade whose stages are member sets: every stage but the last answers by vote and is
    accepted when its agreement share ≥ threshold; the last stage always answers.

    Latency is the worst case (all stages), which is what an SLO must allow for.
    """
    quality, cost, latency, reach = 0.0, 0.0, 0.0, 1.0
    for i, members in enumerate(stages):
        raw, stage_cost, stage_latency = _sampling(members, signal, catalog, live_latency_s, max_tokens)
        ps = [escalated_quality(p, reach, cal.escalation_correlation) for p in raw]
        if judge and confidence == "judge" and i < len(stages) - 1:
            out = output_tokens(catalog.deployments[members[0]], max_tokens)
            stage_cost += _judge_cost(judge, signal, catalog, out)
        cost += reach * stage_cost
        latency += stage_latency
        if i == len(stages) - 1:
            quality += reach * odds(vote_outcomes(ps, _correlation(members, cal), cal.distractors), 1.0).quality
            break
        step = _step_odds(members, ps, confidence, threshold, cal)
        quality += reach * step.accept_correct
        reach *= 1 - step.accept
    # Never predict a cascade above its last stage answering alone: on recorded outcomes
    # (benchmarks/results/test_time_compute.md) no cascade beat its final model, and the uncapped
    # model over-predicted unanimous cascades by 2 points, which made the policy overpay for them.
    # So a cascade must be predicted to cost less for the same quality, less that measured shortfall.
    final = signal.quality[stages[-1][0]] - CASCADE_SHORTFALL if len(stages[-1]) == 1 else quality
    return Estimate(min(1.0, max(0.0, min(quality, final))), cost, latency)


def _cascade(plan: Cascade, s: RouteSignal, cat: Catalog, live: Mapping[str, float],
             max_tokens: int | None) -> Estimate:
    # The executor samples every non-final step `samples` times when confidence is agreement.
    k = plan.samples if plan.confidence == "agreement" else 1
    stages = [(step,) * k for step in plan.steps[:-1]] + [(plan.steps[-1],)]
    return estimate_cascade(stages, plan.threshold, s, cat, live, max_tokens, plan.confidence, plan.judge)


def estimate(plan: Plan, signal: RouteSignal, catalog: Catalog, live_latency_s: Mapping[str, float],
             max_tokens: int | None = None) -> Estimate:
    if isinstance(plan, Single):
        return _single(plan, signal, catalog, live_latency_s, max_tokens)
    if isinstance(plan, BestOfN):
        return _best_of(plan, signal, catalog, live_latency_s, max_tokens)
    return _cascade(plan, signal, catalog, live_latency_s, max_tokens)


# What the runners send a judge (gateway.executor.runners) and what its instructions and candidate
# labels add to the prompt, generously: worst cases must not be under-estimated.
JUDGE_MAX_TOKENS = 8
JUDGE_FRAMING_TOKENS = 96


def worst_case_cost(plan: Plan, prompt_tokens: int, catalog: Catalog, max_tokens: int | None,
                    choices: int = 1) -> float:
    """The most this plan can cost for this request: every call it may make, each generating up to
    `max_tokens` (else its deployment's `max_output_tokens`). Budgets reserve it before any call;
    cost caps bound `max_tokens` by it. `choices` is the client's `n` for calls that answer directly.

    single: the dearest deployment of the fallback chain (one of them answers); best-of: every
    sample plus the judge, whose prompt carries every sample; cascade: every step and its samples.
    """
    if isinstance(plan, Single):  # the common case, on every capped or budgeted request: no closures
        worst = 0.0
        for name in (plan.deployment, *plan.fallbacks):
            price = catalog.prices[name]
            out = (max_tokens or catalog.deployments[name].max_output_tokens) * choices
            worst = max(worst, prompt_tokens * price.input_per_token + out * price.output_per_token)
        return worst

    def limit(name: str) -> int:
        return max_tokens or catalog.deployments[name].max_output_tokens

    def answer(name: str, n: int) -> float:
        return catalog.prices[name].estimate(prompt_tokens, limit(name) * n)

    def sampling(samplers: tuple[str, ...]) -> float:
        d0 = catalog.deployments[samplers[0]]
        if len(set(samplers)) == 1 and d0.supports_n:  # one call with n: the prompt is billed once
            return answer(d0.name, len(samplers))
        return sum(answer(s, 1) for s in samplers)

    def judging(judge: str, answers: int, instructions: str | None = None) -> float:
        framing = JUDGE_FRAMING_TOKENS + (count_text(instructions) if instructions else 0)
        return catalog.prices[judge].estimate(prompt_tokens + framing + answers, JUDGE_MAX_TOKENS)

    if isinstance(plan, BestOfN):
        cost = sampling(plan.samplers)
        if plan.selector == "judge" and plan.judge:
            cost += judging(plan.judge, sum(limit(s) for s in plan.samplers), plan.judge_prompt)
        return cost
    cost = 0.0
    for step in plan.steps[:-1]:
        if plan.confidence == "agreement" and plan.samples > 1:
            cost += sampling((step,) * plan.samples)
        else:
            cost += answer(step, choices)
            if plan.confidence == "judge" and plan.judge:
                cost += judging(plan.judge, limit(step) * choices)
    return cost + answer(plan.steps[-1], choices)


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
    return max_tokens or max(catalog.deployments[d].max_output_tokens for d in _all_deployments(plan))


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


def _all_deployments(plan: Plan) -> tuple[str, ...]:
    return (*plan.deployments, *plan.fallbacks) if isinstance(plan, Single) else plan.deployments


def worst_case_duration_s(plan: Plan, catalog: Catalog) -> float:
    """An upper bound on how long the plan's calls can take: every attempt of every deployment it
    may call timing out in turn, with the retry back-off (at most 2 s each) between attempts."""
    return sum((d.max_retries + 1) * d.timeout_s + 2.0 * d.max_retries
               for d in (catalog.deployments[name] for name in _all_deployments(plan)))
