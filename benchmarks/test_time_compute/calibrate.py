"""Fit the vote/cascade answer model of `gateway.plans.odds` on recorded train outcomes.

Every prediction of the model is linear in its correlation ρ (a mixture of the independent and the
shared-draw worlds), so for each number of distractors ρ has a closed-form least-squares fit; the
distractor count is picked by the smallest squared error. Targets per (prompt, member set): the vote
is right, agreement ≥ 0.6, agreement = 1. Then the escalation correlation is fitted the same way on
the cascades' realised score (what the policy compares), the vote part held at its fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from benchmarks.test_time_compute.data import Row, has_models, replay_cascade, replay_vote
from gateway.plans.odds import (
    VoteCalibration,
    escalated_quality,
    independent_outcomes,
    majority_vote_quality,
    odds,
    shared_draw_outcomes,
    vote_outcomes,
)
from gateway.signal import RouteSignal

THRESHOLDS = (0.6, 1.0)
DISTRACTORS = range(1, 10)


@dataclass(frozen=True, slots=True)
class Fit:
    calibration: VoteCalibration
    sse_by_distractors: dict[int, float]
    vote_observations: int
    cascade_observations: int


def _targets(ps: list[float], m: int, row: Row, members: Sequence[str]) -> list[tuple[float, float, float]]:
    """(independent prediction, shared-draw prediction, realised) for each target."""
    ind, shared = independent_outcomes(ps, m), shared_draw_outcomes(ps, m)
    real = replay_vote(row, members)
    out = [(odds(ind, 1.0).quality, odds(shared, 1.0).quality, real.score)]
    out += [(odds(ind, t).accept, odds(shared, t).accept, float(real.agreement >= t)) for t in THRESHOLDS]
    return out


def _rho(obs: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Least-squares mixture weight in [0, 1] for prediction a + ρ(b − a), and its squared error."""
    num = sum((b - a) * (y - a) for a, b, y in obs)
    den = sum((b - a) ** 2 for a, b, _ in obs) or 1.0
    rho = min(1.0, max(0.0, num / den))
    return rho, sum((a + rho * (b - a) - y) ** 2 for a, b, y in obs)


def fit_votes(
    rows: Sequence[Row], signals: Sequence[RouteSignal], sets: Sequence[tuple[str, ...]]
) -> tuple[float, int, dict[int, float], int]:
    sse: dict[int, float] = {}
    rhos: dict[int, float] = {}
    n_obs = 0
    for m in DISTRACTORS:
        obs: list[tuple[float, float, float]] = []
        for row, s in zip(rows, signals, strict=True):
            for members in sets:
                if has_models(row, members):
                    obs += _targets([s.quality[x] for x in members], m, row, members)
        rhos[m], sse[m] = _rho(obs)
        n_obs = len(obs)
    best = min(sse, key=lambda k: sse[k])
    return rhos[best], best, sse, n_obs


def fit_escalation(
    rows: Sequence[Row],
    signals: Sequence[RouteSignal],
    cal: VoteCalibration,
    cascades: Sequence[tuple[tuple[str, ...], str, float]],
) -> tuple[float, int]:
    obs: list[tuple[float, float, float]] = []
    for row, s in zip(rows, signals, strict=True):
        for members, large, t in cascades:
            if not has_models(row, (*members, large)):
                continue
            ps = [s.quality[x] for x in members]
            step = odds(vote_outcomes(ps, cal.member_correlation, cal.distractors), t)
            reach, q = 1 - step.accept, s.quality[large]
            real = replay_cascade(row, members, large, t)
            obs.append(
                (
                    step.accept_correct + reach * escalated_quality(q, reach, 0.0),
                    step.accept_correct + reach * escalated_quality(q, reach, 1.0),
                    real.score,
                )
            )
    return _rho(obs)[0], len(obs)


def fit(
    rows: Sequence[Row],
    signals: Sequence[RouteSignal],
    sets: Sequence[tuple[str, ...]],
    cascades: Sequence[tuple[tuple[str, ...], str, float]],
    prior: VoteCalibration,
) -> Fit:
    rho, m, sse, n_votes = fit_votes(rows, signals, sets)
    cal = replace(prior, member_correlation=round(rho, 3), distractors=m)
    rho_step, n_casc = fit_escalation(rows, signals, cal, cascades)
    return Fit(replace(cal, escalation_correlation=round(rho_step, 3)), sse, n_votes, n_casc)


def linear_keep_quality(ps: Sequence[float], keep: float = 0.5) -> float:
    """The earlier estimator: mean p plus `keep` of the independent majority-vote gain (for comparison)."""
    p = sum(ps) / len(ps)
    return p + keep * (majority_vote_quality(p, len(ps)) - p)
