"""Train the router artifact from data in the shared schema (numpy + scipy; tqdm bars).

Recipe (see model.py for the serving shape):
1. Factor the train split's outcome matrix (items x all models) into its top principal
   components: each item's scores on them are a denoised "how hard, and hard for whom"
   target (pooling 28 models' 0/1 outcomes; one model's alone is mostly noise). This
   beat an IRT (b, u) target on validation; see benchmarks/results/routing_representations.md.
2. Ridge from hashed n-grams + structural features to those scores z (reduced-rank
   regression, RouteLLM-style matrix factorisation with a text encoder).
3. Neighbours (``neighbours.py``): an LSA projection of the folded hashed vectors, the
   train prompts' unit embeddings and their outcomes; each train prompt gets its
   *leave-one-out* neighbour logit knn_m per model.
4. Per-model logistic heads on *out-of-fold* z plus that model's leave-one-out knn_m
   (heads must learn how much to trust a shrunk, noisy z and the neighbours, not the
   in-sample ones), plus a generic 1PL head sigmoid(theta_m - delta(x)) on z that gives
   difficulty and serves unseen models.
5. Save, reload through ``load_router`` and print a validation report.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from gateway.router.data import RoutingData, load_data
from gateway.router.design import fit_idf, hash_prompts, to_csr, with_struct
from gateway.router.evaluate import report_pairs
from gateway.router.featurize import HashSpec
from gateway.router.fit import fit_generic_head, fit_logistic, fold_columns, oof_ridge, top_right_singular
from gateway.router.model import ARTIFACT_VERSION, load_router
from gateway.router.neighbours import Neighbours, quantise_outcomes
from gateway.router.text import STRUCT_NAMES

# Settings chosen on the validation split (benchmarks/results/routing_representations.md).
SPEC = HashSpec(bits=17, char_weight=1.0, word_weight=1.0)
LATENT_DIMS = 6
RIDGE_LAMBDA = 3.0
STRUCT_SCALE = 0.3
# Neighbour blend, chosen by leave-one-out cross-validation on train
# (benchmarks/results/routing_representations.md): folded 2^13 buckets, 64-dim LSA,
# k = 200 of 9,563 similarity^4-weighted neighbours, smoothing 5 pseudo-prompts at the prior.
# The memory is then cut to a random 2,500 prompts with k scaled to keep the same ~2% share:
# on validation that scored the same (APGR 0.573 / 0.597 vs 0.567 / 0.595 on the two gate
# pairs) and it makes the per-request matrix-vector product, the router's largest cost, ~4x
# smaller (benchmarks/results/overhead.md measured the full memory costing the gateway ~30%
# of its throughput).
KNN_BITS = 13
KNN_DIMS = 64
KNN_K = 52
KNN_SMOOTH = 5.0
KNN_POWER = 4.0
KNN_MAX_STORED = 2_500


def outcome_factors(y: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal-component scores of the (items x models) outcome matrix, with a
    missing outcome imputed by that model's mean."""
    col_mean = np.nanmean(y, axis=0)
    filled = np.where(np.isnan(y), col_mean, y) - col_mean
    u, s, _ = np.linalg.svd(filled, full_matrices=False)
    return u[:, :k] * s[:k]


