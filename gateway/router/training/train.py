"""Train the router artifact from data in the shared schema (numpy + scipy; tqdm bars).

Training data may be several files whose model pools differ (``data.load_many``): the
pool is their union and a model is missing on the other files' rows.

Recipe (see model.py for the serving shape):
1. Latent targets from the train split's outcome matrix (``outcome_targets``): scores are
   centred per file, then a shared "harder than usual for this file" axis, the raw level,
   and the top principal components of the file-balanced centred matrix: a denoised "how
   hard, and hard for whom" (pooling many models' outcomes; one model's alone is mostly
   noise). PCs beat an IRT (b, u) target on validation (routing_representations.md).
2. Ridge from hashed n-grams + structural features to those targets, rows weighted so a
   small file is not drowned by MMLU-Pro (reduced-rank regression, RouteLLM-style matrix
   factorisation with a text encoder).
3. Neighbours (``neighbours.py``): an LSA projection of the folded hashed vectors, up to
   ``KNN_PER_DOMAIN`` train prompts of each file with their outcomes and file; each train
   prompt gets its *leave-one-out* neighbour logit knn_m per model.
4. Logistic heads per (model, file) on mostly *out-of-fold* latents (``HEAD_INSAMPLE_MIX``)
   plus that model's leave-one-out knn_m (heads must learn how much to trust a shrunk,
   noisy phi and the neighbours), and a generic 1PL head sigmoid(theta_m - delta(x)) that
   gives difficulty and serves unseen models.
5. Save, reload through ``load_router`` and print a validation report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from gateway.errors import InputError
from gateway.router.arrays import F32, F64, I64, Ints, NpzArrays, Strs
from gateway.router.featurize import HashSpec
from gateway.router.meta import ArtifactMeta, HashSpecMeta, ValidationReport
from gateway.router.model import ARTIFACT_VERSION, load_router
from gateway.router.neighbours import Neighbours, quantise_outcomes
from gateway.router.text import STRUCT_NAMES
from gateway.router.training.data import RoutingData, load_many
from gateway.router.training.design import Hashed, fit_idf, hash_prompts, to_csr, with_struct
from gateway.router.training.evaluate import report_pairs
from gateway.router.training.fit import (
    fit_generic_head,
    fit_logistic,
    fold_columns,
    oof_ridge,
    predict_ridge,
    top_right_singular,
)

# Settings chosen on the validation split (benchmarks/results/routing_representations.md).
SPEC = HashSpec(bits=17, char_weight=1.0, word_weight=1.0)
LATENT_DIMS = 9
RIDGE_LAMBDA = 3.0
STRUCT_SCALE = 0.3
# Row weights between training files: each file's total weight goes as n_d ** (1 - alpha).
DOMAIN_BALANCE = 0.5
# Neighbour blend, chosen by leave-one-out cross-validation on train
# (benchmarks/results/routing_representations.md): folded 2^13 buckets, 64-dim LSA,
# k = 200 of 9,563 similarity^4-weighted neighbours, smoothing 5 pseudo-prompts at the prior.
# The memory is then cut to a random 2,500 prompts with k scaled to keep the same ~2% share:
# on validation that scored the same (APGR 0.573 / 0.597 vs 0.567 / 0.595 on the two gate
# pairs) and it makes the per-request matrix-vector product, the router's largest cost, ~4x
# smaller (benchmarks/results/overhead.md measured the full memory costing the gateway ~30%
# of its throughput). With several files the memory keeps up to KNN_PER_DOMAIN random
# prompts of each, so that a small file's prompts are not crowded out by MMLU-Pro's
# (five files: ~3,500 prompts) and the neighbours can say which file a prompt resembles.
KNN_BITS = 13
KNN_DIMS = 64
KNN_K = 52
KNN_SMOOTH = 5.0
KNN_POWER = 4.0
KNN_PER_DOMAIN = 1_000
# A model gets its own head in a file where it has at least this many outcomes.
MIN_HEAD_ROWS = 30
HEAD_L2 = 1e-2
# Heads learn on latents HEAD_INSAMPLE_MIX of the way from the out-of-fold predictions (honest:
# how far to trust a shrunk, noisy phi) to the in-sample ones. Measured on validation (pair APGR
# through P differences; MMLU-Pro log-loss over its 28 models): out-of-fold alone ranked
# TheoremQA's pair at 0.49 and in-sample alone lost calibration (log-loss 0.583 -> 0.615; the
# MMLU-Pro pool frontier fell from 97.2% to 91.8% of gemini-pro's quality at half its cost);
# 0.3 ranked every file's pair above both of today's figures at log-loss 0.589.
HEAD_INSAMPLE_MIX = 0.3
# What the router ranks a pair of models it never saw by (its `difficulty`): half the 1PL difficulty,
# half the predicted spread (how much more the stronger half of a file's models scores on the prompt
# than the weaker half), each standardised on the training rows. Chosen by leave-one-domain-out
# cross-validation over every model pair of each held-out file's train split
# (`benchmarks.routing_quality.lodo_targets`): 1PL difficulty alone 0.515 (below random on four of the
# five files), spread alone 0.527, this half-and-half 0.534 and at or above difficulty on every file.
DIFFICULTY_SPREAD_WEIGHT = 0.5


def domain_weights(domain: Strs, alpha: float = DOMAIN_BALANCE) -> F64:
    """Per-row weights (mean 1) so that a small file is not drowned by a large one:
    each domain's total weight goes as n_d ** (1 - alpha) (alpha = 0: rows count equally,
    1: every domain counts the same)."""
    _, inverse, counts = np.unique(domain, return_inverse=True, return_counts=True)
    w = (counts.mean() / counts[inverse]) ** alpha
    return cast(F64, w / w.mean())


def outcome_targets(y: F64, domain: Strs, k: int) -> F64:
    """(n, k) latent targets from an outcome matrix whose pool differs by domain.

    Outcomes are only comparable within a file (different models, graders, score scales), so
    each model's scores are centred per domain and a missing outcome counts as that
    domain's mean (0 after centring). Column 0 is the shared axis every domain has: minus
    the prompt's mean centred score over the models that saw it, standardised within its
    domain ("harder than usual *for this kind of traffic*"). Column 1 is the raw mean score
    (uncentred), so that heads of a model seen in several files can tell their levels
    apart (a 0.9 chat grade and a 0.4 maths accuracy). The rest are the top principal
    components of the centred matrix with domains balanced (rows weighted by
    1/sqrt(n_d)), projected back unweighted.
    """
    centred = np.zeros_like(y)
    shared = np.zeros(y.shape[0])
    level = np.zeros(y.shape[0])
    row_w = np.zeros(y.shape[0])
    for d in np.unique(domain):
        rows = domain == d
        yd = y[rows]
        seen = ~np.isnan(yd)
        has = seen.any(0)
        mu = np.zeros(y.shape[1])
        mu[has] = np.nanmean(yd[:, has], axis=0)
        c = np.where(seen, yd - mu, 0.0)
        centred[rows] = c
        g = -c.sum(1) / np.maximum(seen.sum(1), 1)
        shared[rows] = (g - g.mean()) / (g.std() + 1e-9)
        level[rows] = np.where(seen, yd, 0.0).sum(1) / np.maximum(seen.sum(1), 1)
        row_w[rows] = 1.0 / np.sqrt(rows.sum())
    _, _, vt = np.linalg.svd(centred * row_w[:, None], full_matrices=False)
    pcs = centred @ vt[: max(k - 2, 0)].T
    return np.column_stack([shared, level, pcs])[:, :k]


def spread_target(y: F64, domain: Strs, frac: float = 0.5) -> F64:
    """Per prompt: the mean score of its file's strongest ``frac`` of models minus its weakest ``frac``
    (models ranked by their mean over the file), standardised within the file: how much a stronger
    model helps here. A prompt none of one side's models saw counts as the file's mean (0)."""
    out = np.zeros(y.shape[0])
    for d in np.unique(domain):
        rows = domain == d
        yd = y[rows]
        cols = np.nonzero(~np.isnan(yd).all(0))[0]
        order = cols[np.argsort(column_means(yd[:, cols]))]
        k = max(1, round(len(order) * frac))
        s = _row_means(yd[:, order[-k:]]) - _row_means(yd[:, order[:k]])
        s = np.nan_to_num(s - np.nanmean(s)) if np.isfinite(s).any() else np.zeros(rows.sum())
        out[rows] = s / (s.std() + 1e-9)
    return out


def _row_means(a: F64) -> F64:
    return column_means(a.T)


def rank_head(phi: F64, y: F64, domain: Strs, weight: F64, gen_coef: F64, gen_icpt: float,
              w: float = DIFFICULTY_SPREAD_WEIGHT) -> tuple[F64, float]:
    """(coef, icpt) of the difficulty logit the router ranks unseen pairs by, on the same scale as the 1PL
    difficulty delta: (1 - w) delta + w (the spread read linearly off phi, mapped to delta's mean and
    spread on these rows). Linear in phi, so serving it costs one more dot product."""
    sw = np.sqrt(weight)
    a = np.column_stack([phi, np.ones(len(phi))])
    beta = np.linalg.lstsq(a * sw[:, None], spread_target(y, domain) * sw, rcond=None)[0]
    delta, spread = phi @ gen_coef + gen_icpt, a @ beta

    def stats(v: F64) -> tuple[float, float]:
        mu = float(np.average(v, weights=weight))
        return mu, float(np.sqrt(np.average((v - mu) ** 2, weights=weight))) + 1e-9

    (mu_d, sd_d), (mu_s, sd_s) = stats(delta), stats(spread)
    coef = (1 - w) * gen_coef + w * (sd_d / sd_s) * beta[:-1]
    return coef, (1 - w) * gen_icpt + w * (mu_d + sd_d * (float(beta[-1]) - mu_s) / sd_s)


def fit_heads(
    phi: F64, y: F64, knn: F64, dom: Ints
) -> NpzArrays:
    """Per-model logistic heads on [phi, knn_m], one per (model, training file) with at least
    ``MIN_HEAD_ROWS`` outcomes: a model's scores in two files are on different scales and
    depend on the prompt differently (a chat grade, a maths accuracy), and one head fitted
    across both was measured to rank worse in each. ``dom``: per-row domain index.
    Returns head_coef (h, t), head_icpt, knn_coef, head_model, head_domain."""
    coefs, icpts, kcoefs, models, domains = [], [], [], [], []
    for j in range(y.shape[1]):
        ok = ~np.isnan(y[:, j])
        if not ok.any():  # a model these rows never saw gets no head here
            continue
        counts = np.bincount(dom[ok])
        groups = [int(d) for d in np.nonzero(counts >= MIN_HEAD_ROWS)[0]]
        if not groups:  # too few anywhere: one head over all its rows, filed under its main file
            groups = [int(np.argmax(counts))]
            masks = [ok]
        else:
            masks = [ok & (dom == d) for d in groups]
        f = np.column_stack([phi, knn[:, j]])
        for d, rows in zip(groups, masks, strict=True):
            c, c0 = fit_logistic(f[rows], y[rows, j], l2=HEAD_L2)
            coefs.append(c[:-1])
            kcoefs.append(c[-1])
            icpts.append(c0)
            models.append(j)
            domains.append(int(d))
    return {"head_coef": np.asarray(coefs), "head_icpt": np.asarray(icpts), "knn_coef": np.asarray(kcoefs),
            "head_model": np.asarray(models, dtype=np.int16), "head_domain": np.asarray(domains, dtype=np.int16)}


def memory_rows(dom: Ints | Strs, seed: int) -> I64:
    """The training prompts the neighbour memory keeps: at most KNN_PER_DOMAIN per file."""
    rng = np.random.default_rng(seed)
    keep = []
    for d in np.unique(dom):
        rows = np.nonzero(dom == d)[0]
        keep.append(rows if rows.size <= KNN_PER_DOMAIN else rng.choice(rows, KNN_PER_DOMAIN, replace=False))
    return np.sort(np.concatenate(keep))


def _fit_neighbours(
    xh: sp.csr_matrix, y: F64, dom: Ints, n_domains: int, seed: int, progress: bool
) -> tuple[NpzArrays, F64]:
    """Neighbour arrays for the artifact + leave-one-out knn logits for every train row."""
    n = xh.shape[0]
    keep = memory_rows(dom, seed)
    xf = fold_columns(xh, KNN_BITS)
    proj = top_right_singular(xf[keep], KNN_DIMS, seed=seed).astype(np.float16)
    emb = np.asarray(xf @ proj.astype(np.float64))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    emb16 = emb.astype(np.float16)
    outcomes = quantise_outcomes(y[keep])
    nb = Neighbours.from_arrays(KNN_BITS, KNN_K, KNN_SMOOTH, KNN_POWER, proj, emb16[keep], outcomes,
                                dom[keep], n_domains)
    slot = np.full(n, -1)
    slot[keep] = np.arange(keep.size)
    loo: F64 = np.zeros(y.shape)
    for s in tqdm(range(0, n, 1000), desc="neighbours", disable=not progress, leave=False):
        loo[s : s + 1000] = nb.logits(emb[s : s + 1000].astype(np.float32), exclude=slot[s : s + 1000])
    arrays: NpzArrays = {"knn_proj": proj, "knn_emb": emb16[keep], "knn_outcomes": outcomes,
              "knn_domain": dom[keep].astype(np.uint8)}
    return arrays, loo


@dataclass(frozen=True)
class Prepared:
    """Routing data with every prompt hashed once, so several fits (benchmarks: in-domain,
    leave-one-domain-out, adaptation) share the slow featurisation."""

    data: RoutingData
    hashed: Hashed


def prepare(data: RoutingData, progress: bool = True) -> Prepared:
    return Prepared(data, hash_prompts(data.prompts, SPEC, progress))


def design(
    prep: Prepared, idf: F32, s_mean: F64, s_std: F64
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(hashed n-grams only, n-grams + scaled structural columns) for every row."""
    xh = to_csr(prep.hashed, idf, SPEC)
    return xh, with_struct(xh, (prep.hashed.struct - s_mean) / s_std, STRUCT_SCALE)


