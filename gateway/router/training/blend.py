"""New-domain heads of an adapted router: the base's prior, corrected as far as the new labels
can be trusted, or a blend of the base's view and the new labels' view, chosen by cross-validation
on the new train split.

Adapting gives each model with labels in the new file a logistic head. Which inputs that head
should trust depends on the file: a small file (a few hundred prompts) overfits a head on every
input, a large one gains from its own fresh latent. The candidates, from the most constrained:

- prior:          [delta_base]            the base's difficulty logit with a slope and an offset
                                          per model ("the base alone, calibrated to this file")
- prior tau T:    [delta_base] unpenalised + every input with a fixed L2 prior T: a correction of
                                          the prior that grows only as far as the labels carry it
                                          (the penalty does not scale with the rows, so a small
                                          file stays near the prior and a large one moves off it)
- length:         [length]                the prompt-length baseline as a head
- blend w:        (1 - w) base + w fresh, logit blends of a head on [phi_base, knn_m] (the base
                                          latent carries the standardised length as its last
                                          column) and one on [phi_new, length, knn_m]
- stack:          every input at once

(a blend of linear logits, and delta_base = phi_base . gen + gen0, are themselves linear in
the inputs, so every candidate is stored as one ordinary head). Each candidate's out-of-fold
predictions on the new train split are scored on what routing is judged on: for every pair of
the file's models whose mean scores differ by at least ``MIN_PAIR_GAP``, the APGR of ranking
prompts by the predicted gain strong - weak, averaged with the gap as weight (the mean over
folds). The choice follows the one-standard-error rule towards the prior: the most constrained
prior candidate whose score is within one standard error (over folds) of the best, else the
best. On a few hundred labels the folds disagree by several points and the prior stays unless
something beats it clearly; on thousands the best-scoring candidate wins. It is refitted on all
rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gateway.router.arrays import F64, Bools
from gateway.router.training.fit import fit_logistic
from gateway.router.training.metrics import batched_apgr

BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Fixed L2 priors (total, not per row) on the correction of the prior: a grid over two decades.
PRIOR_TAUS = (300.0, 100.0, 30.0, 10.0)
CV_FOLDS = 5
MIN_PAIR_GAP = 0.05
HEAD_L2 = 1e-2

# A head as (coef over [phi_base, phi_new], knn coef, intercept).
Part = tuple[F64, float, float]
# Per part: a column mask over [phi_base, phi_new] and whether it reads knn.
Blocks = dict[str, tuple[Bools, bool]]


@dataclass(frozen=True)
class Inputs:
    """Head inputs on the new file's train rows: (n, t_base) base latent whose last column is
    the standardised length, (n, k) fresh latent, (n, m) neighbour logits, (n, m) outcomes.
    ``gen_coef``/``gen_icpt``: the base's difficulty logit delta = phi_base . gen_coef + gen_icpt
    (without them there is no prior candidate)."""

    phi_base: F64
    phi_new: F64
    knn: F64
    y: F64
    gen_coef: F64 | None = None
    gen_icpt: float = 0.0

    @property
    def width(self) -> int:
        return int(self.phi_base.shape[1] + self.phi_new.shape[1])

    @property
    def gen(self) -> F64 | None:
        """delta's coefficients over [phi_base, phi_new] (zeros on the fresh columns)."""
        if self.gen_coef is None:
            return None
        return np.concatenate([self.gen_coef, np.zeros(self.phi_new.shape[1])])


@dataclass(frozen=True)
class Heads:
    """One head per model with labels: coef over [phi_base, phi_new], knn weight, intercept."""

    models: NDArray[np.int16]  # column of each head's model in Inputs.y
    coef: F64
    knn_coef: F64
    icpt: F64
    choice: str
    cv_score: dict[str, float]


def _blocks(inp: Inputs) -> Blocks:
    """Column masks over [phi_base, phi_new] for each part, and whether it reads knn."""
    tb, w = inp.phi_base.shape[1], inp.width
    base = np.zeros(w, bool)
    base[:tb] = True
    fresh = np.zeros(w, bool)
    fresh[tb:] = True
    fresh[tb - 1] = True  # the base latent's length column
    length = np.zeros(w, bool)
    length[tb - 1] = True
    return {"base": (base, True), "fresh": (fresh, True), "stack": (np.ones(w, bool), True),
            "length": (length, False)}


