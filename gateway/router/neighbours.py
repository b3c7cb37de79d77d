"""Nearest-neighbour outcome rates over a compact projection of the training prompts.

numpy + stdlib only (request path). The linear latent (``model.py``) sees a prompt through
6 principal-component scores; neighbours see *which training prompts it resembles* and
report how each model actually did on them. Blending the two was measured to add
(benchmarks/results/routing_representations.md).

    e(x)      = normalise(x_folded @ proj)          x: the same idf-weighted hashed vector the
                                                    linear part uses, buckets folded to
                                                    2**bits; proj: top right singular vectors
                                                    of the folded training matrix (LSA)
    s_i       = e(x) . e_i                          cosine to each stored training prompt
    w_i       = max(s_i, 0) ** power                over the k most similar
    rate_m    = (sum_i w_i y_im / w̄ + a prior_m) / (sum_i w_i seen_im / w̄ + a)
    knn_m(x)  = logit(rate_m) - logit(prior_m)      an extra input of model m's head
    share_d(x) = (sum_i w_i [domain_i = d] / w̄ + 1/D) / (k + 1)
                                                    which training file(s) the prompt resembles:
                                                    weighs the heads of a model that was
                                                    trained on several files (model.py)

Outcomes are stored as uint8 (score x 254, 255 = no result) so the artifact stays small.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import cast

import numpy as np

from gateway.router.arrays import F32, F64, I64, U8, Floats, Ints

MISSING = 255
_CLIP = 1e-4


def quantise_outcomes(y: F64) -> U8:
    """(n, m) float scores in [0, 1] with NaN = missing -> uint8 codes."""
    q = np.rint(np.clip(np.nan_to_num(y, nan=0.0), 0.0, 1.0) * 254).astype(np.uint8)
    q[np.isnan(y)] = MISSING
    return q


def unit(e: F32) -> F32:
    # np.sqrt's answer in e's own precision without a ufunc call on a scalar: a double sqrt rounded
    # to float32 is the float32 sqrt (53 >= 2 * 24 + 2 bits), and for float64 it is the same sqrt.
    n = float(e.dtype.type(math.sqrt(float(e @ e))))
    return e / n if n > 0 else e


def _logit(p: F64) -> F64:
    p = np.clip(p, _CLIP, 1 - _CLIP)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Neighbours:
    bits: int
    k: int
    smooth: float
    power: float
    proj: F32  # (2**bits, d) float32
    emb: F32  # (n, d) float32, unit rows
    hit: F32  # (n, m) float32 score (0 where missing)
    seen: F32  # (n, m) float32 1 = has a result
    prior: F64  # (m,) mean score per model over stored prompts
    domain: I64 | None = None  # (n,) int: the training file each stored prompt came from
    n_domains: int = 1

    @classmethod
    def from_arrays(cls, bits: int, k: int, smooth: float, power: float,
                    proj: Floats, emb: Floats, outcomes: U8,
                    domain: Ints | None = None, n_domains: int = 1) -> Neighbours:
        seen = (outcomes != MISSING).astype(np.float32)
        hit = np.where(outcomes == MISSING, 0, outcomes).astype(np.float32) / 254.0
        prior = (hit.sum(0) + 0.5) / (seen.sum(0) + 1.0)
        dom = None if domain is None else np.asarray(domain, dtype=np.int64)
        return cls(bits, int(k), float(smooth), float(power), proj.astype(np.float32),
                   emb.astype(np.float32), hit, seen, prior.astype(np.float64), dom, max(int(n_domains), 1))

    @functools.cached_property
    def prior_logit(self) -> F64:
        return _logit(self.prior)

    def logits(self, e: F32, exclude: Ints | None = None) -> F64:
        """knn_m for query embeddings e (d,) or (q, d); ``exclude[i]`` = a stored row to skip
        (leave-one-out at training time), -1 for none."""
        if e.ndim == 1 and exclude is None and 0 < self.k < self.emb.shape[0]:
            return self._one(e)
        q = np.atleast_2d(e)
        sims = q @ self.emb.T
        if exclude is not None:
            rows = np.nonzero(exclude >= 0)[0]
            sims[rows, exclude[rows]] = -np.inf
        k = min(self.k, self.emb.shape[0] - (1 if exclude is not None else 0))
        if k <= 0:
            out = np.zeros((q.shape[0], self.prior.size))
            return out[0] if e.ndim == 1 else out
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sims, idx, 1), 0.0).astype(np.float64) ** self.power
        w /= w.mean(1, keepdims=True) + 1e-12
        num = np.einsum("qk,qkm->qm", w, self.hit[idx])
        den = np.einsum("qk,qkm->qm", w, self.seen[idx])
        rate = (num + self.smooth * self.prior) / (den + self.smooth)
        out = _logit(rate) - _logit(self.prior)
        return out[0] if e.ndim == 1 else out

    def _one(self, e: F32) -> F64:
        return self.one(e)[0]

    @functools.cached_property
    def _hit_seen(self) -> F64:
        """hit and seen side by side in float64: one gather and one product per request."""
        return np.hstack([self.hit, self.seen]).astype(np.float64)

    @functools.cached_property
    def _smoothed_prior(self) -> F64:
        return self.smooth * self.prior

    def one(self, e: F32) -> tuple[F64, F64]:
        """The request path: (knn logits, domain shares) for one query, the same arithmetic as
        the batch path with as few numpy calls as it takes (each costs microseconds on a short
        prompt): a matrix-vector product, one gather of hit and seen together, and sums in place
        of ``mean`` and ``clip``, whose Python wrappers cost more than the arithmetic."""
        k = self.k
        sims = self.emb @ e.astype(np.float32, copy=False)
        idx = sims.argpartition(-k)[-k:]  # methods, not np.*: no Python wrapper frames
        w = np.maximum(sims.take(idx), 0.0).astype(np.float64)
        if self.power == 4.0:  # the shipped setting; two squarings beat a float power
            w *= w
            w *= w
        else:
            w **= self.power
        w /= np.add.reduce(w) / k + 1e-12  # what w.sum() runs, without its Python wrapper
        both = w @ self._hit_seen.take(idx, axis=0)
        m = self.prior.size
        rate = (both[:m] + self._smoothed_prior) / (both[m:] + self.smooth)
        np.maximum(rate, _CLIP, out=rate)
        np.minimum(rate, 1 - _CLIP, out=rate)
        out: F64 = np.log(rate / (1 - rate)) - self.prior_logit
        if self.domain is None:
            return out, np.ones(1)
        share = (np.bincount(self.domain.take(idx), w, self.n_domains) + 1.0 / self.n_domains) / (k + 1.0)
        return out, cast(F64, share)  # bincount's stubs widen float64 weights to floating
