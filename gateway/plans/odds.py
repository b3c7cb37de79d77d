"""The answer model behind test-time-compute estimates (best-of-n votes, cascade steps).

Vote: each member is right with its own p̂; wrong answers fall on one of `distractors` equally
likely wrong options. Members are not independent (hard questions mislead everyone the same
way), so who is right is a mixture: with weight 1-ρ independent members, with weight ρ one
shared draw (member i is right iff U < p̂_i: the weaker are wrong first). Ties go to the
earliest member, as in the executor's `vote`. This gives P(vote right), P(agreement ≥ t) and
P(agreement ≥ t and right) exactly, from a table precomputed per (n, distractors).

Calibrated on the train split of recorded outcomes by `python -m benchmarks.test_time_compute`
(see its report). Everything is plain Python (no numpy): it runs per request for every candidate plan.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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
class VoteOdds:
    quality: float         # P(the vote's answer is right)
    accept: float          # P(agreement share ≥ threshold)
    accept_correct: float  # P(agreement ≥ threshold and the answer is right)


# (agreement share, winner right) -> probability
Outcomes = dict[tuple[float, bool], float]



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


def sample_correlation(samplers: Sequence[str], cal: VoteCalibration) -> float:
    """Pairwise average: pairs of one deployment share more than pairs of different ones."""
    pairs = [(a == b) for i, a in enumerate(samplers) for b in samplers[i + 1:]]
    if not pairs:
        return 0.0
    same = sum(pairs) / len(pairs)
    return same * cal.same_deployment_correlation + (1 - same) * cal.member_correlation


def pass_at_n(ps: Sequence[float], correlation: float) -> float:
    """P(at least one member is right), in the same mixture as a vote: with weight 1-ρ independent
    members, with weight ρ one shared draw (someone is right iff the strongest is). What a judge can
    pick from: samples of one deployment (ρ = 0.8) add far less than independent ones would."""
    if not ps:
        return 0.0
    independent = 1 - math.prod(1 - p for p in ps)
    return (1 - correlation) * independent + correlation * max(ps)


def escalated_quality(p: float, reach: float, correlation: float) -> float:
    """P(right | the prompt reached this step), reached with probability `reach` (Fréchet mixture)."""
    if reach >= 1.0:
        return p
    if reach <= 0.0:
        return 0.0
    return ((1 - correlation) * p * reach + correlation * max(0.0, p + reach - 1)) / reach