def _fit_part(phi: F64, knn: F64, y: F64, mask: Bools, uses_knn: bool) -> Part:
    """(coef over all columns with zeros outside ``mask``, knn coef, intercept)."""
    f = phi[:, mask] if not uses_knn else np.column_stack([phi[:, mask], knn])
    c, c0 = fit_logistic(f, y, l2=HEAD_L2)
    coef = np.zeros(phi.shape[1])
    coef[mask] = c[: int(mask.sum())]
    return coef, (float(c[-1]) if uses_knn else 0.0), c0


def _fit_priors(phi: F64, knn: F64, y: F64, gen: F64, gen_icpt: float) -> dict[str, Part]:
    """Heads around the base's difficulty: ``prior``, a slope s and an offset a on delta
    (unpenalised), and ``prior tau T`` for each T of PRIOR_TAUS, that plus a correction on every
    input under a fixed L2 prior of total strength T. Each fit of the grid starts from the one
    before it (the prior's slope and offset for the first): they differ by one penalty."""
    delta = phi @ gen + gen_icpt
    c, c0 = fit_logistic(delta[:, None], y, l2=0.0)
    out: dict[str, Part] = {"prior": (c[0] * gen, 0.0, c0 + float(c[0]) * gen_icpt)}
    f = np.column_stack([delta, phi, knn])
    penalty = np.ones(f.shape[1])
    penalty[0] = 0.0
    beta = np.zeros(f.shape[1] + 1)
    beta[0], beta[-1] = c[0], c0
    for tau in PRIOR_TAUS:
        c, c0 = fit_logistic(f, y, total_l2=tau, penalty=penalty, start=beta)
        beta = np.append(c, c0)
        out[f"prior tau {tau:g}"] = (c[0] * gen + c[1:-1], float(c[-1]), c0 + float(c[0]) * gen_icpt)
    return out


def _candidates(parts: dict[str, Part], priors: dict[str, Part]) -> dict[str, Part]:
    """Every candidate, the most constrained first (the order the one-standard-error rule prefers)."""
    out = dict(priors)
    out["length"] = parts["length"]
    (cb, kb, ib), (cf, kf, i_f) = parts["base"], parts["fresh"]
    for w in BLEND_WEIGHTS:
        out[f"blend {w:g}"] = ((1 - w) * cb + w * cf, (1 - w) * kb + w * kf, (1 - w) * ib + w * i_f)
    out["stack"] = parts["stack"]
    return out


def _fit_model(phi: F64, knn: F64, y: F64, blocks: Blocks, inp: Inputs) -> dict[str, Part]:
    parts = {name: _fit_part(phi, knn, y, mask, k) for name, (mask, k) in blocks.items()}
    gen = inp.gen
    priors = {} if gen is None else _fit_priors(phi, knn, y, gen, inp.gen_icpt)
    return _candidates(parts, priors)


def _logit(phi: F64, knn: F64, part: Part) -> F64:
    coef, kc, c0 = part
    return phi @ coef + kc * knn + c0


def judged_pairs(y: F64) -> list[tuple[int, int, float]]:
    """(weak, strong, gap) for every pair of columns with shared rows whose means differ enough."""
    seen = ~np.isnan(y)
    out = []
    for a in range(y.shape[1]):
        for b in range(a + 1, y.shape[1]):
            both = seen[:, a] & seen[:, b]
            if both.sum() < 20:
                continue
            ma, mb = float(y[both, a].mean()), float(y[both, b].mean())
            if abs(mb - ma) >= MIN_PAIR_GAP:
                out.append((a, b, mb - ma) if mb > ma else (b, a, ma - mb))
    return out


