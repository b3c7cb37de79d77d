"""The all-pairs adaptation table's own arithmetic: its batched bootstrap APGR and its many-target
TF-IDF ridge agree with the benchmark's one-pair functions, and its pairs are the ones it says."""

from __future__ import annotations

import numpy as np

from benchmarks.routing_quality.all_pairs import file_pairs, resampled_apgr
from benchmarks.routing_quality.baselines import fit_tfidf_ridge, tfidf_ridge_many
from gateway.router.training.data import RoutingData
from gateway.router.training.metrics import apgr, pair_curve


def _apgr(score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> float:
    zero = np.zeros(len(score))
    return apgr(pair_curve(score, weak, strong, zero, zero))


def test_resampled_apgr_is_the_metrics_apgr_of_each_resample() -> None:
    rng = np.random.default_rng(1)
    n = 40
    weak, strong = rng.integers(0, 2, n).astype(float), rng.random(n)
    score = np.round(rng.random(n), 1)  # ties, broken by input order as the metric does
    ok = rng.random(n) > 0.2
    idx = np.vstack([np.arange(n), rng.integers(0, n, (25, n))])  # the first: the prompts as they are
    got = resampled_apgr(score, strong - weak, ok, idx)
    for b in range(len(idx)):
        rows = idx[b][ok[idx[b]]]
        assert abs(got[b] - _apgr(score[rows], weak[rows], strong[rows])) < 1e-9


def test_resampled_apgr_is_zero_without_a_gap() -> None:
    gain = np.zeros(5)
    assert resampled_apgr(np.arange(5.0), gain, np.ones(5, bool), np.arange(5)[None]).tolist() == [0.0]


def test_many_target_ridge_predicts_as_the_one_target_ridge() -> None:
    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.choice(words, 8)) for _ in range(60)]
    new = [" ".join(rng.choice(words, 8)) for _ in range(10)]
    ys = rng.random((60, 3))
    many = tfidf_ridge_many(texts, ys, new)
    for k in range(3):
        one = fit_tfidf_ridge(texts, ys[:, k]).predict(new)
        assert np.allclose(many[:, k], one, atol=1e-4)


def test_many_target_ridge_fits_each_column_on_its_labelled_rows() -> None:
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(["a", "b", "c", "d", "e", "f", "g"], 5)) for _ in range(40)]
    ys = rng.random((40, 3))
    ys[:10, 1] = np.nan
    ys[5:12, 2] = np.nan
    many = tfidf_ridge_many(texts, ys, texts)
    for k in range(3):
        ok = ~np.isnan(ys[:, k])
        one = fit_tfidf_ridge([t for t, o in zip(texts, ok, strict=True) if o], ys[ok, k]).predict(texts)
        assert np.allclose(many[:, k], one, atol=1e-4)


def _data(score: list[list[float]], split: list[str]) -> RoutingData:
    s = np.array(score)
    n, m = s.shape
    return RoutingData(ids=[str(i) for i in range(n)], prompts=["p"] * n, split=np.array(split),
                       prompt_tokens=np.full(n, np.nan), models=[f"m{j}" for j in range(m)], score=s,
                       cost=np.full((n, m), np.nan), out_tokens=np.full((n, m), np.nan),
                       domain=np.array(["f"] * n))


def test_file_pairs_orders_by_train_mean_and_drops_ties() -> None:
    nan = float("nan")
    # train means: m0 0.5, m1 1, m2 0, m3 none, m4 0.5 (ties m0); validation sums: m0 1, m1 2, m2 1, m4 2
    data = _data([[0, 1, 0, nan, 1], [1, 1, 0, nan, 0], [0, 1, 0, 1, 1], [1, 1, 1, 1, 1]],
                 ["train", "train", "validation", "validation"])
    val = data.subset(data.split == "validation")
    assert file_pairs(data, data.split == "train", val) == [(0, 1), (2, 1), (2, 4)]
