"""Item-response fit of recorded outcomes (training only, numpy).

    P(good | model m, item i) = sigmoid(theta_m - b_i + alpha_m . u_i)

``b_i`` is a denoised per-item difficulty that pools all models' outcomes (one model's
0/1 is very noisy; 28 models' are not), and ``u_i`` a few latent "what kind of hard"
dimensions (RouteLLM-style matrix factorisation) that let heads disagree across models.
The text model then regresses (b, u) from the prompt. Fitted by full-batch Adam with
L2 penalties; missing outcomes (NaN) are masked out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm


@dataclass(frozen=True)
class IRTFit:
    theta: np.ndarray  # (m,) abilities
    b: np.ndarray  # (n,) item difficulties
    alpha: np.ndarray  # (m, k) model loadings
    u: np.ndarray  # (n, k) item latents


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _grads(p: dict[str, np.ndarray], y: np.ndarray, w: np.ndarray, reg: float) -> dict[str, np.ndarray]:
    logit = p["theta"][None, :] - p["b"][:, None] + p["u"] @ p["alpha"].T
    r = w * (_sigmoid(logit) - y)  # dLoss/dlogit, masked
    return {
        "theta": r.sum(0),
        "b": -r.sum(1) + reg * p["b"],
        "alpha": r.T @ p["u"] + reg * p["alpha"],
        "u": r @ p["alpha"] + reg * p["u"],
    }


def fit_irt(
    y: np.ndarray, k: int = 4, reg: float = 0.05, steps: int = 1500, lr: float = 0.05,
    seed: int = 0, progress: bool = True,
) -> IRTFit:
    """Fit on an (n items, m models) 0/1 matrix with NaN for missing."""
    rng = np.random.default_rng(seed)
    w = (~np.isnan(y)).astype(np.float64)
    y0 = np.nan_to_num(y)
    n, m = y.shape
    p = {
        "theta": np.zeros(m), "b": np.zeros(n),
        "alpha": 0.1 * rng.standard_normal((m, k)), "u": 0.1 * rng.standard_normal((n, k)),
    }
    mom = {k_: np.zeros_like(v) for k_, v in p.items()}
    var = {k_: np.zeros_like(v) for k_, v in p.items()}
    for t in tqdm(range(1, steps + 1), desc="irt fit", disable=not progress, leave=False):
        g = _grads(p, y0, w, reg)
        for key in p:  # Adam, with per-item scale so rows with fewer results still move
            mom[key] = 0.9 * mom[key] + 0.1 * g[key]
            var[key] = 0.999 * var[key] + 0.001 * g[key] ** 2
            step = (mom[key] / (1 - 0.9**t)) / (np.sqrt(var[key] / (1 - 0.999**t)) + 1e-8)
            p[key] = p[key] - lr * step
    # Centre difficulties so theta carries the overall level; the logits are unchanged.
    shift = p["b"].mean()
    return IRTFit(theta=p["theta"] - shift, b=p["b"] - shift, alpha=p["alpha"], u=p["u"])


def irt_logits(fit: IRTFit) -> np.ndarray:
    return fit.theta[None, :] - fit.b[:, None] + fit.u @ fit.alpha.T