def pair_score(p: F64, y: F64, pairs: list[tuple[int, int, float]]) -> float:
    """Gap-weighted mean APGR of ranking by p[:, strong] - p[:, weak] over ``pairs``, each on the
    rows both models have (the cross-validation scores hundreds of pairs per candidate and fold
    on a file of 38 models: one batch). A pair without a shared row is left out."""
    if not pairs:
        return 0.0
    weak = np.fromiter((w for w, _, _ in pairs), dtype=np.intp, count=len(pairs))
    strong = np.fromiter((s for _, s, _ in pairs), dtype=np.intp, count=len(pairs))
    gaps = np.fromiter((g for _, _, g in pairs), dtype=np.float64, count=len(pairs))
    seen = ~np.isnan(y)
    both = (seen[:, weak] & seen[:, strong]).T
    scores = batched_apgr((p[:, strong] - p[:, weak]).T, (y[:, strong] - y[:, weak]).T, both)
    counted = both.any(axis=1)
    weight = float(gaps[counted].sum())
    return float(gaps[counted] @ scores[counted]) / weight if weight else 0.0


def _folds(n: int, seed: int) -> NDArray[np.int64]:
    return np.random.default_rng(seed).integers(0, CV_FOLDS, n)


def _oof_probs(inp: Inputs, cols: list[int], seed: int) -> dict[str, F64]:
    phi = np.column_stack([inp.phi_base, inp.phi_new])
    blocks = _blocks(inp)
    fold = _folds(phi.shape[0], seed)
    probs: dict[str, F64] = {}
    for j in cols:
        ok = ~np.isnan(inp.y[:, j])
        for q in range(CV_FOLDS):
            tr, te = ok & (fold != q), ok & (fold == q)
            if not te.any() or tr.sum() < 2:
                continue
            for name, part in _fit_model(phi[tr], inp.knn[tr, j], inp.y[tr, j], blocks, inp).items():
                out = probs.setdefault(name, np.full(inp.y.shape, np.nan))
                out[te, j] = 1.0 / (1.0 + np.exp(-_logit(phi[te], inp.knn[te, j], part)))
    return probs


def one_se_choice(per_fold: dict[str, list[float]]) -> str:
    """The most constrained prior candidate (``prior``, then ever weaker priors) whose mean score
    is within one standard error of the best mean, else the best; the standard error is the best
    candidate's spread over folds / sqrt(folds). The other candidates have no such order (a
    blend weight is not a strength of prior), so among them the best mean wins."""
    means = {k: float(np.mean(v)) for k, v in per_fold.items()}
    best = max(means, key=lambda k: means[k])
    folds = per_fold[best]
    se = float(np.std(folds, ddof=1) / np.sqrt(len(folds))) if len(folds) > 1 else 0.0
    return next((k for k in per_fold if k.startswith("prior") and means[k] >= means[best] - se), best)


def select_heads(cv: Inputs, final: Inputs, seed: int = 0,
                 log: Callable[[str], None] | None = None) -> Heads:
    """Choose the candidate by cross-validation on ``cv`` (out-of-fold latents) and fit it on
    ``final`` (the latents the artifact's heads are trained on). Same rows, same outcomes."""
    cols = [j for j in range(cv.y.shape[1]) if (~np.isnan(cv.y[:, j])).sum() >= 2]
    pairs = judged_pairs(cv.y)
    probs = _oof_probs(cv, cols, seed)
    fold = _folds(cv.y.shape[0], seed)
    per_fold = {name: [pair_score(np.nan_to_num(p[fold == q], nan=0.5), cv.y[fold == q], pairs)
                       for q in range(CV_FOLDS) if (fold == q).any()] for name, p in probs.items()}
    scores = {name: round(float(np.mean(v)), 4) for name, v in per_fold.items()}
    choice = one_se_choice(per_fold) if per_fold else "stack"
    if log is not None:
        log(f"new-domain heads: {choice} (cross-validated pair APGR {scores})")
    phi = np.column_stack([final.phi_base, final.phi_new])
    blocks = _blocks(final)
    coefs, kcs, icpts = [], [], []
    for j in cols:
        ok = ~np.isnan(final.y[:, j])
        coef, kc, c0 = _fit_model(phi[ok], final.knn[ok, j], final.y[ok, j], blocks, final)[choice]
        coefs.append(coef)
        kcs.append(kc)
        icpts.append(c0)
    return Heads(np.asarray(cols, dtype=np.int16), np.asarray(coefs).reshape(len(cols), phi.shape[1]),
                 np.asarray(kcs), np.asarray(icpts), choice, scores)
