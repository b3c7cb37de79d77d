"""Adapt a trained router to new labelled data without forgetting what it knew (offline).

``switchyard train --data FILE --base DIR`` lands here. Retraining on a few hundred new
labels alone throws away what the base learned from tens of thousands; refitting on the
union needs the base's training data, which an artifact does not carry. Instead the base
is kept whole and the new file is added as one more domain beside it:

1. The base's latent phi_base(x) is computed for the new prompts, unchanged.
2. A new, small latent phi_new(x) (up to ``MAX_NEW_DIMS`` columns) is fitted on the new labels the
   way the base was (ridge from the same hashed features onto the new outcome matrix's
   targets, out-of-fold for the heads); the artifact's W simply grows by those columns.
3. The new train prompts join the neighbour memory (at most ``KNN_PER_DOMAIN``), tagged
   with the new domain, so that neighbours report the new models' outcomes and how much
   a prompt resembles the new file.
4. Every model with labels in the new file gets a head for the new domain: the base's
   difficulty with a per-model slope and offset (the prior), that prior plus a correction under
   a fixed L2 prior, length alone, a blend of a head on the base's inputs and one on the fresh
   ones, or the stack of all, chosen by cross-validation on the new train split with the
   one-standard-error rule towards the prior (``blend.py``);
   a model the base also knew keeps its old heads, mixed with the
   new one by the prompt's neighbour shares (``model.py``). Old heads get zeros on phi_new.
5. Difficulty (and unseen models' P): the base's 1PL plus a correction on phi_new, and
   abilities for the new data's new models, fitted with the base difficulty as offset.

So on the base's own traffic a base model's prediction moves only as far as the new
prompts show up among its neighbours.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from gateway.router.arrays import F64, Ints, Loaded, NpzArrays
from gateway.router.artifact import ArtifactError
from gateway.router.featurize import HashSpec
from gateway.router.meta import ArtifactMeta, DomainHeads
from gateway.router.model import DEFAULT_ARTIFACT
from gateway.router.neighbours import MISSING, Neighbours, quantise_outcomes
from gateway.router.serving import load_checked
from gateway.router.text import STRUCT_NAMES
from gateway.router.training.blend import Inputs, select_heads
from gateway.router.training.data import RoutingData
from gateway.router.training.fit import fit_generic_head, fold_columns, oof_ridge, predict_ridge
from gateway.router.training.train import (
    DIFFICULTY_SPREAD_WEIGHT,
    HEAD_INSAMPLE_MIX,
    RIDGE_LAMBDA,
    SPEC,
    STRUCT_SCALE,
    Prepared,
    column_means,
    design,
    domain_weights,
    memory_rows,
    outcome_targets,
    prepare,
)

# The fresh latent gets a column per new model (its PCs), up to this many: a new pair's gain
# strong - weak is a contrast between two models' outcomes, and a latent of fewer columns than
# models can miss it. Measured on TheoremQA (16 models) adapted from a base fitted on arena, CRUXEval
# and the mix, its pair's validation APGR through the fresh heads: 4 columns 0.509, 8 0.598, 16 0.667.
# Each column costs one more float16 column of W (256 kB) and of assess()'s gather.
MAX_NEW_DIMS = 16


def _load(base: str | Path) -> tuple[NpzArrays, ArtifactMeta]:
    root = DEFAULT_ARTIFACT if str(base) == "default" else Path(base)
    # Checked whole, as `router promote` checks it: a damaged base broke below in numpy or json, and one
    # whose meta and arrays disagree was adapted into a router that route, promote and serve refuse.
    try:
        load_checked(root)
    except ArtifactError as exc:
        raise ArtifactError(f"--base refused: {exc}") from exc
    meta: ArtifactMeta = json.loads((root / "router.json").read_text(encoding="utf-8"))
    with np.load(root / "router.npz") as z:
        arrays: NpzArrays = {k: z[k] for k in z.files}
    return arrays, meta


def _base_latent(arr: NpzArrays, xh: sp.csr_matrix, struct: F64) -> F64:
    s = (struct - arr["s_mean"].astype(np.float64)) / arr["s_std"].astype(np.float64)
    return np.asarray(xh @ arr["w"].astype(np.float64)) + s @ arr["w_struct"].astype(np.float64) + arr["bias"]


def _memory(arr: NpzArrays, meta: ArtifactMeta, n_models: int, emb: F64, y: F64,
            dom: Ints, seed: int) -> tuple[NpzArrays, Ints]:
    """Base memory plus (some of) the new prompts; returns the arrays and each new row's
    slot in the memory (-1 if not stored) for leave-one-out."""
    keep = memory_rows(dom, seed)
    old = arr["knn_outcomes"]
    wide = np.full((old.shape[0], n_models), MISSING, dtype=np.uint8)
    wide[:, : old.shape[1]] = old
    n_old_dom = len(meta.get("domains", [])) or 1
    old_dom = arr.get("knn_domain", np.zeros(old.shape[0], np.uint8))
    out = {
        "knn_emb": np.vstack([arr["knn_emb"], emb[keep].astype(np.float16)]),
        "knn_outcomes": np.vstack([wide, quantise_outcomes(y[keep])]),
        "knn_domain": np.concatenate([old_dom, dom[keep]]).astype(np.uint8),
    }
    slot = np.full(emb.shape[0], -1)
    slot[keep] = old.shape[0] + np.arange(keep.size)
    assert int(out["knn_domain"].max()) < 256 and n_old_dom <= int(dom.min())
    return out, slot


def adapt(
    base: str | Path, prep: Prepared, train_rows: Ints, *, seed: int = 0, progress: bool = True
) -> tuple[NpzArrays, ArtifactMeta]:
    """(arrays, meta) of the base router adapted to ``prep``'s labelled ``train_rows``."""
    arr, meta = _load(base)
    spec = HashSpec(**meta["hash_spec"])
    if spec != SPEC or list(meta.get("struct_names", [])) != list(STRUCT_NAMES) or "knn_emb" not in arr:
        raise ArtifactError(f"--base refused: {base}: made by an older version of `switchyard train`: retrain it")
    data = prep.data
    xh, x = design(prep, arr["idf"].astype(np.float32), arr["s_mean"].astype(np.float64),
                   arr["s_std"].astype(np.float64))
    xh, x = xh[train_rows], x[train_rows]
    dom = data.domain[train_rows]
    weight = domain_weights(dom)
    old_domains: list[str] = list(meta.get("domains", [])) or ["base"]
    new_names = sorted({str(d) for d in dom})
    dom_idx = np.array([len(old_domains) + new_names.index(str(d)) for d in dom])

    phi_base = _base_latent(arr, xh, prep.hashed.struct[train_rows])
    new_dims = min(MAX_NEW_DIMS, 2 + len(data.models))
    targets = outcome_targets(data.score[train_rows], dom, new_dims)
    # Out-of-fold, as in training; phi_base is already out-of-sample on these prompts.
    oof, ridge = oof_ridge(x, targets, RIDGE_LAMBDA, seed=seed, progress=progress, weight=weight)
    scale = oof.std(0) + 1e-9
    phi_new = ((1 - HEAD_INSAMPLE_MIX) * oof + HEAD_INSAMPLE_MIX * predict_ridge(ridge, x)) / scale

    old_models: list[str] = list(meta["models"])
    models = old_models + [m for m in data.models if m not in old_models]
    y = np.full((len(train_rows), len(models)), np.nan)
    for name in data.models:
        y[:, models.index(name)] = data.score[train_rows, data.col(name)]

    nb_meta = meta["neighbours"]
    proj = arr["knn_proj"].astype(np.float64)
    emb = np.asarray(fold_columns(xh, int(nb_meta["bits"])) @ proj)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    memory, slot = _memory(arr, meta, len(models), emb, y, dom_idx, seed)
    nb = Neighbours.from_arrays(int(nb_meta["bits"]), int(nb_meta["k"]), float(nb_meta["smooth"]),
                                float(nb_meta["power"]), arr["knn_proj"], memory["knn_emb"],
                                memory["knn_outcomes"], memory["knn_domain"], len(old_domains) + len(new_names))
    knn = np.asarray(nb.logits(emb.astype(np.float32), exclude=slot))

    t_base = phi_base.shape[1]
    gen = (arr["gen_coef"].astype(np.float64), float(arr["gen_icpt"]))
    new, chosen = _new_heads(phi_base, oof / scale, phi_new, knn, y, dom_idx, gen, seed, progress)
    old_coef = np.column_stack([arr["head_coef"], np.zeros((arr["head_coef"].shape[0], targets.shape[1]))])
    n_old = arr["head_icpt"].shape[0]
    head_model = arr.get("head_model", np.arange(n_old))
    head_domain = arr.get("head_domain", np.zeros(n_old))

    delta_base = phi_base @ arr["gen_coef"] + float(arr["gen_icpt"])
    y_own = np.column_stack([data.score[train_rows, data.col(m)] for m in data.models])
    gen_new, gen_icpt_new, theta_new = fit_generic_head(phi_new, y_own, row_weight=weight, offset=delta_base)
    theta = np.concatenate([arr["theta"], [theta_new[data.models.index(m)] for m in models[len(old_models):]]])

    out = dict(arr)
    out.update(memory)
    out.update({
        "w": np.hstack([arr["w"].astype(np.float32), ridge.coef[: SPEC.dim] / scale]).astype(np.float16),
        "w_struct": np.hstack([arr["w_struct"], ridge.coef[SPEC.dim :] * STRUCT_SCALE / scale]).astype(np.float32),
        "bias": np.concatenate([arr["bias"], ridge.intercept / scale]).astype(np.float32),
        "head_coef": np.vstack([old_coef, new["head_coef"].reshape(-1, t_base + targets.shape[1])]),
        "head_icpt": np.concatenate([arr["head_icpt"], new["head_icpt"]]),
        "knn_coef": np.concatenate([arr["knn_coef"], new["knn_coef"]]),
        "head_model": np.concatenate([head_model, new["head_model"]]).astype(np.int16),
        "head_domain": np.concatenate([head_domain, new["head_domain"]]).astype(np.int16),
        "gen_coef": np.concatenate([arr["gen_coef"], gen_new]),
        "gen_icpt": np.asarray(float(arr["gen_icpt"]) + gen_icpt_new),
        "theta": theta,
    })
    if "rank_coef" in arr:  # the ranking difficulty takes the new file's correction to delta, at delta's weight
        keep = 1 - DIFFICULTY_SPREAD_WEIGHT
        out["rank_coef"] = np.concatenate([arr["rank_coef"], keep * gen_new])
        out["rank_icpt"] = np.asarray(float(arr["rank_icpt"]) + keep * gen_icpt_new)
    meta_out = _adapted_meta(meta, data, train_rows, models, targets.shape[1])
    meta_out["domains"] = old_domains + new_names
    meta_out["adapted"][-1]["new_domains"] = chosen
    return out, meta_out


