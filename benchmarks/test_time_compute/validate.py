"""How well the calibrated estimator predicts votes and cascades on held-out (validation) prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.test_time_compute.calibrate import linear_keep_quality
from benchmarks.test_time_compute.frontier import Matrices
from benchmarks.test_time_compute.plans import Arm
from gateway.plans.odds import CALIBRATION, VoteCalibration, odds, vote_outcomes
from gateway.signal import RouteSignal


@dataclass(frozen=True, slots=True)
class ArmFit:
    arm: str
    predicted_quality: float
    realised_quality: float
    predicted_cost_usd: float
    realised_cost_usd: float
    predicted_accept: float | None  # cascades: P(the vote is accepted)
    realised_accept: float | None


def arm_fits(m: Matrices, signals: Sequence[RouteSignal], cal: VoteCalibration = CALIBRATION) -> list[ArmFit]:
    out = []
    for j, arm in enumerate(m.arms):
        if arm.kind == "single":
            continue
        pa = ra = None
        if arm.kind == "cascade":
            pa = float(np.mean([_accept(arm, s, cal) for s in signals]))
            ra = float(1 - m.escalated[:, j].mean())
        out.append(
            ArmFit(
                arm.name,
                float(m.q_hat[:, j].mean()),
                float(m.score[:, j].mean()),
                float(m.c_hat[:, j].mean()),
                float(m.cost[:, j].mean()),
                pa,
                ra,
            )
        )
    return out


def _accept(arm: Arm, s: RouteSignal, cal: VoteCalibration) -> float:
    ps = [s.quality[x] for x in arm.members]
    return odds(vote_outcomes(ps, cal.member_correlation, cal.distractors), arm.threshold).accept


@dataclass(frozen=True, slots=True)
class Scores:
    """Brier score of per-prompt P(vote right), pooled over the vote arms (lower is better)."""

    calibrated: float
    linear_keep_half: float  # the earlier guess: mean p̂ + 0.5 · independent gain
    best_member: float  # the best member's own p̂, no vote model at all
    bins: list[tuple[float, float, int]]  # (mean predicted, realised, prompts) by predicted quintile


def vote_scores(m: Matrices, signals: Sequence[RouteSignal]) -> Scores:
    cols = [j for j, a in enumerate(m.arms) if a.kind == "vote"]
    pred = np.concatenate([m.q_hat[:, j] for j in cols])
    real = np.concatenate([m.score[:, j] for j in cols])
    old = np.array([linear_keep_quality([s.quality[x] for x in m.arms[j].members]) for j in cols for s in signals])
    best = np.array([max(s.quality[x] for x in m.arms[j].members) for j in cols for s in signals])
    edges = np.quantile(pred, np.linspace(0, 1, 6))
    which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, 4)
    bins = [
        (float(pred[which == b].mean()), float(real[which == b].mean()), int((which == b).sum()))
        for b in range(5)
        if (which == b).any()
    ]
    brier = lambda p: float(np.mean((p - real) ** 2))  # noqa: E731
    return Scores(brier(pred), brier(old), brier(best), bins)
