"""The policy's choice per prompt among the arms, swept over value_usd, and the frontiers it traces.

For each prompt and arm the real estimator gives q̂/ĉ; the policy picks max value_usd·q̂ − ĉ (ties to
the cheaper plan, as `gateway.policy.decide` does), and the recorded outcomes give what that choice
really scored and cost. Two policies that differ only in their candidate set are compared on the
upper convex hull of their (cost, quality) points: any point on a segment is reachable by mixing the
two neighbouring value_usd settings per request, for either policy alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.test_time_compute.data import Row
from benchmarks.test_time_compute.plans import Arm
from gateway.policy.estimate import Catalog
from gateway.signal import RouteSignal

VALUES_USD = tuple(float(v) for v in np.geomspace(1e-5, 0.3, 61))


@dataclass(frozen=True, slots=True)
class Matrices:
    """Rows = prompts, columns = arms."""

    arms: tuple[Arm, ...]
    q_hat: np.ndarray
    c_hat: np.ndarray
    score: np.ndarray
    cost: np.ndarray
    escalated: np.ndarray


def build_matrices(
    arms: Sequence[Arm], rows: Sequence[Row], signals: Sequence[RouteSignal], catalog: Catalog
) -> Matrices:
    shape = (len(rows), len(arms))
    q, c, y, k, esc = (np.zeros(shape) for _ in range(5))
    for i, (row, s) in enumerate(zip(rows, signals, strict=True)):
        for j, arm in enumerate(arms):
            e, r = arm.estimate(s, catalog), arm.replay(row)
            q[i, j], c[i, j], y[i, j], k[i, j], esc[i, j] = e.quality, e.cost_usd, r.score, r.cost_usd, r.escalated
    return Matrices(tuple(arms), q, c, y, k, esc)


@dataclass(frozen=True, slots=True)
class PolicyPoint:
    value_usd: float
    quality: float
    cost_usd: float
    ttc_share: float  # share of prompts sent to a vote or cascade


def sweep(m: Matrices, columns: Sequence[int], values: Sequence[float] = VALUES_USD) -> list[PolicyPoint]:
    cols = np.asarray(columns)
    q, c = m.q_hat[:, cols], m.c_hat[:, cols]
    is_ttc = np.array([m.arms[j].kind != "single" for j in cols])
    points = []
    for v in values:
        utility = v * q - c
        best = utility.max(axis=1, keepdims=True)
        # among the best-utility plans, the cheapest: mask the others with +inf cost
        pick = np.where(utility >= best - 1e-15, c, np.inf).argmin(axis=1)
        rows = np.arange(len(pick))
        chosen = cols[pick]
        points.append(
            PolicyPoint(
                v, float(m.score[rows, chosen].mean()), float(m.cost[rows, chosen].mean()), float(is_ttc[pick].mean())
            )
        )
    return points


def hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper-left convex frontier of (cost, quality): increasing in both."""
    pts = sorted(set(points))
    frontier: list[tuple[float, float]] = []
    for p in pts:
        if frontier and p[1] <= frontier[-1][1]:
            continue
        while len(frontier) >= 2 and _cross(frontier[-2], frontier[-1], p) >= 0:
            frontier.pop()
        frontier.append(p)
    return frontier


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def quality_at(front: Sequence[tuple[float, float]], cost: float) -> float:
    """Best quality reachable at this mean cost (nan below the cheapest point)."""
    xs, ys = [p[0] for p in front], [p[1] for p in front]
    if cost < xs[0]:
        return float("nan")
    return float(np.interp(cost, xs, ys))


def cost_at(front: Sequence[tuple[float, float]], quality: float) -> float:
    """Cheapest mean cost reaching this quality (nan above the best point)."""
    xs, ys = [p[0] for p in front], [p[1] for p in front]
    if quality > ys[-1]:
        return float("nan")
    if quality <= ys[0]:
        return xs[0]
    return float(np.interp(quality, ys, xs))


@dataclass(frozen=True, slots=True)
class Comparison:
    cost_usd: float
    quality_without: float
    quality_with: float
    quality: float
    cost_without: float
    cost_with: float


def compare(without: Sequence[PolicyPoint], with_ttc: Sequence[PolicyPoint], n: int = 8) -> list[Comparison]:
    """Quality at equal cost and cost at equal quality, at n levels across the shared range."""
    a = hull([(p.cost_usd, p.quality) for p in without])
    b = hull([(p.cost_usd, p.quality) for p in with_ttc])
    lo_c, hi_c = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    lo_q, hi_q = max(a[0][1], b[0][1]), min(a[-1][1], b[-1][1])
    out = []
    for cost, quality in zip(np.geomspace(lo_c, hi_c, n), np.linspace(lo_q, hi_q, n), strict=True):
        out.append(
            Comparison(
                float(cost),
                quality_at(a, cost),
                quality_at(b, cost),
                float(quality),
                cost_at(a, quality),
                cost_at(b, quality),
            )
        )
    return out
