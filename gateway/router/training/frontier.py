"""Utility choice among candidate models: argmax_m q_m - lam * c_m (pure numpy).

The batch (numpy, many prompts at once) form of the rule `gateway.policy.decide` applies per
request, `value_usd·q − c`, with lam = 1 / value_usd; the pool-frontier benchmark sweeps ``lam``
from 0 (quality at any price) upwards to trace the quality-cost frontier.
"""

from __future__ import annotations

import numpy as np


def choose_by_utility(q: np.ndarray, cost: np.ndarray, lam: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """Index of the best-utility model per prompt.

    q, cost: (n_models,) for one prompt or (n_prompts, n_models). ``allowed`` (same shape,
    bool) masks out candidates, e.g. models without a result or outside a policy. Ties go
    to the lower index. Returns an int (0-d array) for one prompt, else (n_prompts,).
    """
    util = np.asarray(q, dtype=np.float64) - lam * np.asarray(cost, dtype=np.float64)
    if allowed is not None:
        util = np.where(allowed, util, -np.inf)
    return np.argmax(util, axis=-1)


def predicted_cost(
    prompt_tokens: np.ndarray, out_tokens: np.ndarray, in_price: np.ndarray, out_price: np.ndarray
) -> np.ndarray:
    """(n_prompts, n_models) USD: prompt tokens x input price + expected output x output
    price; prices in USD per million tokens."""
    return (prompt_tokens[:, None] * in_price[None, :] + out_tokens[None, :] * out_price[None, :]) / 1e6


def lambda_grid(cost: np.ndarray, n: int = 60) -> np.ndarray:
    """0 plus log-spaced lambdas such that lam x (typical cost) spans 1e-3..1e3 quality
    units: from 'always the best' to 'always the cheapest'."""
    scale = float(np.nanmedian(cost[cost > 0])) if np.any(cost > 0) else 1.0
    return np.concatenate([[0.0], np.geomspace(1e-3, 1e3, n - 1) / scale])
