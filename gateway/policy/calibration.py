"""Targets met on traffic: the routing score, the sketch of its distribution, the threshold that meets a target.

**The score.** Under a `target` a decision is binary: the cheapest feasible plan, or the *strong
choice*, the feasible plan of highest q̂ among the others (ties: the cheaper). A request's score is
the quality the strong choice is predicted to add, `q̂_strong − q̂_cheap` (negative when the cheapest
plan is predicted best). With two candidates it is RouteLLM's win-rate gap; with more, "strong" is
any plan other than the cheapest feasible one, so `strong_share` bounds the share of requests that
cost more than the cheapest option, and the costlier plan that serves them is the one predicted
best. The score is a difference of the router's own predictions, so the threshold on it is found on
traffic (below) rather than set by hand: a router retrained on a new scale is recalibrated, not
re-tuned.

**The sketch.** A fixed-bin histogram of scores on [-1, 1]. Each bin also sums the predicted
quality and cost of the cheap and the strong choice of its requests, so the expected share to
strong, quality and cost follow for any threshold. Histograms add: replicas merge theirs by
addition (`gateway.policy.sharing`), and a sketch of weighted start-up samples is a prior that live
traffic soon outweighs (`gateway.policy.seed`).

**The threshold.** A target first becomes a share of traffic to send to the strong choice:
`strong_share` is one; `quality: x` is the smallest share whose expected quality reaches x times that
of always taking the strong choice; `usd_per_1k_requests` the largest share whose expected cost per
1,000 requests stays within it. The share becomes a threshold: the (1 − share) quantile of the
sketch, interpolated within its bin. Requests scoring at or above it take the strong choice.

Everything here is plain arithmetic over arrays, without I/O; the per-request part lives in
`gateway.policy.controller`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gateway.policy.schema import Target

LO, HI = -1.0, 1.0
BINS = 500
WIDTH = (HI - LO) / BINS
# Rows of a sketch: request weight, then sums of q̂ and ĉ of the cheap and the strong choice.
N, Q_CHEAP, Q_STRONG, C_CHEAP, C_STRONG = range(5)
ROWS = 5


def bin_of(score: float) -> int:
    i = int((score - LO) / WIDTH)
    return 0 if i < 0 else (BINS - 1 if i >= BINS else i)


class Sketch:
    """The histogram: a (ROWS, BINS) array of sums. Mutable; `copy()` before sharing."""

    __slots__ = ("sums",)

    def __init__(self, sums: np.ndarray | None = None) -> None:
        self.sums = np.zeros((ROWS, BINS)) if sums is None else sums

    def add(self, score: float, q_cheap: float, q_strong: float, c_cheap: float, c_strong: float,
            weight: float = 1.0) -> None:
        col = self.sums[:, bin_of(score)]
        col += (weight, weight * q_cheap, weight * q_strong, weight * c_cheap, weight * c_strong)

    def __add__(self, other: Sketch) -> Sketch:
        return Sketch(self.sums + other.sums)

    def scaled(self, factor: float) -> Sketch:
        return Sketch(self.sums * factor)

    def copy(self) -> Sketch:
        return Sketch(self.sums.copy())

    @property
    def weight(self) -> float:
        return float(self.sums[N].sum())

    def fields(self) -> dict[str, float]:
        """Non-zero cells as hash fields `"<bin>.<row>"`, for the store."""
        rows, bins = np.nonzero(self.sums)
        return {f"{b}.{r}": float(self.sums[r, b]) for r, b in zip(rows.tolist(), bins.tolist(), strict=True)}

    @classmethod
    def from_fields(cls, fields: Mapping[str, float]) -> Sketch:
        sketch = cls()
        for name, value in fields.items():
            b, _, r = name.partition(".")
            if b.isdigit() and r.isdigit() and int(b) < BINS and int(r) < ROWS:
                sketch.sums[int(r), int(b)] += value
        return sketch


@dataclass(frozen=True, slots=True)
class Quantiles:
    """The sketch's score distribution, cumulated once so that lookups are a bisection."""

    below: list[float]  # below[i]: weight in bins < i (BINS + 1 entries, ascending)
    total: float

    @classmethod
    def of(cls, sketch: Sketch) -> Quantiles:
        return cls.of_weights(sketch.sums[N])

    @classmethod
    def of_weights(cls, weights: np.ndarray) -> Quantiles:
        below = np.concatenate(([0.0], np.cumsum(weights)))
        return cls(below.tolist(), float(below[-1]))

    def threshold(self, share: float) -> float:
        """The score above which `share` of the weight lies: +inf sends nothing strong, -inf all.
        A share of 1 needs no traffic to place it: before any (a policy whose prior is empty, as when its
        constraints leave one plan for every prompt of the start-up sample) it sent everything cheap."""
        if share >= 1.0:
            return -math.inf
        if share <= 0.0 or self.total <= 0.0:
            return math.inf
        want = (1.0 - share) * self.total  # weight below the threshold
        below = self.below
        i = min(bisect.bisect_right(below, want) - 1, BINS - 1)
        in_bin = below[i + 1] - below[i]
        frac = (want - below[i]) / in_bin if in_bin > 0 else 0.0
        return LO + (i + frac) * WIDTH

    def quantile(self, score: float) -> float:
        """The share of the weight scoring below `score` (within a bin, spread evenly)."""
        if self.total <= 0.0:
            return 0.5
        i = bin_of(score)
        frac = min(1.0, max(0.0, (score - LO) / WIDTH - i))
        below = self.below
        return (below[i] + frac * (below[i + 1] - below[i])) / self.total