def _fit_heads(phi: np.ndarray, y: np.ndarray, knn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-model logistic heads on [phi, knn_m]; returns (coef on phi, intercept, coef on knn_m)."""
    coefs, icpts, kcoefs = [], [], []
    for j in range(y.shape[1]):
        ok = ~np.isnan(y[:, j])
        f = np.column_stack([phi, knn[:, j]])
        c, c0 = fit_logistic(f[ok], y[ok, j], l2=1e-4) if ok.any() else (np.zeros(f.shape[1]), 0.0)
        coefs.append(c[:-1])
        kcoefs.append(c[-1])
        icpts.append(c0)
    return np.asarray(coefs), np.asarray(icpts), np.asarray(kcoefs)


def _fit_neighbours(
    xh: sp.csr_matrix, y: np.ndarray, seed: int, progress: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Neighbour arrays for the artifact + leave-one-out knn logits for every train row."""
    n = xh.shape[0]
    keep = np.arange(n)
    if n > KNN_MAX_STORED:
        keep = np.sort(np.random.default_rng(seed).choice(n, KNN_MAX_STORED, replace=False))
    xf = fold_columns(xh, KNN_BITS)
    proj = top_right_singular(xf[keep], KNN_DIMS, seed=seed).astype(np.float16)
    emb = np.asarray(xf @ proj.astype(np.float64))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    emb16 = emb.astype(np.float16)
    outcomes = quantise_outcomes(y[keep])
    nb = Neighbours.from_arrays(KNN_BITS, KNN_K, KNN_SMOOTH, KNN_POWER, proj, emb16[keep], outcomes)
    slot = np.full(n, -1)
    slot[keep] = np.arange(keep.size)
    loo = np.zeros(y.shape)
    for s in tqdm(range(0, n, 1000), desc="neighbours", disable=not progress, leave=False):
        loo[s : s + 1000] = nb.logits(emb[s : s + 1000].astype(np.float32), exclude=slot[s : s + 1000])
    arrays = {"knn_proj": proj, "knn_emb": emb16[keep], "knn_outcomes": outcomes}
    return arrays, loo


def _fit_arrays(data: RoutingData, train_rows: np.ndarray, seed: int, progress: bool) -> dict[str, np.ndarray]:
    hashed = hash_prompts(data.prompts, SPEC, progress)
    idf = fit_idf(hashed, train_rows, SPEC)
    s_mean = hashed.struct[train_rows].mean(0)
    s_std = hashed.struct[train_rows].std(0) + 1e-6
    xh = to_csr(hashed, idf, SPEC)
    x = with_struct(xh, (hashed.struct - s_mean) / s_std, STRUCT_SCALE)
    y = data.score[train_rows]
    target = outcome_factors(y, LATENT_DIMS)
    oof, ridge = oof_ridge(x[train_rows], target, RIDGE_LAMBDA, seed=seed, progress=progress)
    # Unit-variance latents keep head penalties comparable; folded into W and bias below.
    scale = oof.std(0) + 1e-9
    phi = oof / scale
    knn_arrays, knn_loo = _fit_neighbours(xh[train_rows], y, seed, progress)
    head_coef, head_icpt, knn_coef = _fit_heads(phi, y, knn_loo)
    gen_coef, gen_icpt, theta = fit_generic_head(phi, y)
    return {
        "idf": idf.astype(np.float16),
        "w": (ridge.coef[: SPEC.dim] / scale).astype(np.float16),
        "w_struct": (ridge.coef[SPEC.dim :] * STRUCT_SCALE / scale).astype(np.float32),
        "s_mean": s_mean.astype(np.float32), "s_std": s_std.astype(np.float32),
        "bias": (ridge.intercept / scale).astype(np.float32),
        "head_coef": head_coef, "head_icpt": head_icpt, "knn_coef": knn_coef, **knn_arrays,
        "gen_coef": gen_coef, "gen_icpt": np.asarray(gen_icpt), "theta": theta,
    }


def _meta(data: RoutingData, train_rows: np.ndarray) -> dict[str, object]:
    out_tok = np.nanmean(np.where(np.isnan(data.out_tokens[train_rows]), np.nan, data.out_tokens[train_rows]), 0)
    return {
        "version": ARTIFACT_VERSION,
        "hash_spec": asdict(SPEC),
        "struct_names": list(STRUCT_NAMES),
        "latent_dims": LATENT_DIMS,
        "ridge_lambda": RIDGE_LAMBDA,
        "neighbours": {"bits": KNN_BITS, "k": KNN_K, "smooth": KNN_SMOOTH, "power": KNN_POWER},
        "models": data.models,
        "expected_output_tokens": {
            m: round(float(v), 2) for m, v in zip(data.models, out_tok, strict=True) if np.isfinite(v)
        },
        "n_train": int(train_rows.size),
    }


def train(data_path: str | Path, out_dir: str | Path, *, seed: int = 0, progress: bool = True) -> dict:
    """Fit on the train split, save ``router.npz``/``router.json`` in out_dir, and return
    (and print) the validation report."""
    data = load_data(data_path)
    train_rows = np.nonzero(data.split == "train")[0]
    arrays = _fit_arrays(data, train_rows, seed, progress)
    meta = _meta(data, train_rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "router.npz", allow_pickle=False, **arrays)
    (out / "router.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    val = data.subset(data.split == "validation")
    report: dict = {"n_validation": len(val.ids), "pairs": {}}
    if val.ids:  # through the saved artifact, so the report also checks the serving path
        report["pairs"] = report_pairs(load_router(out), val, progress=progress)
    meta["validation_report"] = report
    (out / "router.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))
    return report