def _new_heads(phi_base: F64, phi_oof: F64, phi_new: F64, knn: F64, y: F64, dom_idx: Ints,
               gen: tuple[F64, float], seed: int, progress: bool) -> tuple[NpzArrays, list[DomainHeads]]:
    """Heads for each new domain's models, their inputs chosen by cross-validation (``blend.py``),
    and what was chosen (recorded in the artifact's meta)."""
    chosen: list[DomainHeads] = []
    parts: dict[str, list[Loaded]] = {k: [] for k in ("head_coef", "head_icpt", "knn_coef", "head_model",
                                                           "head_domain")}
    for d in np.unique(dom_idx):
        rows = dom_idx == d
        cv = Inputs(phi_base[rows], phi_oof[rows], knn[rows], y[rows], *gen)
        heads = select_heads(cv, Inputs(phi_base[rows], phi_new[rows], knn[rows], y[rows], *gen), seed,
                             log=(lambda s: print(s, file=sys.stderr)) if progress else None)
        chosen.append({"heads": heads.choice, "cv_pair_apgr": heads.cv_score})
        parts["head_coef"].append(heads.coef)
        parts["head_icpt"].append(heads.icpt)
        parts["knn_coef"].append(heads.knn_coef)
        parts["head_model"].append(heads.models)
        parts["head_domain"].append(np.full(heads.models.size, d, dtype=np.int16))
    return {k: np.concatenate(v) for k, v in parts.items()}, chosen


def _adapted_meta(meta: ArtifactMeta, data: RoutingData, train_rows: Ints, models: list[str],
                  new_dims: int) -> ArtifactMeta:
    out = meta.copy()
    tokens = column_means(data.out_tokens[train_rows])
    expected = dict(meta.get("expected_output_tokens", {}))
    for name, v in zip(data.models, tokens, strict=True):
        if np.isfinite(v) and name not in expected:
            expected[name] = round(float(v), 2)
    out.update({
        "models": models,
        "latent_dims": int(meta.get("latent_dims", 0)) + new_dims,
        "expected_output_tokens": expected,
        "n_train": int(meta.get("n_train", 0)) + int(train_rows.size),
        "adapted": [*meta.get("adapted", []),
                    {"n_train": int(train_rows.size), "new_models": len(models) - len(meta["models"])}],
    })
    out.pop("validation_report", None)
    return out


__all__ = ["adapt", "prepare"]