def fit_arrays(prep: Prepared, train_rows: Ints, seed: int = 0, progress: bool = True,
               memory_seed: int | None = None) -> NpzArrays:
    """Every array of the artifact, fitted on ``train_rows`` of ``prep`` (all domains in it). ``seed``
    draws the out-of-fold ridge's folds and, unless ``memory_seed`` is given, the neighbour memory's
    prompts and projection (`benchmarks.routing_quality.seeds` measures what each moves)."""
    hashed = prep.hashed
    idf = fit_idf(hashed, train_rows, SPEC)
    s_mean = hashed.struct[train_rows].mean(0)
    s_std = hashed.struct[train_rows].std(0) + 1e-6
    xh, x = design(prep, idf, s_mean, s_std)
    y = prep.data.score[train_rows]
    dom = prep.data.domain[train_rows]
    names = sorted({str(d) for d in dom})
    dom_idx = np.array([names.index(str(d)) for d in dom])
    weight = domain_weights(dom)
    target = outcome_targets(y, dom, LATENT_DIMS)
    oof, ridge = oof_ridge(x[train_rows], target, RIDGE_LAMBDA, seed=seed, progress=progress, weight=weight)
    fitted = (1 - HEAD_INSAMPLE_MIX) * oof + HEAD_INSAMPLE_MIX * predict_ridge(ridge, x[train_rows])
    # Unit-variance latents keep head penalties comparable; folded into W and bias below.
    scale = oof.std(0) + 1e-9
    # The prompt's standardised log length rides along as one more latent column (zeros in W, a
    # unit weight on log_chars in w_struct): every head and the difficulty see length directly,
    # so a prompt far shorter than anything a model's file holds ("hi") extrapolates as easy for
    # it instead of as that file's average question.
    length = (hashed.struct[train_rows, :1] - s_mean[:1]) / s_std[:1]
    phi = np.column_stack([fitted / scale, length])
    unit_length = np.zeros((len(STRUCT_NAMES), 1))
    unit_length[STRUCT_NAMES.index("log_chars"), 0] = 1.0
    knn_arrays, knn_loo = _fit_neighbours(xh[train_rows], y, dom_idx, len(names),
                                          seed if memory_seed is None else memory_seed, progress)
    heads = fit_heads(phi, y, knn_loo, dom_idx)
    gen_coef, gen_icpt, theta = fit_generic_head(phi, y, row_weight=weight)
    rank_coef, rank_icpt = rank_head(phi, y, dom, weight, gen_coef, gen_icpt)
    return {
        "idf": idf.astype(np.float16),
        "w": np.hstack([ridge.coef[: SPEC.dim] / scale, np.zeros((SPEC.dim, 1))]).astype(np.float16),
        "w_struct": np.hstack([ridge.coef[SPEC.dim :] * STRUCT_SCALE / scale, unit_length]).astype(np.float32),
        "s_mean": s_mean.astype(np.float32), "s_std": s_std.astype(np.float32),
        "bias": np.append(ridge.intercept / scale, 0.0).astype(np.float32),
        **heads, **knn_arrays,
        "gen_coef": gen_coef, "gen_icpt": np.asarray(gen_icpt), "theta": theta,
        "rank_coef": rank_coef, "rank_icpt": np.asarray(rank_icpt),
    }


