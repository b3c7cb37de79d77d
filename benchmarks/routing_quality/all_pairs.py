"""Adapting a router to a new domain, scored over every model pair of each file rather than one.

    python -m benchmarks.routing_quality.all_pairs [--data-dir DIR] [--work DIR] [--reuse]
        [--resamples N] [--out FILE]

The report's adaptation table scores each file's one named pair; on a small file (arena_chat: 62
validation prompts) one pair is noisy. Here every pair of the file's models whose mean scores on
its train split differ (the higher one is "strong") is scored on the validation split and the APGRs
are averaged over pairs, for: the leave-one-domain-out base, the base adapted with the file's train
split, prompt length, a TF-IDF ridge onto the pair's gain on the file's train labels and the shipped
in-domain router; plus a paired bootstrap over validation prompts of adapted - base (mean over pairs).
A pair whose two models score the same on validation has no APGR and is left out. A pair whose models
nearly tie on validation has an APGR far outside [0, 1], so a second table keeps only the pairs whose
train means differ by at least ``blend.MIN_PAIR_GAP`` (0.05), the pairs the adaptation's own
cross-validation judges.

The routers are fitted exactly as ``python -m benchmarks.routing_quality`` fits them and under the
same tags, so ``--work DIR --reuse`` reuses that run's (or an earlier run's) leave-one-out and adapted
fits. On the busy two-core machine of 2026-11-27 fitting the ten took 22 min and scoring them 5 min.
Writes ``routing_all_pairs.md`` to the results folder (the report quotes it) and prints it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.routing_quality.baselines import tfidf_ridge_many
from benchmarks.routing_quality.files import ALL_PAIRS_MD, FILES, RESULTS
from benchmarks.routing_quality.run import Fits, _adapt_to, _fit_to, add_data_and_work
from gateway.router.arrays import F64, Bools, Ints
from gateway.router.model import DEFAULT_ARTIFACT, Router, load_router
from gateway.router.training.blend import MIN_PAIR_GAP
from gateway.router.training.data import RoutingData, load_many
from gateway.router.training.evaluate import eval_pair, pair_rows, rank_score, score_data
from gateway.router.training.metrics import NO_GAP, batched_apgr
from gateway.router.training.train import Prepared, prepare

METHODS = ("base (LODO)", "adapted", "length", "TF-IDF → gain, file's labels", "shipped (in-domain)")


def file_pairs(data: RoutingData, train: Bools, val: RoutingData) -> list[tuple[int, int]]:
    """(weak, strong) columns of every pair of models with train results whose train means differ,
    the higher mean being strong; pairs with no validation gap (APGR undefined) left out."""
    seen = ~np.isnan(data.score[train]).all(0)
    cols = np.nonzero(seen)[0]
    mean = np.nanmean(data.score[train][:, cols], 0)
    pairs = []
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            if mean[a] == mean[b]:
                continue
            weak, strong = (cols[a], cols[b]) if mean[a] < mean[b] else (cols[b], cols[a])
            ok = pair_rows(val, weak, strong)
            if ok.any() and abs(val.score[ok, strong].sum() - val.score[ok, weak].sum()) > NO_GAP:
                pairs.append((int(weak), int(strong)))
    return pairs


def resampled_apgr(score: F64, gain: F64, ok: Bools, idx: Ints) -> F64:
    """APGR (``metrics.apgr`` of ``pair_curve``) of ranking by ``score`` on each row of ``idx``, a
    (resamples, n) array of prompt indices; ``gain`` is strong - weak, ``ok`` the prompts with both."""
    return batched_apgr(score[idx], gain[idx], ok[idx])


@dataclass(frozen=True)
class FileResult:
    n_val: int
    train_gap: F64  # per pair: strong's mean on the train split - weak's (> 0), as file_pairs orders them
    val_gap: F64  # per pair, on the validation split (< 0: the weaker by train is ahead)
    apgr: dict[str, F64]  # per pair, by method
    boot: F64  # (pairs, resamples): adapted - base on each bootstrap resample of the validation prompts


def score_file(data: RoutingData, prep: Prepared, fits: Fits, shipped: Router, name: str,
               resamples: int) -> FileResult:
    own = data.domain == name
    train, val_mask = own & (data.split == "train"), own & (data.split == "validation")
    val = data.subset(val_mask)
    pairs = file_pairs(data, train, val)
    _, lodo_path = fits.get(f"lodo_{name}", _fit_to(prep, np.nonzero((data.split == "train") & ~own)[0]))
    own_prep = prepare(data.subset(own), progress=False)
    own_rows = np.nonzero(own_prep.data.split == "train")[0]
    adapted, _ = fits.get(f"adapted_{name}", _adapt_to(lodo_path, own_prep, own_rows))
    scored = {"base (LODO)": score_data(load_router(lodo_path), val, progress=False),
              "adapted": score_data(adapted, val, progress=False),
              "shipped (in-domain)": score_data(shipped, val, progress=False)}
    rows = np.nonzero(train)[0]
    gains = np.column_stack([data.score[rows, s] - data.score[rows, w] for w, s in pairs])
    tfidf = tfidf_ridge_many([data.prompts[i] for i in rows], gains, val.prompts)
    length = np.array([len(p) for p in val.prompts], dtype=float)
    apgrs = {m: np.zeros(len(pairs)) for m in METHODS}
    idx = np.random.default_rng(0).integers(0, len(val.ids), (resamples, len(val.ids)))
    boot = np.zeros((len(pairs), resamples))
    for k, (w, s) in enumerate(pairs):
        by_method = {m: rank_score(sc, w, s) for m, sc in scored.items()}
        by_method |= {"length": length, "TF-IDF → gain, file's labels": tfidf[:, k]}
        for m in METHODS:
            apgrs[m][k] = eval_pair(val, by_method[m], val.models[w], val.models[s]).apgr
        if (val.models[w], val.models[s]) == FILES[name]:  # to check against the report's named-pair table
            print(name, "named pair", {m: v[k] for m, v in apgrs.items()}, file=sys.stderr, flush=True)
        gain, ok = val.score[:, s] - val.score[:, w], pair_rows(val, w, s)
        boot[k] = (resampled_apgr(by_method["adapted"], gain, ok, idx)
                   - resampled_apgr(by_method["base (LODO)"], gain, ok, idx))
    tr = data.score[train]
    return FileResult(len(val.ids), np.array([np.nanmean(tr[:, s]) - np.nanmean(tr[:, w]) for w, s in pairs]),
                      np.array([np.nanmean(val.score[:, s] - val.score[:, w]) for w, s in pairs]), apgrs, boot)


def table(results: dict[str, FileResult], min_gap: float = 0.0) -> list[str]:
    """Mean APGR over the pairs whose train gap is at least ``min_gap``, and the bootstrap of adapted - base."""
    head = ["file", "validation prompts", "pairs (weaker ahead on validation)", *METHODS,
            "adapted − base: bootstrap mean ± sd (median)", "share of resamples > 0"]
    md = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for f, r in results.items():
        keep = r.train_gap >= min_gap
        boot = r.boot[keep].mean(0)
        cells = [f, str(r.n_val), f"{keep.sum()} ({(r.val_gap[keep] < 0).sum()})",
                 *(f"{r.apgr[m][keep].mean():.3f}" for m in METHODS),
                 f"{boot.mean():+.3f} ± {boot.std(ddof=1):.3f} ({np.median(boot):+.3f})", f"{(boot > 0).mean():.1%}"]
        md.append("| " + " | ".join(cells) + " |")
    return md


def apgr_range(results: dict[str, FileResult], max_gap: float) -> str:
    """How far one pair's APGR strays when its two models nearly tie on validation."""
    near = [(f, r.apgr["base (LODO)"][abs(r.val_gap) < max_gap], r.apgr["adapted"][abs(r.val_gap) < max_gap])
            for f, r in results.items()]
    return "; ".join(f"{f} {len(b)}: base {b.min():.2f} to {b.max():.2f}, adapted {a.min():.2f} to {a.max():.2f}"
                     for f, b, a in near if len(b))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routing_quality.all_pairs",
                                 description=__doc__.splitlines()[0])
    add_data_and_work(ap)
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples, default %(default)s")
    ap.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="the shipped router, default %(default)s")
    ap.add_argument("--out", type=Path, default=RESULTS / ALL_PAIRS_MD, help="default %(default)s")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = load_many([a.data_dir / f"{f}.jsonl" for f in FILES])
    prep = prepare(data, progress=False)
    shipped = load_router(a.artifact)
    with tempfile.TemporaryDirectory() as tmp:
        fits = Fits(a.work or Path(tmp), a.reuse)
        results = {}
        for f in FILES:
            results[f] = score_file(data, prep, fits, shipped, f, a.resamples)
            print(f, {m: round(float(v.mean()), 3) for m, v in results[f].apgr.items()}, file=sys.stderr, flush=True)
    minutes = (time.perf_counter() - t0) / 60
    cmd = "python -m benchmarks.routing_quality.all_pairs" + (" --work DIR --reuse" if a.reuse else "")
    md = ["All pairs of the file's models whose train means differ:", "", *table(results), "",
          f"Only pairs whose train means differ by at least {MIN_PAIR_GAP:g} (the pairs the adaptation's "
          "cross-validation judges):", "", *table(results, MIN_PAIR_GAP), "",
          f"Paired bootstrap: {a.resamples:,} resamples of each file's validation prompts, the same for both "
          "routers and every pair. Pairs whose models nearly tie on validation (|gap| < 0.02) have APGRs far "
          f"outside [0, 1] and weigh heavily in a plain mean: {apgr_range(results, 0.02)}.", "",
          f"`{cmd}`: {minutes:.0f} min" + (" with the ten fits reused" if a.reuse else "") + "."]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
