"""Training-time solvers: sparse ridge (scipy) and small logistic heads (numpy).

Kept apart from ``model.py`` so the serving path never imports scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import lsqr
from tqdm import tqdm

from gateway.router.arrays import F64

# Below this many rows ridge is solved in its dual form (an n x n system) instead of by LSQR.
DUAL_MAX_ROWS = 4000


@dataclass(frozen=True)
class RidgeFit:
    coef: F64  # (d, t)
    intercept: F64  # (t,)


def fit_ridge(
    x: sp.csr_matrix, y: F64, lam: float, iters: int = 400, weight: F64 | None = None
) -> RidgeFit:
    """Ridge per target column via LSQR (damped least squares); centred targets, no
    penalty on the intercept. ``weight``: per-row weights (mean 1 keeps lam comparable)."""
    w = np.ones(x.shape[0]) if weight is None else weight
    mu = (w[:, None] * y).sum(0) / w.sum()
    sw = np.sqrt(w)
    xw = sp.diags(sw) @ x if weight is not None else x
    if x.shape[0] <= DUAL_MAX_ROWS:  # few rows, many columns: the exact dual solve is far faster
        gram = np.asarray((xw @ xw.T).todense()) + lam * np.eye(x.shape[0])
        alpha = np.linalg.solve(gram, sw[:, None] * (y - mu))
        return RidgeFit(np.asarray(xw.T @ alpha), mu)
    coef = np.zeros((x.shape[1], y.shape[1]))
    for j in range(y.shape[1]):
        coef[:, j] = lsqr(xw, sw * (y[:, j] - mu[j]), damp=np.sqrt(lam), atol=1e-5, btol=1e-5, iter_lim=iters)[0]
    return RidgeFit(coef, mu)


def predict_ridge(fit: RidgeFit, x: sp.csr_matrix) -> F64:
    return cast(F64, np.asarray(x @ fit.coef) + fit.intercept)  # scipy is untyped


def oof_ridge(
    x: sp.csr_matrix, y: F64, lam: float, folds: int = 5, seed: int = 0, progress: bool = True,
    weight: F64 | None = None,
) -> tuple[F64, RidgeFit]:
    """Out-of-fold predictions (so heads are fitted on honest, shrunk latents) + a full fit."""
    fold = np.random.default_rng(seed).integers(0, folds, x.shape[0])
    w = np.ones(x.shape[0]) if weight is None else weight
    oof = np.zeros_like(y, dtype=np.float64)
    for q in tqdm(range(folds), desc="ridge folds", disable=not progress, leave=False):
        held = fold == q
        if not held.any() or held.all():  # tiny data: a fold can be empty or everything
            continue
        oof[held] = predict_ridge(fit_ridge(x[~held], y[~held], lam, weight=w[~held]), x[held])
    return oof, fit_ridge(x, y, lam, weight=weight)


def fit_logistic(
    f: F64, y: F64, weight: F64 | None = None, l2: float = 1e-2, iters: int = 30,
    offset: F64 | None = None, penalty: F64 | None = None, total_l2: float | None = None,
    start: F64 | None = None,
) -> tuple[F64, float]:
    """L2-penalised logistic regression by Newton's method (few features, many rows).

    ``offset``: a fixed per-row logit added to the linear part (fits a correction on top of
    an existing model); y may be soft (a share in [0, 1]). The penalty on each coefficient is
    ``l2`` x the total row weight (a per-row penalty: the same pull whatever the data size), or
    ``total_l2`` when given (a fixed prior: its pull fades as rows accumulate); ``penalty``
    multiplies it per feature (0 = unpenalised). ``start``: coefficients then intercept to start
    from (a neighbouring fit's answer: a grid of penalties converges in a few steps each)."""
    n, d = f.shape
    a = np.column_stack([f, np.ones(n)])
    w = np.ones(n) if weight is None else weight
    off = np.zeros(n) if offset is None else offset
    beta = np.zeros(d + 1) if start is None else start.astype(np.float64, copy=True)
    pen = np.full(d + 1, l2 * float(w.sum()) if total_l2 is None else total_l2)
    if penalty is not None:
        pen[:-1] *= penalty
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ beta + off, -30, 30)))
        grad = a.T @ (w * (p - y)) + pen * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-7:
            break
    return beta[:-1], float(beta[-1])