def column_means(a: F64) -> F64:
    """nanmean per column, NaN for a column with no values (without numpy's warning)."""
    seen = ~np.isnan(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cast(F64, np.where(seen, a, 0.0).sum(0) / seen.sum(0))


def make_meta(data: RoutingData, train_rows: Ints, arrays: NpzArrays) -> ArtifactMeta:
    """router.json for `arrays` fitted on `train_rows` of `data`. The latent's width is read off the
    arrays: a file of few models has fewer principal components than LATENT_DIMS asks for."""
    out_tok = column_means(data.out_tokens[train_rows])
    return {
        "version": ARTIFACT_VERSION,
        "hash_spec": cast(HashSpecMeta, asdict(SPEC)),
        "struct_names": list(STRUCT_NAMES),
        "latent_dims": int(arrays["w"].shape[1]),
        "ridge_lambda": RIDGE_LAMBDA,
        "neighbours": {"bits": KNN_BITS, "k": KNN_K, "smooth": KNN_SMOOTH, "power": KNN_POWER},
        "models": data.models,
        "domains": sorted({str(d) for d in data.domain[train_rows]}),
        "expected_output_tokens": {
            m: round(float(v), 2) for m, v in zip(data.models, out_tok, strict=True) if np.isfinite(v)
        },
        "n_train": int(train_rows.size),
    }


def save_artifact(arrays: NpzArrays, meta: ArtifactMeta, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "router.npz", allow_pickle=False, **arrays)
    (out / "router.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return out


def train(
    data_path: str | Path | Sequence[str | Path], out_dir: str | Path, *, base: str | Path | None = None,
    seed: int = 0, progress: bool = True,
) -> ValidationReport:
    """Fit on the train split of one or more files (or, with ``base``, adapt that router to
    them: ``adapt.py``), save ``router.npz``/``router.json`` in out_dir, and return (and
    print) the validation report."""
    paths = [data_path] if isinstance(data_path, str | Path) else list(data_path)
    data = load_many(paths)
    train_rows = np.nonzero(data.split == "train")[0]
    if not len(train_rows):  # an empty file (or only validation rows) broke deep in the feature matrix
        raise InputError(f"{', '.join(map(str, paths))}: no rows to train on (every row is in the validation "
                         "split, or there are none)")
    if np.isnan(data.score[train_rows]).all():  # a singular matrix deep in the fit, before
        raise InputError(f"{', '.join(map(str, paths))}: no scores to train on (no train row has a model with a "
                         "'score')")
    if base is not None:
        from gateway.router.training.adapt import adapt

        arrays, meta = adapt(base, prepare(data, progress), train_rows, seed=seed, progress=progress)
    else:
        arrays = fit_arrays(prepare(data, progress), train_rows, seed, progress)
        meta = make_meta(data, train_rows, arrays)
    out = save_artifact(arrays, meta, out_dir)
    val = data.subset(data.split == "validation")
    report: ValidationReport = {"n_validation": len(val.ids), "pairs": {}}
    if val.ids:  # through the saved artifact, so the report also checks the serving path
        report["pairs"] = report_pairs(load_router(out), val, progress=progress)
    meta["validation_report"] = report
    (out / "router.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))
    return report
