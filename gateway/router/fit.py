"""Training-time solvers: sparse ridge (scipy) and small logistic heads (numpy).

Kept apart from ``model.py`` so the serving path never imports scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import lsqr
from tqdm import tqdm


@dataclass(frozen=True)
class RidgeFit:
    coef: np.ndarray  # (d, t)
    intercept: np.ndarray  # (t,)


def fit_ridge(x: sp.csr_matrix, y: np.ndarray, lam: float, iters: int = 400) -> RidgeFit:
    """Ridge per target column via LSQR (damped least squares); centred targets, no
    penalty on the intercept."""
    mu = y.mean(0)
    coef = np.zeros((x.shape[1], y.shape[1]))
    for j in range(y.shape[1]):
        coef[:, j] = lsqr(x, y[:, j] - mu[j], damp=np.sqrt(lam), atol=1e-5, btol=1e-5, iter_lim=iters)[0]
    return RidgeFit(coef, mu)


def predict_ridge(fit: RidgeFit, x: sp.csr_matrix) -> np.ndarray:
    return np.asarray(x @ fit.coef) + fit.intercept


def oof_ridge(
    x: sp.csr_matrix, y: np.ndarray, lam: float, folds: int = 5, seed: int = 0, progress: bool = True
) -> tuple[np.ndarray, RidgeFit]:
    """Out-of-fold predictions (so heads are fitted on honest, shrunk latents) + a full fit."""
    fold = np.random.default_rng(seed).integers(0, folds, x.shape[0])
    oof = np.zeros_like(y, dtype=np.float64)
    for q in tqdm(range(folds), desc="ridge folds", disable=not progress, leave=False):
        held = fold == q
        if not held.any() or held.all():  # tiny data: a fold can be empty or everything
            continue
        oof[held] = predict_ridge(fit_ridge(x[~held], y[~held], lam), x[held])
    return oof, fit_ridge(x, y, lam)


def fit_logistic(
    f: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, l2: float = 1e-2, iters: int = 30
) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method (few features, many rows)."""
    n, d = f.shape
    a = np.column_stack([f, np.ones(n)])
    w = np.ones(n) if weight is None else weight
    beta = np.zeros(d + 1)
    pen = np.full(d + 1, l2 * n)
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a @ beta)))
        grad = a.T @ (w * (p - y)) + pen * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-7:
            break
    return beta[:-1], float(beta[-1])


def fit_generic_head(phi: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Shared difficulty logit delta(x) = phi.c + c0 with per-model abilities theta_m:
    P(good | m, x) = sigmoid(theta_m - delta(x)), a 1PL item-response model whose item
    side is a function of the text. One stacked logistic regression; NaN = missing.

    Returns (c, c0, theta) with theta centred (mean 0) so c0 carries the overall level.
    """
    m = y.shape[1]
    ok = ~np.isnan(y)
    item, model = np.nonzero(ok)
    onehot = np.zeros((item.size, m))
    onehot[np.arange(item.size), model] = 1.0
    beta, icpt = fit_logistic(np.column_stack([-phi[item], onehot]), y[item, model], l2=1e-6)
    c, theta = beta[: phi.shape[1]], beta[phi.shape[1] :] + icpt
    shift = float(theta.mean())
    return c, -shift, theta - shift


def fold_columns(x: sp.csr_matrix, bits: int) -> sp.csr_matrix:
    """Fold hashed buckets onto 2**bits columns (ids & mask, colliding values summed),
    exactly as ``Router._latent`` projects a prompt at serving time."""
    coo = x.tocoo()
    out = sp.csr_matrix((coo.data, (coo.row, coo.col & ((1 << bits) - 1))), shape=(x.shape[0], 1 << bits))
    out.sum_duplicates()
    return out


def top_right_singular(x: sp.csr_matrix, k: int, seed: int = 0, n_iter: int = 4, oversample: int = 16) -> np.ndarray:
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
