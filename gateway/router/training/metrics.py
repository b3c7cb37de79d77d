"""Routing-quality metrics, matching /work/shared/gates/routing_eval.py (RouteLLM definitions).

Pure numpy. For a weak/strong pair, prompts are sorted by a score (higher = send to the
strong model first) and the k most difficult go to the strong model:

- PGR(k) = (q(k) - q_weak) / (q_strong - q_weak), the share of the quality gap recovered;
- APGR = trapezoid mean of PGR over k in [0, 1] (random ~ 0.5);
- CPT(x) = smallest strong-call share with PGR >= x;
- cost share at 95% = cost (share of always-strong) where quality first reaches 95% of
  always-strong.

Ties are broken by input order (a stable sort), exactly like routing_eval's ``sorted``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gateway.router.arrays import F64, Bools, Floats


@dataclass(frozen=True)
class PairCurve:
    share: F64  # strong-call share, 0..1, length n+1
    quality: F64  # mean score at that share
    cost: F64  # mean cost per prompt at that share


@dataclass(frozen=True)
class PairMetrics:
    n: int
    q_weak: float
    q_strong: float
    apgr: float
    cpt50: float
    cpt80: float
    cost_share_at_95pct_quality: float
    best_quality: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def pair_curve(
    score: Floats,
    q_weak: F64,
    q_strong: F64,
    c_weak: F64,
    c_strong: F64,
) -> PairCurve:
    """Quality and cost as the strong-call share grows, hardest (highest score) first."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    n = len(order)
    dq = (q_strong - q_weak)[order]
    dc = (c_strong - c_weak)[order]
    quality = (q_weak.sum() + np.concatenate([[0.0], np.cumsum(dq)])) / n
    cost = (c_weak.sum() + np.concatenate([[0.0], np.cumsum(dc)])) / n
    return PairCurve(np.arange(n + 1) / n, quality, cost)


def pgr(curve: PairCurve) -> F64:
    first = float(curve.quality[0])
    gap = float(curve.quality[-1]) - first
    if gap == 0:
        return np.zeros_like(curve.quality)
    return (curve.quality - first) / gap


def apgr(curve: PairCurve) -> float:
    p = pgr(curve)
    return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(curve.share)))


# A gap this close to zero is rounding left over from gains that cancel: no gap to recover.
NO_GAP = 1e-9


def batched_apgr(score: F64, gain: F64, ok: Bools) -> F64:
    """``apgr(pair_curve(...))`` of each row of (b, n) arrays in one pass: prompts ranked by
    ``score`` (highest first, ties in input order), each gaining ``gain`` (strong - weak) when
    sent to the strong model; only the prompts where ``ok`` count. For scoring many pairs or
    resamples at once (the adaptation's cross-validation, the all-pairs tables).

    Prompts not ok sort last with no gain. Over the n_ok that count, with C_k the gain of the
    first k and T = C_{n_ok}, APGR is the trapezoid mean of C_k / T over k = 0..n_ok, i.e.
    (sum_k C_k - T / 2) / (n_ok T), and sum_k C_k weighs the prompt at rank i (from 0) by n_ok - i.
    A row whose gains cancel (|T| <= NO_GAP) or with no prompt scores 0, as ``pgr`` does."""
    n = score.shape[1]
    g = np.where(ok, gain, 0.0)
    ranked = np.take_along_axis(g, np.argsort(-np.where(ok, score, -np.inf), axis=1, kind="stable"), axis=1)
    n_ok = ok.sum(axis=1)
    total = g.sum(axis=1)
    sum_c = ranked @ np.arange(n, 0, -1, dtype=np.float64) - (n - n_ok) * total
    none = (np.abs(total) <= NO_GAP) | (n_ok == 0)
    return np.where(none, 0.0, (sum_c - total / 2) / (np.maximum(n_ok, 1) * np.where(none, 1.0, total)))


def cpt(curve: PairCurve, x: float) -> float:
    hit = np.nonzero(pgr(curve) >= x)[0]
    return float(curve.share[hit[0]]) if hit.size else 1.0


def cost_share_at(curve: PairCurve, frac: float = 0.95) -> float:
    c_strong = curve.cost[-1] or 1.0
    hit = np.nonzero(curve.quality >= frac * curve.quality[-1])[0]
    return float(curve.cost[hit[0]] / c_strong) if hit.size else 1.0


def pair_metrics(
    score: Floats,
    q_weak: F64,
    q_strong: F64,
    c_weak: F64,
    c_strong: F64,
) -> PairMetrics:
    """All pair metrics at once, rounded like routing_eval.py."""
    cur = pair_curve(score, q_weak, q_strong, c_weak, c_strong)
    return PairMetrics(
        n=len(score),
        q_weak=round(float(cur.quality[0]), 4),
        q_strong=round(float(cur.quality[-1]), 4),
        apgr=round(apgr(cur), 4),
        cpt50=round(cpt(cur, 0.5), 4),
        cpt80=round(cpt(cur, 0.8), 4),
        cost_share_at_95pct_quality=round(cost_share_at(cur, 0.95), 4),
        best_quality=round(float(cur.quality.max()), 4),
    )
