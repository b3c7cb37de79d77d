"""How well does the router route, on each shared file, in-domain and on traffic it never saw?

    python -m benchmarks.routing_quality [--data-dir DIR] [--work DIR] [--reuse] [--out DIR]

Fits routers from the shared data (train splits only; settings were chosen on validation)
and writes ``routing_quality.md`` plus ``routing_*.png`` to the results folder:
- per file, for its named weak -> strong pair, validation APGR in-domain (one router fitted
  on all five train splits: the shipped artifact) and leave-one-domain-out (fitted without
  that file), beside random, prompt length, a TF-IDF ridge fitted on the same labels and
  the oracle;
- adaptation: the leave-one-out router adapted with the file's train split
  (``switchyard train --base``), against the shipped router, prompt length, a TF-IDF ridge
  on the file's labels and retraining from scratch on the file alone, and what adapting
  did to the other files (forgetting);
- the quality-cost frontier over MMLU-Pro's 28-model pool, with the shipped router;
- artifact load time and assess() latency on short and ~2,000-token prompts.

Fitting everything (one in-domain, five leave-one-out, five adapted and five single-file routers)
takes about an hour on a busy two-core machine (the in-domain fit alone ~9 min, adapting to
MMLU-Pro ~16 min); ``--work`` keeps the fitted artifacts and ``--reuse`` skips fits whose
artifact is already there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.progress import missing, phase
from benchmarks.routing_quality.baselines import fit_tfidf_ridge
from benchmarks.routing_quality.files import DEFAULT_DATA, FILES, PREVIOUS, RESULTS
from benchmarks.routing_quality.report import apgr_plot, report
from gateway.router.model import DEFAULT_ARTIFACT, Router, load_router
from gateway.router.training.data import RoutingData, load_many
from gateway.router.training.evaluate import Scored, eval_pair, rank_score, score_data

if TYPE_CHECKING:
    from gateway.router.training.train import Prepared

# Columns a run may carry over from the previous results instead of refitting (their fits are slow).
CARRIABLE = ("retrained on the file alone",)


class Fits:
    """Fitted routers by tag, kept in a work folder (reused across runs with --reuse)."""

    def __init__(self, work: Path, reuse: bool) -> None:
        self.work, self.reuse = work, reuse

    def get(self, tag: str, fit: Callable[[Path], None]) -> tuple[Router, Path]:
        path = self.work / tag
        if not (self.reuse and (path / "router.npz").exists()):
            phase(f"fitting the {tag} router")
            t = time.perf_counter()
            fit(path)
            print(f"fitted {tag} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        return load_router(path), path


def pair_apgr(val: RoutingData, score: np.ndarray, name: str) -> float:
    weak, strong = FILES[name]
    return eval_pair(val, score, weak, strong).apgr


def router_score(router: Router, val: RoutingData, name: str) -> np.ndarray:
    """What the gate ranks by: predicted gain strong - weak when it varies, else difficulty."""
    weak, strong = FILES[name]
    scored: Scored = score_data(router, val, progress=False)
    return rank_score(scored, val.col(weak), val.col(strong))


def fixed_baselines(val: RoutingData, name: str) -> dict[str, float]:
    weak, strong = FILES[name]
    jw, js = val.col(weak), val.col(strong)
    rng = np.random.default_rng(0)
    oracle = np.nan_to_num(val.score[:, js] - val.score[:, jw]) + rng.random(len(val.ids)) * 1e-6
    return {"random": pair_apgr(val, rng.random(len(val.ids)), name),
            "prompt length": pair_apgr(val, np.array([len(p) for p in val.prompts], dtype=float), name),
            "oracle": pair_apgr(val, oracle, name)}


def unseen_pairs(lodo: Router, splits: dict[str, RoutingData]) -> dict[str, float]:
    """Gap-weighted APGR over every judged model pair of a file its leave-one-out router never saw, ranked
    by prompt length, by that router's 1PL difficulty delta and by its difficulty (what it ranks a pair of
    unseen models by): on the file's train split (where the difficulty's make-up was chosen) and on its
    validation split."""
    from benchmarks.routing_quality.lodo_targets import pairs_apgr

    out = {}
    for split, d in splits.items():
        assessed = [lodo.assess(p) for p in d.prompts]
        for name, score in (("length", [len(p) for p in d.prompts]), ("delta", [a.delta for a in assessed]),
                            ("difficulty", [a.difficulty for a in assessed])):
            out[f"unseen pairs {split}: {name}"] = pairs_apgr(np.asarray(score, dtype=float), d.score)
    return out


def tfidf_difficulty(data: RoutingData, rows: np.ndarray, val: RoutingData) -> np.ndarray:
    """TF-IDF ridge onto the router's shared target (difficulty within its file)."""
    from gateway.router.training.train import outcome_targets

    target = outcome_targets(data.score[rows], data.domain[rows], 1)[:, 0]
    return fit_tfidf_ridge([data.prompts[i] for i in rows], target).predict(val.prompts)


