"""Our metrics match the gate's routing_eval.py definitions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gateway.router.training.frontier import choose_by_utility
from gateway.router.training.metrics import pair_metrics

GATE = Path("/work/shared/gates/routing_eval.py")


def _toy(n: int = 40, seed: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    qw = (rng.random(n) < 0.4).astype(float)
    qs = np.maximum(qw, (rng.random(n) < 0.6).astype(float))
    return rng.random(n), qw, qs, np.full(n, 1.0), np.full(n, 5.0)


def test_perfect_and_reversed_rankings_bracket_random() -> None:
    qw = np.array([0.0, 1.0, 0.0, 1.0])
    qs = np.array([1.0, 1.0, 1.0, 1.0])
    c = np.ones(4)
    best = pair_metrics(qs - qw, qw, qs, c, 2 * c)
    worst = pair_metrics(qw - qs, qw, qs, c, 2 * c)
    assert best.apgr > 0.5 > worst.apgr
    assert best.cpt50 == 0.25 and best.cpt80 == 0.5
    assert best.cost_share_at_95pct_quality == pytest.approx(0.75)


@pytest.mark.skipif(not GATE.exists(), reason="the shared gate script is not present")
def test_matches_routing_eval_on_a_toy_case() -> None:
    spec = importlib.util.spec_from_file_location("routing_eval", GATE)
    assert spec and spec.loader
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    score, qw, qs, cw, cs = _toy()
    rows = [{"id": str(i), "models": {"w": {"score": qw[i], "cost_usd": cw[i]},
                                      "s": {"score": qs[i], "cost_usd": cs[i]}}} for i in range(len(score))]
    theirs = gate.metrics(rows, {str(i): s for i, s in enumerate(score)}, "w", "s")
    ours = pair_metrics(score, qw, qs, cw, cs).as_dict()
    for key in ("q_weak", "q_strong", "apgr", "cpt50", "cpt80", "cost_share_at_95pct_quality", "best_quality"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-4), key


def test_utility_choice_trades_quality_for_cost() -> None:
    q = np.array([[0.5, 0.9], [0.8, 0.85]])
    cost = np.array([[1.0, 10.0], [1.0, 10.0]])
    assert choose_by_utility(q, cost, 0.0).tolist() == [1, 1]
    assert choose_by_utility(q, cost, 0.01).tolist() == [1, 0]
    assert choose_by_utility(q, cost, 1.0).tolist() == [0, 0]
    allowed = np.array([[True, False], [True, True]])
    assert choose_by_utility(q, cost, 0.0, allowed).tolist() == [0, 1]