@dataclass(frozen=True, slots=True)
class Expected:
    """What a threshold does on a sketch's traffic."""

    threshold: float
    strong_share: float
    quality: float            # mean predicted quality of the chosen plans
    quality_share: float      # ... as a share of always taking the strong choice
    usd_per_1k_requests: float


def _curves(sketch: Sketch) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Per cut k (bins ≥ k go strong, k = 0..BINS): share, mean quality, cost per 1k; and the
    always-strong quality and the total weight."""
    s = sketch.sums
    total = float(s[N].sum())
    if total <= 0:
        zeros = np.zeros(BINS + 1)
        return zeros, zeros, zeros, 0.0, 0.0

    def above(row: int) -> np.ndarray:  # sum over bins ≥ k
        return np.concatenate((np.cumsum(s[row][::-1])[::-1], [0.0]))

    def below(row: int) -> np.ndarray:  # sum over bins < k
        return np.concatenate(([0.0], np.cumsum(s[row])))

    share = above(N) / total
    quality = (below(Q_CHEAP) + above(Q_STRONG)) / total
    cost = 1000.0 * (below(C_CHEAP) + above(C_STRONG)) / total
    return share, quality, cost, float(s[Q_STRONG].sum()) / total, total


def _interpolate(share: np.ndarray, k: int, frac: float) -> float:
    """The share between cuts k and k + 1 (share falls as k grows), `frac` of the way to k + 1."""
    k2 = min(k + 1, BINS)
    return float(share[k] + frac * (share[k2] - share[k]))


def share_for(target: Target, sketch: Sketch) -> float:
    """The share of traffic to send to the strong choice so that the sketch's traffic meets `target`."""
    if target.strong_share is not None:
        return target.strong_share
    share, quality, cost, always_strong, total = _curves(sketch)
    if total <= 0:
        return 0.0
    if target.quality is not None:
        want = target.quality * always_strong
        ok = np.nonzero(quality >= want - 1e-12)[0]
        if ok.size == 0:  # not even the best cut reaches it: send as much strong as helps
            return float(share[int(np.argmax(quality))])
        k = int(ok[-1])  # the highest cut that still meets it: the least sent strong
        if k == BINS or quality[k] == quality[min(k + 1, BINS)]:
            return float(share[k])
        frac = (quality[k] - want) / (quality[k] - quality[k + 1])
        return _interpolate(share, k, min(1.0, max(0.0, frac)))
    budget = float(target.usd_per_1k_requests or 0.0)
    ok = np.nonzero(cost <= budget + 1e-15)[0]
    if ok.size == 0:
        return 0.0
    k = int(ok[0])  # the lowest cut within budget: the most sent strong
    if k == 0 or cost[k - 1] == cost[k]:
        return float(share[k])
    frac = (budget - cost[k]) / (cost[k - 1] - cost[k])  # towards cut k - 1, which costs more
    return float(share[k] + min(1.0, max(0.0, frac)) * (share[k - 1] - share[k]))


def expected(sketch: Sketch, threshold: float) -> Expected:
    """Share, quality and cost per 1k requests of the sketch's traffic under `threshold`."""
    share, quality, cost, always_strong, total = _curves(sketch)
    if total <= 0:
        return Expected(threshold, 0.0, 0.0, 0.0, 0.0)
    if threshold == math.inf:
        k, frac = BINS, 0.0
    elif threshold == -math.inf:
        k, frac = 0, 0.0
    else:
        pos = min(max((threshold - LO) / WIDTH, 0.0), float(BINS))
        k = min(int(pos), BINS)
        frac = pos - k
    k2 = min(k + 1, BINS)

    def at(curve: np.ndarray) -> float:
        return float(curve[k] + frac * (curve[k2] - curve[k]))

    q = at(quality)
    return Expected(threshold, at(share), q, q / always_strong if always_strong > 0 else 1.0, at(cost))


@dataclass(slots=True)
class Cutoff:
    """The threshold in force for one decision, and the traffic it was drawn from (for explaining).
    Not frozen, though never changed: one is built per routed request of a target policy, and a
    frozen one costs ~1 µs more (its Quantiles hold a list, so it never hashed anyway)."""

    target: Target
    threshold: float
    share: float            # the share to strong in force: the target's, corrected by the realised share
    quantiles: Quantiles
    observations: float     # live requests in the sketch (the start-up sample not counted)