def tfidf_gain(data: RoutingData, rows: np.ndarray, val: RoutingData, name: str) -> np.ndarray:
    """TF-IDF ridge onto the pair's own gain (strong - weak) on the rows that have both."""
    weak, strong = FILES[name]
    gain = data.score[rows, data.col(strong)] - data.score[rows, data.col(weak)]
    ok = ~np.isnan(gain)
    return fit_tfidf_ridge([data.prompts[i] for i in rows[ok]], gain[ok]).predict(val.prompts)


def _fit_to(prep: Prepared, rows: np.ndarray, seed: int = 0, memory_seed: int | None = None
            ) -> Callable[[Path], None]:
    from gateway.router.training.train import fit_arrays, make_meta, save_artifact

    def run(path: Path) -> None:
        arrays = fit_arrays(prep, rows, seed=seed, progress=False, memory_seed=memory_seed)
        save_artifact(arrays, make_meta(prep.data, rows, arrays), path)
    return run


def _adapt_to(base: Path, prep: Prepared, rows: np.ndarray) -> Callable[[Path], None]:
    from gateway.router.training.adapt import adapt
    from gateway.router.training.train import save_artifact

    def run(path: Path) -> None:
        save_artifact(*adapt(base, prep, rows, progress=False), path)
    return run


def evaluate(data_dir: Path, fits: Fits, shipped: Path | None,
             carried: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """Every APGR of the report, by file then column; ``carried``: columns taken from a previous
    run's results instead of being fitted again (by file, then column)."""
    from gateway.router.training.train import prepare

    phase(f"reading the five files from {data_dir} and featurising their prompts")
    data = load_many([data_dir / f"{f}.jsonl" for f in FILES])
    prep = prepare(data, progress=False)
    train = data.split == "train"
    vals = {f: data.subset((data.domain == f) & (data.split == "validation")) for f in FILES}
    all_rows = np.nonzero(train)[0]
    # about an hour in all on a busy two-core machine: the in-domain fit ~9 min, each file's several more
    indomain, indomain_path = fits.get("in_domain", _fit_to(prep, all_rows))
    if shipped is not None:
        shutil.copytree(indomain_path, shipped, dirs_exist_ok=True)
    res: dict[str, dict[str, float]] = {}
    for i, (f, val) in enumerate(vals.items(), 1):
        phase(f"{f} ({i}/{len(vals)}): baselines, the in-domain router and TF-IDF ridges")
        r = res.setdefault(f, fixed_baselines(val, f))
        r["previous router"] = PREVIOUS[f]
        r["in-domain router"] = pair_apgr(val, router_score(indomain, val, f), f)
        r["in-domain tfidf difficulty"] = pair_apgr(val, tfidf_difficulty(data, all_rows, val), f)
        r["in-domain tfidf gain"] = pair_apgr(val, tfidf_gain(data, all_rows, val, f), f)
        others = np.nonzero(train & (data.domain != f))[0]
        own = np.nonzero(train & (data.domain == f))[0]
        lodo, lodo_path = fits.get(f"lodo_{f}", _fit_to(prep, others))
        r["lodo router"] = pair_apgr(val, router_score(lodo, val, f), f)
        r["lodo tfidf difficulty"] = pair_apgr(val, tfidf_difficulty(data, others, val), f)
        r.update(unseen_pairs(lodo, {"train": data.subset((data.domain == f) & train), "validation": val}))
        phase(f"{f}: adapting the leave-one-out router to the file's train split")
        own_prep = prepare(data.subset(data.domain == f), progress=False)
        own_rows = np.nonzero(own_prep.data.split == "train")[0]
        adapted, _ = fits.get(f"adapted_{f}", _adapt_to(lodo_path, own_prep, own_rows))
        r["adapted router"] = pair_apgr(val, router_score(adapted, val, f), f)
        r["adapted heads"] = adapted.meta["adapted"][-1]["new_domains"][0]["heads"]  # type: ignore[assignment]  # the heads chosen: a label beside the APGRs
        if carried and "retrained on the file alone" in carried.get(f, {}):
            r["retrained on the file alone"] = carried[f]["retrained on the file alone"]
        else:
            scratch, _ = fits.get(f"scratch_{f}", _fit_to(own_prep, own_rows))
            r["retrained on the file alone"] = pair_apgr(val, router_score(scratch, val, f), f)
        r["tfidf gain, file's labels"] = pair_apgr(val, tfidf_gain(data, own, val, f), f)
        phase(f"{f}: what adapting did to the other files")
        before = [pair_apgr(vals[g], router_score(lodo, vals[g], g), g) for g in FILES if g != f]
        after = [pair_apgr(vals[g], router_score(adapted, vals[g], g), g) for g in FILES if g != f]
        r["others before adapting"] = float(np.mean(before))
        r["others after adapting"] = float(np.mean(after))
        print(f, json.dumps(r), file=sys.stderr, flush=True)
    return res


def require_data(prog: str, data_dir: Path) -> None:
    """Stop with a one-line message unless ``data_dir`` holds the five shared files."""
    if not data_dir.is_dir():
        missing(prog, f"no routing data folder at {data_dir} (the five shared files; pass --data-dir DIR)")
    absent = [f"{f}.jsonl" for f in FILES if not (data_dir / f"{f}.jsonl").is_file()]
    if absent:
        missing(prog, f"routing data folder {data_dir} lacks {', '.join(absent)} (pass --data-dir DIR)")


def add_data_and_work(ap: argparse.ArgumentParser, fitted: str = "artifacts") -> None:
    """--data-dir, --work and --reuse, as every fitting benchmark of this folder takes them."""
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                    help="folder with the five shared files, default %(default)s")
    ap.add_argument("--work", type=Path, help=f"keep fitted {fitted} here (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help=f"reuse {fitted} already in --work")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routing_quality",
                                 description=__doc__.splitlines()[0])
    add_data_and_work(ap)
    ap.add_argument("--ship", action="store_true",
                    help=f"copy the in-domain router to the shipped artifact ({DEFAULT_ARTIFACT})")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder, default %(default)s")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency section (smoke tests)")
    ap.add_argument("--carry", action="append", default=[], choices=CARRIABLE,
                    help="take this column from the previous results' routing_quality.json instead of "
                         "fitting it again (the report says so); repeatable")
    ap.add_argument("--before", action="store_true",
                    help="show the previous results' adapted figures as an 'adapted before' column")
    a = ap.parse_args(argv)
    require_data(ap.prog, a.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        fits = Fits(work, a.reuse)
        carried = None
        if a.carry or a.before:
            previous = json.loads((a.out / "routing_quality.json").read_text(encoding="utf-8"))
            carried = {f: {c: previous[f][c] for c in a.carry} for f in FILES}
        res = evaluate(a.data_dir, fits, DEFAULT_ARTIFACT if a.ship else None, carried)
        if a.before:  # the previous results' adapted figures, beside this run's
            for f in FILES:
                res[f]["adapted router (before)"] = previous[f]["adapted router"]
        a.out.mkdir(parents=True, exist_ok=True)
        phase("the report: the frontier" + ("" if a.no_latency else ", load time and assess() latency")
              + f", written to {a.out}")
        apgr_plot(res, a.out)
        md = report(res, a.data_dir, work / "in_domain", a.out, not a.no_latency, carried=a.carry)
        (a.out / "routing_quality.md").write_text("\n".join(md), encoding="utf-8")
        (a.out / "routing_quality.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    print("\n".join(md))
