"""Neighbour blend: outcome storage, leave-one-out, and artifacts without neighbours."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from gateway.router import Router, load_router
from gateway.router.featurize import HashSpec, weight_and_norm
from gateway.router.model import DEFAULT_ARTIFACT
from gateway.router.neighbours import MISSING, Neighbours, quantise_outcomes, unit


def _toy() -> Neighbours:
    emb = np.eye(3, 2, dtype=np.float32)
    emb[2] = [0.6, 0.8]
    y = np.array([[1.0, 0.0], [0.0, np.nan], [1.0, 1.0]])
    return Neighbours.from_arrays(2, 2, 1.0, 1.0, np.eye(4, 2, dtype=np.float32), emb, quantise_outcomes(y))


def test_outcomes_round_trip_through_uint8_with_missing() -> None:
    q = quantise_outcomes(np.array([[1.0, 0.0, np.nan, 0.5]]))
    assert q.dtype == np.uint8 and q[0, 2] == MISSING
    nb = Neighbours.from_arrays(1, 1, 1.0, 1.0, np.zeros((2, 1)), np.ones((1, 1)), q)
    assert nb.seen.tolist() == [[1, 1, 0, 1]]
    assert np.allclose(nb.hit[0], [1.0, 0.0, 0.0, 127 / 254])


def test_leave_one_out_never_sees_the_row_itself() -> None:
    nb = _toy()
    own = nb.logits(nb.emb[:1])[0]
    loo = nb.logits(nb.emb[:1], exclude=np.array([0]))[0]
    assert own[0] > loo[0]  # row 0 answered model 0 correctly; without it the evidence weakens
    assert nb.logits(nb.emb[0]).shape == (2,)


def test_similar_prompts_move_the_logit_towards_their_outcomes() -> None:
    nb = _toy()
    near_fail = nb.logits(np.array([0.0, 1.0], dtype=np.float32))  # closest to row 1 (model 0 failed)
    near_pass = nb.logits(np.array([1.0, 0.0], dtype=np.float32))  # closest to row 0 (model 0 passed)
    assert near_pass[0] > near_fail[0]


def test_shipped_artifact_uses_neighbours_and_stays_small(router: Router) -> None:
    a = router.assess("What is the derivative of x^3 sin(x)?")
    assert len(a.knn) == len(router.known_profiles())
    size = sum(p.stat().st_size for p in DEFAULT_ARTIFACT.iterdir())
    assert size < 5 * 1024 * 1024


def test_artifact_without_neighbours_still_loads(tmp_path: Path) -> None:
    """Older artifacts (no knn arrays) load and score from the linear heads alone."""
    out = tmp_path / "old"
    out.mkdir()
    with np.load(DEFAULT_ARTIFACT / "router.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("knn_")}
    np.savez_compressed(out / "router.npz", **arrays)
    meta = json.loads((DEFAULT_ARTIFACT / "router.json").read_text())
    meta.pop("neighbours", None)
    (out / "router.json").write_text(json.dumps(meta))
    r = load_router(out)
    a = r.assess("Explain how a hash map handles collisions.")
    assert a.knn == ()
    p = r.p_good(a, profile=r.known_profiles()[0])
    assert 0.0 < p < 1.0
    shutil.rmtree(out)


def test_norms_are_numpy_sqrt_in_the_vectors_own_precision() -> None:
    """unit() and weight_and_norm take a double sqrt rounded back to the vector's dtype in place of a
    ufunc call on a scalar; the features must stay bit-identical to np.sqrt's."""
    rng = np.random.default_rng(3)
    for size in (1, 3, 64, 1000):
        for scale in (1e-20, 1e-3, 1.0, 1e15):
            for dtype in (np.float32, np.float64):
                e = (rng.standard_normal(size) * scale).astype(dtype)
                want = e / float(np.sqrt(np.dot(e, e)))
                got = unit(e)
                assert got.dtype == want.dtype and np.array_equal(got, want)
            ids = np.arange(size, dtype=np.int64)
            vals = (rng.random(size) * scale).astype(np.float32) + np.float32(1e-30)
            idf = rng.random(size).astype(np.float32)
            n_word = size // 2
            want_v = vals * idf
            for blk in (want_v[:n_word], want_v[n_word:]):
                blk *= np.float32(1.0 / (float(np.sqrt(blk @ blk)) or 1.0))
            assert np.array_equal(weight_and_norm(ids, vals, n_word, idf, HashSpec()), want_v)
