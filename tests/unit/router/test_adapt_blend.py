"""New-domain heads of an adapted router: the blend of base and fresh inputs is chosen by cross-validation."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.router.training.blend import Inputs, judged_pairs, pair_score, select_heads
from gateway.router.training.metrics import apgr, batched_apgr, pair_curve


def _inputs(rng: np.random.Generator, n: int, signal: str) -> Inputs:
    """Two models; the strong one succeeds where ``signal`` (a base column, a fresh column or
    the length column, the base latent's last) is high, the weak one at random."""
    phi_base, phi_new = rng.normal(size=(n, 4)), rng.normal(size=(n, 3))
    driver = {"base": phi_base[:, 0], "fresh": phi_new[:, 0], "length": phi_base[:, -1]}[signal]
    strong = (rng.random(n) < 1 / (1 + np.exp(-2.5 * driver))).astype(float)
    weak = (rng.random(n) < 0.3).astype(float)
    return Inputs(phi_base, phi_new, rng.normal(size=(n, 2)) * 0.1, np.column_stack([weak, strong]))


def _holdout_apgr(heads: object, test: Inputs) -> float:
    phi = np.column_stack([test.phi_base, test.phi_new])
    logits = phi @ heads.coef.T + test.knn[:, heads.models] * heads.knn_coef + heads.icpt  # type: ignore[attr-defined]
    return pair_score(1 / (1 + np.exp(-logits)), test.y, judged_pairs(test.y))


@pytest.mark.parametrize(("signal", "expected"), [("fresh", "blend 1"), ("base", "blend 0"), ("length", "length")])
def test_heads_follow_the_inputs_that_carry_the_signal(signal: str, expected: str) -> None:
    rng = np.random.default_rng(7)
    train, test = _inputs(rng, 1500, signal), _inputs(rng, 1500, signal)
    heads = select_heads(train, train)
    assert heads.cv_score[heads.choice] == max(heads.cv_score.values())
    # The chosen head ranks unseen prompts by the strong model's gain about as well as the part
    # that truly carries the signal would (random ranking is 0.5).
    assert _holdout_apgr(heads, test) > 0.6
    assert heads.cv_score[heads.choice] >= heads.cv_score[expected] - 0.01
    assert heads.cv_score[expected] > heads.cv_score["blend 0" if signal != "base" else "blend 1"]


def test_pairs_are_judged_weak_to_strong_and_only_when_their_levels_differ() -> None:
    y = np.array([[0, 1, 0], [0, 1, 0], [1, 1, 0]] * 10, dtype=float)
    pairs = judged_pairs(y)
    assert (0, 1) in [(w, s) for w, s, _ in pairs]  # model 1 is stronger than model 0
    assert all(gap >= 0.05 for _, _, gap in pairs)
    y[:, 2] = y[:, 0]  # two models at the same level are never a pair
    assert (0, 2) not in [(w, s) for w, s, _ in judged_pairs(y)] and (2, 0) not in [
        (w, s) for w, s, _ in judged_pairs(y)]


def _one_pair_at_a_time(p: np.ndarray, y: np.ndarray, pairs: list[tuple[int, int, float]]) -> float:
    total = weight = 0.0
    for weak, strong, gap in pairs:
        ok = ~np.isnan(y[:, weak]) & ~np.isnan(y[:, strong])
        if ok.any():
            zero = np.zeros(int(ok.sum()))
            total += gap * apgr(pair_curve(p[ok, strong] - p[ok, weak], y[ok, weak], y[ok, strong], zero, zero))
            weight += gap
    return total / weight if weight else 0.0


def test_batched_pair_scores_are_the_metrics_apgr_of_each_pair() -> None:
    rng = np.random.default_rng(11)
    for trial in range(200):
        n, m = int(rng.integers(1, 50)), int(rng.integers(2, 8))
        y = rng.integers(0, 2, (n, m)).astype(float)  # whole outcomes: a gap is never a rounding error
        if trial % 2:
            y[rng.random((n, m)) < 0.15] = np.nan  # unlabelled rows: those pairs are scored alone
        p = np.round(rng.random((n, m)), 1)  # ties, broken by row order as the metric does
        pairs = [(a, b, float(rng.random())) for a in range(m) for b in range(m) if a != b]
        assert pair_score(p, y, pairs) == pytest.approx(_one_pair_at_a_time(p, y, pairs), abs=1e-12)


def test_a_pair_whose_gains_cancel_scores_zero_not_a_rounding_error() -> None:
    gain = np.array([[0.1, 0.2, -0.3]])  # sums to 5.6e-17, not 0
    assert batched_apgr(np.array([[3.0, 2.0, 1.0]]), gain, np.ones((1, 3), bool)).tolist() == [0.0]
    assert batched_apgr(np.zeros((2, 0)), np.zeros((2, 0)), np.zeros((2, 0), bool)).tolist() == [0.0, 0.0]


def _graded(rng: np.random.Generator, n: int, fresh_weight: float) -> Inputs:
    """Four models of rising ability answering by a 1PL on the base's difficulty delta =
    phi_base[:, 0], plus ``fresh_weight`` x a fresh column for the strongest one."""
    phi_base, phi_new = rng.normal(size=(n, 4)), rng.normal(size=(n, 6))
    delta = phi_base[:, 0]
    y = np.column_stack([
        (rng.random(n) < 1 / (1 + np.exp(-(a - 1.5 * delta + (fresh_weight * phi_new[:, 0] if a > 1 else 0)))))
        for a in (-1.5, -0.5, 0.5, 1.5)]).astype(float)
    gen = np.zeros(4)
    gen[0] = 1.0
    return Inputs(phi_base, phi_new, rng.normal(size=(n, 4)) * 0.1, y, gen, 0.0)


def test_few_labels_keep_the_prior_and_many_labels_correct_it() -> None:
    rng = np.random.default_rng(3)
    small = _graded(rng, 200, 0.0)  # the base's difficulty is all there is; fresh columns are noise
    heads = select_heads(small, small)
    assert heads.choice.startswith("prior")
    # The prior head reproduces the base's difficulty: it ranks by delta with a slope per model.
    base_cols = heads.coef[:, :4]
    assert np.all(np.abs(base_cols[:, 1:]) < 0.5 * np.abs(base_cols[:, :1]))
    large = _graded(rng, 4000, 3.0)  # the strongest model depends on something only the new labels show
    heads = select_heads(large, large)
    assert heads.choice != "prior"
    test = _graded(rng, 4000, 3.0)
    assert _holdout_apgr(heads, test) > heads.cv_score["prior"]


def test_the_prior_is_preferred_only_within_one_standard_error() -> None:
    from gateway.router.training.blend import one_se_choice

    noisy = {"prior": [0.55, 0.60, 0.55, 0.50, 0.56], "stack": [0.58, 0.62, 0.50, 0.55, 0.60]}
    assert one_se_choice(noisy) == "prior"
    clear = {"prior": [0.50, 0.51, 0.50, 0.49, 0.50], "stack": [0.60, 0.61, 0.60, 0.59, 0.60]}
    assert one_se_choice(clear) == "stack"
