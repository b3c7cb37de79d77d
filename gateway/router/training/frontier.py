"""Utility choice among candidate models: argmax_m q_m - lam * c_m (pure numpy).

The batch (numpy, many prompts at once) form of the rule `gateway.policy.decide` applies per
request, `value_usd·q − c`, with lam = 1 / value_usd; the pool-frontier benchmark sweeps ``lam``
from 0 (quality at any price) upwards to trace the quality-cost frontier.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from numpy.typing import NDArray

from gateway.router.arrays import F64, Bools, Floats


def choose_by_utility(
    q: Floats, cost: Floats, lam: float, allowed: Bools | None = None
) -> NDArray[np.intp] | np.intp:
    """Index of the best-utility model per prompt.

    q, cost: (n_models,) for one prompt or (n_prompts, n_models). ``allowed`` (same shape,
    bool) masks out candidates, e.g. models without a result or outside a policy. Ties go
    to the lower index. Returns an integer scalar for one prompt, else (n_prompts,).
    """
    util = np.asarray(q, dtype=np.float64) - lam * np.asarray(cost, dtype=np.float64)
    if allowed is not None:
        util = np.where(allowed, util, -np.inf)
    return cast("NDArray[np.intp] | np.intp", np.argmax(util, axis=-1))  # the stubs cannot tell which


def predicted_cost(
    prompt_tokens: F64, out_tokens: F64, in_price: F64, out_price: F64
) -> F64:
    """(n_prompts, n_models) USD: prompt tokens x input price + expected output x output
    price; prices in USD per million tokens."""
    return (prompt_tokens[:, None] * in_price[None, :] + out_tokens[None, :] * out_price[None, :]) / 1e6


def lambda_grid(cost: F64, n: int = 60) -> F64:
    """0 plus log-spaced lambdas such that lam x (typical cost) spans 1e-3..1e3 quality
    units: from 'always the best' to 'always the cheapest'."""
    scale = float(np.nanmedian(cost[cost > 0])) if np.any(cost > 0) else 1.0
    return np.concatenate([[0.0], np.geomspace(1e-3, 1e3, n - 1) / scale])
