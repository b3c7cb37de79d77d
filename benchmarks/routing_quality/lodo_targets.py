"""Which difficulty target transfers to a pair the router has never seen? (feature-level study)

    python -m benchmarks.routing_quality.lodo_targets [--data-dir DIR] [--regularisation]

For each shared file held out, a ridge from the router's design matrix (hashed n-grams + structural
features, idf on the training rows) is fitted on the other four files' train splits onto several
per-prompt targets, plus the router's 1PL head on the latent; each target's prediction ranks the
held-out file's prompts. Printed per target: "cv", the mean over held-out files of the gap-weighted
APGR over every model pair of the held-out file's *train* split whose means differ by >= 0.05 (what
a choice may be made on), and the validation APGR of each file's named pair (for the record).
The figures are in ``tried.py`` (``TRIED_LODO``). Takes ~10 min on a busy two-core machine.

``--regularisation`` instead asks whether a difficulty that leans more on the prompt's structure than on
its words transfers better: the shared difficulty (column 0) fitted by the same ridge with a stronger
penalty and larger structural columns, and by a ridge on the structural features alone (~3 min).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.routing_quality.files import DEFAULT_DATA, FILES
from gateway.router.arrays import F64, Ints, Strs
from gateway.router.training.blend import judged_pairs
from gateway.router.training.data import RoutingData, load_many
from gateway.router.training.design import fit_idf, to_csr, with_struct
from gateway.router.training.fit import fit_generic_head, fit_ridge, predict_ridge
from gateway.router.training.metrics import apgr, pair_curve
from gateway.router.training.train import (
    LATENT_DIMS,
    RIDGE_LAMBDA,
    SPEC,
    STRUCT_SCALE,
    Prepared,
    design,
    domain_weights,
    outcome_targets,
    prepare,
    spread_target,
)


def _z(v: F64) -> F64:
    return (v - float(v.mean())) / (float(v.std()) + 1e-9)


def _sig(v: F64) -> F64:
    return 1.0 / (1.0 + np.exp(-v))


def rank_contrast(y: F64, dom: Strs) -> F64:
    """Per prompt: sum over models of (model mean - pool mean) x the centred score, i.e. the mean
    gain over all ordered pairs, standardised within the file."""
    out = np.zeros(y.shape[0])
    for d in np.unique(dom):
        rows = dom == d
        yd = y[rows]
        cols = np.nonzero(~np.isnan(yd).all(0))[0]
        mu = np.nanmean(yd[:, cols], 0)
        c = mu - mu.mean()
        yy = yd[:, cols] - mu
        seen = ~np.isnan(yy)
        s = np.where(seen, yy, 0.0) @ c / np.maximum(seen @ np.abs(c), 1e-9)
        out[rows] = _z(s)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routing_quality.lodo_targets",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--regularisation", action="store_true",
                    help="compare penalties and structure-only ridges for the shared difficulty instead")
    a = ap.parse_args(argv)
    data = load_many([a.data_dir / f"{f}.jsonl" for f in FILES])
    prep = prepare(data, progress=False)
    if a.regularisation:
        _print(regularisation_study(data, prep))
        return
    y, dom, train = data.score, data.domain, data.split == "train"
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for f in FILES:
        tr = np.nonzero(train & (dom != f))[0]
        held = np.nonzero(dom == f)[0]
        idf = fit_idf(prep.hashed, tr, SPEC)
        s_mean, s_std = prep.hashed.struct[tr].mean(0), prep.hashed.struct[tr].std(0) + 1e-6
        _, x = design(prep, idf, s_mean, s_std)
        wgt = domain_weights(dom[tr])
        targets = np.column_stack([outcome_targets(y[tr], dom[tr], LATENT_DIMS), spread_target(y[tr], dom[tr]),
                                   spread_target(y[tr], dom[tr], 0.25), rank_contrast(y[tr], dom[tr])])
        fit = fit_ridge(x[tr], targets, RIDGE_LAMBDA, weight=wgt)
        p_tr, p_h = predict_ridge(fit, x[tr]), predict_ridge(fit, x[held])
        sc = p_tr[:, :LATENT_DIMS].std(0) + 1e-9
        length_tr = (prep.hashed.struct[tr, 0] - s_mean[0]) / s_std[0]
        length_h = (prep.hashed.struct[held, 0] - s_mean[0]) / s_std[0]
        phi_tr = np.column_stack([p_tr[:, :LATENT_DIMS] / sc, length_tr])
        phi_h = np.column_stack([p_h[:, :LATENT_DIMS] / sc, length_h])
        c, c0, theta = fit_generic_head(phi_tr, y[tr], row_weight=wgt)
        delta = phi_h @ c + c0
        ones_tr, ones_h = np.ones((len(tr), 1)), np.ones((len(held), 1))
        sw = np.sqrt(wgt)[:, None]
        beta = np.linalg.lstsq(np.hstack([phi_tr, ones_tr]) * sw, spread_target(y[tr], dom[tr]) * sw[:, 0],
                               rcond=None)[0]
        spread_lin = np.hstack([phi_h, ones_h]) @ beta
        lo, hi = np.percentile(theta, [25, 75])
        cand = {"prompt length": length_h, "shared difficulty": p_h[:, 0], "1PL difficulty": delta,
                "spread (halves)": p_h[:, LATENT_DIMS], "spread read off the latent": spread_lin,
                "spread (quarters)": p_h[:, LATENT_DIMS + 1], "rank contrast": p_h[:, LATENT_DIMS + 2],
                "1PL gain, ability quartiles": _sig(hi - delta) - _sig(lo - delta),
                "1PL gain, abilities +-1": _sig(1 - delta) - _sig(-1 - delta)}
        for w in (0.25, 0.5, 0.75):
            cand[f"z(1PL difficulty) + spread, w {w:g}"] = (1 - w) * _z(delta) + w * _z(spread_lin)
        # δ plus b × standardised length, or plus b × a difficulty read off the structural features
        # alone (penalty 100), each scaled by its spread on the training rows, as a shipped router could
        delta_tr = phi_tr @ c + c0
        z_delta = (delta - delta_tr.mean()) / (delta_tr.std() + 1e-9)
        s_all = (prep.hashed.struct - s_mean) / s_std
        a_tr = np.hstack([s_all[tr], ones_tr]) * sw
        shared = outcome_targets(y[tr], dom[tr], 1)[:, 0]
        beta_s = np.linalg.solve(a_tr.T @ a_tr + 100.0 * np.eye(a_tr.shape[1]), a_tr.T @ (shared * sw[:, 0]))
        struct_tr, struct_h = np.hstack([s_all[tr], ones_tr]) @ beta_s, np.hstack([s_all[held], ones_h]) @ beta_s
        z_struct = (struct_h - struct_tr.mean()) / (struct_tr.std() + 1e-9)
        for b in (0.25, 0.5, 1.0, 2.0):
            cand[f"z(1PL difficulty) + {b:g} z(length)"] = z_delta + b * length_h
        for b in (0.5, 1.0, 2.0):
            cand[f"z(1PL difficulty) + {b:g} z(structure-only difficulty)"] = z_delta + b * z_struct
        weak, strong = FILES[f]
        jw, js = data.col(weak), data.col(strong)
        for name, score in cand.items():
            cv_rows = data.split[held] == "train"
            cv = pairs_apgr(score[cv_rows], y[held][cv_rows])
            val = data.split[held] == "validation"
            yv = y[held][val]
            ok = ~np.isnan(yv[:, jw]) & ~np.isnan(yv[:, js])
            zero = np.zeros(int(ok.sum()))
            named = apgr(pair_curve(score[val][ok], yv[ok, jw], yv[ok, js], zero, zero))
            table.setdefault(name, {})[f] = (cv, named)
    _print(table)


Table = dict[str, dict[str, tuple[float, float]]]


def _print(table: Table) -> None:
    for name, by_file in table.items():
        cv = float(np.mean([v[0] for v in by_file.values()]))
        print(f"{name:40s} cv {cv:.3f} | validation " + " ".join(f"{by_file[f][1]:.3f}" for f in FILES))


def _score(data: RoutingData, f: str, held: Ints, score: F64) -> tuple[float, float]:
    """(cv over every pair of the held-out file's train split, validation APGR of its named pair)."""
    y = data.score[held]
    cv_rows = data.split[held] == "train"
    cv = pairs_apgr(score[cv_rows], y[cv_rows])
    weak, strong = FILES[f]
    jw, js = data.col(weak), data.col(strong)
    val = data.split[held] == "validation"
    ok = ~np.isnan(y[val][:, jw]) & ~np.isnan(y[val][:, js])
    zero = np.zeros(int(ok.sum()))
    return cv, apgr(pair_curve(score[val][ok], y[val][ok, jw], y[val][ok, js], zero, zero))


# (ridge penalty, scale of the structural columns beside the unit-norm n-gram blocks); the router's own
# setting first.
PENALTIES = ((RIDGE_LAMBDA, STRUCT_SCALE), (10.0, 1.0), (30.0, 1.0), (100.0, 3.0))


def regularisation_study(data: RoutingData, prep: Prepared) -> Table:
    """LODO shared difficulty under stronger penalties, and from the structural features alone."""
    y, dom, train = data.score, data.domain, data.split == "train"
    table: Table = {}
    for f in FILES:
        tr = np.nonzero(train & (dom != f))[0]
        held = np.nonzero(dom == f)[0]
        idf = fit_idf(prep.hashed, tr, SPEC)
        s_mean, s_std = prep.hashed.struct[tr].mean(0), prep.hashed.struct[tr].std(0) + 1e-6
        xh = to_csr(prep.hashed, idf, SPEC)
        s = (prep.hashed.struct - s_mean) / s_std
        wgt = domain_weights(dom[tr])
        target = outcome_targets(y[tr], dom[tr], LATENT_DIMS)[:, :1]
        cand = {"prompt length": s[held, 0]}
        a_tr = np.hstack([s[tr], np.ones((len(tr), 1))]) * np.sqrt(wgt)[:, None]
        for lam in (1.0, 100.0):  # a weighted ridge on the 17 standardised structural columns
            beta = np.linalg.solve(a_tr.T @ a_tr + lam * np.eye(a_tr.shape[1]), a_tr.T @ (target[:, 0] * np.sqrt(wgt)))
            cand[f"structure only, penalty {lam:g}"] = np.hstack([s[held], np.ones((len(held), 1))]) @ beta
        for lam, scale in PENALTIES:
            x = with_struct(xh, s, scale)
            cand[f"n-grams + structure, penalty {lam:g}, structure x{scale:g}"] = predict_ridge(
                fit_ridge(x[tr], target, lam, weight=wgt), x[held])[:, 0]
        for name, score in cand.items():
            table.setdefault(name, {})[f] = _score(data, f, held, score)
    return table


def pairs_apgr(score: F64, y: F64) -> float:
    """Gap-weighted APGR of ranking by ``score`` over every judged pair of ``y``'s models."""
    total = weight = 0.0
    for weak, strong, gap in judged_pairs(y):
        ok = ~np.isnan(y[:, weak]) & ~np.isnan(y[:, strong])
        zero = np.zeros(int(ok.sum()))
        total += gap * apgr(pair_curve(score[ok], y[ok, weak], y[ok, strong], zero, zero))
        weight += gap
    return total / weight if weight else 0.0


if __name__ == "__main__":
    main()
