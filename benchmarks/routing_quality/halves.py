"""Adapting a router to a new domain, scored inside the file's train split over many random halves.

    python -m benchmarks.routing_quality.halves [--files F ...] [--halves N] [--share S] [--work DIR]
        [--reuse] [--out FILE]

The report judges adaptation on each file's validation split, which for a small file is one small
sample: arena_chat has 62 validation prompts for its named pair, and its adapted and base routers
differ there by about twice the paired bootstrap's sd. This asks the same question on other samples
of the same file, without looking at the validation split: each of ``--halves`` random halves of
the file's train split is used once to adapt the leave-one-domain-out base (``switchyard train
--base``) and the other half is scored through the saved artifact, beside the base itself, prompt
length and a TF-IDF ridge onto each pair's gain fitted on the adapting half's labels. Scored: the
file's named pair, and the mean over every pair of the file's models whose means on the adapting
half differ by at least ``blend.MIN_PAIR_GAP`` (the pairs the adaptation's cross-validation judges).
The halves overlap, so their spread understates the uncertainty of the mean; the table gives how
many halves each comparison won. ``--share 0.79`` adapts on 79% and scores the rest instead: the
proportions of the file's own train and validation splits, so that each cut is another draw of the
split the report scores (arena_chat: about 186 prompts to adapt on, 49 to score).

The leave-one-domain-out bases are fitted as ``python -m benchmarks.routing_quality`` fits them and
under the same tags, so ``--work DIR --reuse`` reuses that run's. MMLU-Pro is left out by default:
adapting to it takes about 8 minutes per half, and its 2,421 validation prompts already decide.
Writes ``routing_halves.md`` to the results folder (the report quotes it) and prints it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.routing_quality.baselines import tfidf_ridge_many
from benchmarks.routing_quality.files import FILES, HALVES_MD, RESULTS
from benchmarks.routing_quality.run import Fits, _fit_to, add_data_and_work
from gateway.router.arrays import F64
from gateway.router.model import Router, load_router
from gateway.router.training.blend import judged_pairs
from gateway.router.training.data import RoutingData, load_many
from gateway.router.training.evaluate import pair_rows, rank_score, score_data
from gateway.router.training.metrics import batched_apgr
from gateway.router.training.train import prepare, save_artifact

METHODS = ("adapted", "base (LODO)", "length", "TF-IDF → gain, half's labels")
SMALL_FILES = ("arena_chat", "cruxeval_code", "llmrouter_mixed", "theoremqa_stem")


@dataclass(frozen=True)
class HalfResult:
    named: dict[str, float]  # APGR of the file's named pair on the scored half, by method
    pairs: dict[str, float]  # mean APGR over the judged pairs, by method
    n_pairs: int
    heads: str  # the new-domain heads the adaptation chose


def pairs_apgr(scores: F64, test: RoutingData, pairs: list[tuple[int, int]]) -> F64:
    """APGR of each (weak, strong) pair ranked by the matching column of ``scores`` (n, pairs)."""
    gain = np.column_stack([test.score[:, s] - test.score[:, w] for w, s in pairs])
    ok = np.column_stack([pair_rows(test, w, s) for w, s in pairs])
    return batched_apgr(scores.T, np.nan_to_num(gain).T, ok.T)


def score_half(name: str, train: RoutingData, half: np.ndarray, base_path: Path, base: Router) -> HalfResult:
    from gateway.router.training.adapt import adapt

    prep = prepare(train, progress=False)
    fit_rows, test = np.nonzero(half)[0], train.subset(~half)
    with tempfile.TemporaryDirectory() as tmp:
        save_artifact(*adapt(base_path, prep, fit_rows, progress=False), Path(tmp))
        adapted = load_router(Path(tmp))
        heads = str(adapted.meta["adapted"][-1]["new_domains"][0]["heads"])
        scored = {"adapted": score_data(adapted, test, progress=False),
                  "base (LODO)": score_data(base, test, progress=False)}
    weak, strong = (train.col(m) for m in FILES[name])
    pairs = [(w, s) for w, s, _ in judged_pairs(train.score[fit_rows])]
    judged = np.ones(len(pairs) + 1, bool)
    if (weak, strong) in pairs:
        judged = judged[:-1]
    else:  # scored for the named table, left out of the mean over judged pairs
        pairs.append((weak, strong))
        judged[-1] = False
    gains = np.column_stack([train.score[fit_rows, s] - train.score[fit_rows, w] for w, s in pairs])
    tfidf = tfidf_ridge_many([train.prompts[i] for i in fit_rows], gains, test.prompts)
    length = np.array([len(p) for p in test.prompts], dtype=float)
    by_method = {m: np.column_stack([rank_score(sc, w, s) for w, s in pairs]) for m, sc in scored.items()}
    by_method |= {"length": np.repeat(length[:, None], len(pairs), 1), "TF-IDF → gain, half's labels": tfidf}
    apgrs = {m: pairs_apgr(by_method[m], test, pairs) for m in METHODS}
    k = pairs.index((weak, strong))
    return HalfResult({m: float(v[k]) for m, v in apgrs.items()},
                      {m: float(v[judged].mean()) if judged.any() else float("nan") for m, v in apgrs.items()},
                      int(judged.sum()), heads)


def _lodo_fit(data: RoutingData, rows: np.ndarray) -> Callable[[Path], None]:
    """The leave-one-domain-out base, fitted as the report fits it (prepared only when it must be fitted)."""
    def run(path: Path) -> None:
        _fit_to(prepare(data, progress=False), rows)(path)
    return run


def table(results: dict[str, list[HalfResult]], which: str) -> list[str]:
    head = ["file", "halves", *(f"{m}: mean ± sd" for m in METHODS),
            "adapted > base", "adapted > length", "adapted > TF-IDF"]
    md = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for f, rs in results.items():
        vals = {m: np.array([getattr(r, which)[m] for r in rs]) for m in METHODS}
        wins = [f"{int((vals['adapted'] > vals[m]).sum())} of {len(rs)}"
                for m in ("base (LODO)", "length", "TF-IDF → gain, half's labels")]
        cells = [f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if np.isfinite(v).all() else "–" for v in vals.values()]
        md.append("| " + " | ".join([f, str(len(rs)), *cells, *wins]) + " |")
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routing_quality.halves",
                                 description=__doc__.splitlines()[0])
    add_data_and_work(ap, "bases")
    ap.add_argument("--files", nargs="+", default=list(SMALL_FILES), choices=list(FILES),
                    help="files to score, default: every file but mmlu_pro")
    ap.add_argument("--halves", type=int, default=8, help="random halves per file, default %(default)s")
    ap.add_argument("--share", type=float, default=0.5,
                    help="share of the train split adapted on in each cut (the rest is scored), default %(default)s")
    ap.add_argument("--out", type=Path, default=RESULTS / HALVES_MD, help="default %(default)s")
    a = ap.parse_args(argv)
    if a.halves < 2:
        ap.error("--halves must be at least 2 (the table gives a spread)")
    if not 0.1 <= a.share <= 0.9:
        ap.error("--share must be between 0.1 and 0.9 (both parts need prompts)")
    t0 = time.perf_counter()
    data = load_many([a.data_dir / f"{f}.jsonl" for f in FILES])
    results: dict[str, list[HalfResult]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fits = Fits(a.work or Path(tmp), a.reuse)
        for f in a.files:
            own = data.domain == f
            base, base_path = fits.get(f"lodo_{f}", _lodo_fit(data, np.nonzero((data.split == "train") & ~own)[0]))
            train = data.subset(own & (data.split == "train"))
            rng = np.random.default_rng(0)
            for h in range(a.halves):
                half = rng.random(len(train.ids)) < a.share
                r = score_half(f, train, half, base_path, base)
                results.setdefault(f, []).append(r)
                print(f, h, {m: round(v, 3) for m, v in r.named.items()}, r.heads, file=sys.stderr, flush=True)
    minutes = (time.perf_counter() - t0) / 60
    cut = "" if a.share == 0.5 else f" --share {a.share:g}"
    files = "" if a.files == list(SMALL_FILES) else f" --files {' '.join(a.files)}"
    cmd = ("python -m benchmarks.routing_quality.halves" + files + (f" --halves {a.halves}" if a.halves != 8 else "")
           + cut + (" --work DIR --reuse" if a.reuse else ""))
    into = ("random halves: adapted on one half, scored on the other" if a.share == 0.5 else
            f"random parts: adapted on {a.share:.0%} of it, scored on the rest")
    n_pairs = ", ".join(f"{f} {int(np.mean([r.n_pairs for r in rs]))}" for f, rs in results.items())
    md = [f"Each file's train split cut {a.halves} times into {into} (the validation split is not used). "
          "The file's named pair:", "", *table(results, "named"), "",
          f"Mean over the pairs whose means on the adapting part differ by at least 0.05 (on average {n_pairs}):",
          "", *table(results, "pairs"), "",
          f"`{cmd}`: {minutes:.0f} min" + (" with the bases reused" if a.reuse else "") + "."]
    if a.share != 0.5:  # the tables' words for halves, for cuts of another size
        md = [line.replace("| halves |", "| cuts |").replace("half's labels", "adapting part's labels") for line in md]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