def fit_generic_head(
    phi: F64, y: F64, row_weight: F64 | None = None,
    offset: F64 | None = None, l2: float = 1e-6, iters: int = 30,
) -> tuple[F64, float, F64]:
    """Shared difficulty logit delta(x) = phi.c + c0 with per-model abilities theta_m:
    P(good | m, x) = sigmoid(theta_m - delta(x)), a 1PL item-response model whose item
    side is a function of the text. NaN = missing; ``row_weight`` weighs prompts (e.g. to
    balance domains); ``offset`` is a fixed per-prompt difficulty added to delta.

    Newton's method on the block structure (c dense, theta one per model) instead of a
    stacked one-hot design: a pool of ~100 models over ~13k prompts stays a small solve.
    Returns (c, c0, theta) with theta centred (mean 0) so c0 carries the overall level.
    """
    k = phi.shape[1]
    m = y.shape[1]
    item, model = np.nonzero(~np.isnan(y))
    target = y[item, model]
    w = np.ones(item.size) if row_weight is None else row_weight[item]
    off = np.zeros(item.size) if offset is None else offset[item]
    f = phi[item]
    pen = l2 * float(w.sum())
    c, theta = np.zeros(k), np.zeros(m)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(theta[model] - f @ c - off, -30, 30)))
        g = w * (p - target)
        h = w * p * (1 - p)
        grad = np.concatenate([-(f.T @ g) + pen * c, np.bincount(model, g, m) + pen * theta])
        hess = np.zeros((k + m, k + m))
        hess[:k, :k] = (f * h[:, None]).T @ f + pen * np.eye(k)
        cross = np.zeros((k, m))
        for j in range(k):
            cross[j] = -np.bincount(model, h * f[:, j], m)
        hess[:k, k:] = cross
        hess[k:, :k] = cross.T
        hess[k:, k:] = np.diag(np.bincount(model, h, m) + pen + 1e-9)
        step = np.linalg.solve(hess, grad)
        c -= step[:k]
        theta -= step[k:]
        if np.max(np.abs(step)) < 1e-7:
            break
    shift = float(theta.mean())
    return c, -shift, theta - shift


def fold_columns(x: sp.csr_matrix, bits: int) -> sp.csr_matrix:
    """Fold hashed buckets onto 2**bits columns (ids & mask, colliding values summed),
    exactly as ``Router._latent`` projects a prompt at serving time."""
    coo = x.tocoo()
    out = sp.csr_matrix((coo.data, (coo.row, coo.col & ((1 << bits) - 1))), shape=(x.shape[0], 1 << bits))
    out.sum_duplicates()
    return out


def top_right_singular(x: sp.csr_matrix, k: int, seed: int = 0, n_iter: int = 4, oversample: int = 16) -> F64:
    """(cols, k) top right singular vectors of a sparse matrix by a seeded randomized
    range finder (Halko et al.) with power iterations; uncentred, i.e. LSA."""
    k = max(1, min(k, min(x.shape) - 1))
    rng = np.random.default_rng(seed)
    q = np.asarray(x @ rng.standard_normal((x.shape[1], min(k + oversample, min(x.shape)))))
    q, _ = np.linalg.qr(q)
    for _ in range(n_iter):
        q, _ = np.linalg.qr(np.asarray(x.T @ q))
        q, _ = np.linalg.qr(np.asarray(x @ q))
    _, _, vt = np.linalg.svd(np.asarray((x.T @ q).T), full_matrices=False)
    return vt[:k].T
