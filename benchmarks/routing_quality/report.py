"""The routing-quality report: tables, plots and the MMLU-Pro pool frontier."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.routing_quality.files import ALL_PAIRS_MD, FILES, HALVES_MD, RESPLITS_MD
from benchmarks.routing_quality.latency import latency_section
from benchmarks.routing_quality.tried import ALL_PAIRS_READING, TRIED, TRIED_ADAPTING, TRIED_LODO
from gateway.router.model import Router, load_router
from gateway.router.training.data import RoutingData, load_many
from gateway.router.training.evaluate import Scored, score_data
from gateway.router.training.frontier import choose_by_utility, lambda_grid, predicted_cost


def pool_points(data: RoutingData, scored: Scored, router: Router,
                prices: dict[str, dict[str, float]]) -> dict[str, np.ndarray]:
    """Realised (quality, cost) of utility routing at many lambdas, plus single models."""
    models = data.models
    in_p = np.array([prices[m]["input_per_mtok"] for m in models])
    out_p = np.array([prices[m]["output_per_mtok"] for m in models])
    exp_out = np.array([router.expected_output_tokens(m) or 0.0 for m in models])
    c_hat = predicted_cost(np.nan_to_num(data.prompt_tokens), exp_out, in_p, out_p)
    allowed = ~np.isnan(data.score)
    lams = lambda_grid(c_hat, 80)
    q, c = [], []
    rows = np.arange(len(data.ids))
    for lam in lams:
        pick = choose_by_utility(scored.p_good, c_hat, lam, allowed)
        q.append(data.score[rows, pick].mean())
        c.append(data.cost[rows, pick].mean())
    return {"lam": lams, "q": np.array(q), "c": np.array(c),
            "single_q": np.nanmean(data.score, 0), "single_c": np.nanmean(data.cost, 0)}


def pool_section(pts: dict[str, np.ndarray], models: list[str], out: Path) -> list[str]:
    import matplotlib.pyplot as plt

    best = int(np.argmax(pts["single_q"]))
    qb, cb = float(pts["single_q"][best]), float(pts["single_c"][best])
    within = pts["c"] <= cb
    q_at_cb = float(pts["q"][within].max()) if within.any() else float("nan")
    half = pts["c"] <= cb / 2
    q_at_half = float(pts["q"][half].max()) if half.any() else float("nan")
    reach = pts["c"][pts["q"] >= qb]
    reach97 = pts["c"][pts["q"] >= 0.97 * qb]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(pts["c"] * 1e3, pts["q"], "-o", ms=2.5, label="router: argmax q̂ − λ·ĉ")
    ax.scatter(pts["single_c"] * 1e3, pts["single_q"], c="grey", s=14, label="single models")
    for i, m in enumerate(models):
        ax.annotate(m, (pts["single_c"][i] * 1e3, pts["single_q"][i]), fontsize=5)
    ax.set(xscale="log", xlabel="mean cost per prompt (USD × 1e-3)", ylabel="accuracy",
           title="pool frontier (validation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "routing_pool_frontier.png", dpi=110)
    plt.close(fig)
    met1 = bool(reach.size and reach.min() <= cb)
    met2 = bool(reach97.size and reach97.min() <= cb / 2)
    return [
        f"Best single model: **{models[best]}**, accuracy {qb:.4f} at ${cb * 1e3:.4f}e-3 per prompt.", "",
        "| target | met | measured |", "| --- | --- | --- |",
        f"| best single quality at ≤ its cost | {'yes' if met1 else 'no'} | best frontier quality at ≤ its cost: "
        f"{q_at_cb:.4f} ({q_at_cb - qb:+.4f}); cheapest frontier point ≥ {qb:.4f}: "
        + (f"{reach.min() / cb:.2f}× its cost" if reach.size else "never") + " |",
        f"| 97% of it ({0.97 * qb:.4f}) at ≤ half its cost | {'yes' if met2 else 'no'} | "
        f"best frontier quality at ≤ half its cost: {q_at_half:.4f} ({q_at_half / qb:.1%} of best); "
        "cheapest point ≥ 97%: "
        + (f"{reach97.min() / cb:.2f}× its cost" if reach97.size else "never") + " |",
        "", "![pool](routing_pool_frontier.png)", "",
    ]


def _table(res: dict[str, dict[str, float]], cols: list[tuple[str, str]]) -> list[str]:
    out = ["| file (weak → strong) | " + " | ".join(h for h, _ in cols) + " |",
           "| --- |" + " ---: |" * len(cols)]
    for f, r in res.items():
        weak, strong = FILES[f]
        out.append(f"| {f} ({weak} → {strong}) | " + " | ".join(f"{r[k]:.3f}" for _, k in cols) + " |")
    return [*out, ""]


def _unseen_table(res: dict[str, dict[str, float]]) -> list[str]:
    cols = [(f"{name}, {split}", f"unseen pairs {split}: {key}") for split in ("train", "validation")
            for name, key in (("length", "length"), ("δ", "delta"), ("**difficulty**", "difficulty"))]
    if not all(k in r for r in res.values() for _, k in cols):
        return []
    out = ["| file | " + " | ".join(h for h, _ in cols) + " |", "| --- |" + " ---: |" * len(cols)]
    out += [f"| {f} | " + " | ".join(f"{r[k]:.3f}" for _, k in cols) + " |" for f, r in res.items()]
    mean = [float(np.mean([r[k] for r in res.values()])) for _, k in cols]
    return [*out, "| mean | " + " | ".join(f"{v:.3f}" for v in mean) + " |", ""]


def apgr_plot(res: dict[str, dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["random", "prompt length", "lodo tfidf difficulty", "lodo router", "in-domain router",
            "adapted router", "previous router"]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    x = np.arange(len(res))
    wid = 0.8 / len(keys)
    for i, k in enumerate(keys):
        ax.bar(x + i * wid, [r[k] for r in res.values()], wid, label=k)
    ax.set_xticks(x + 0.4 - wid / 2, list(res))
    ax.set(ylabel="validation APGR", ylim=(0.35, 0.8), title="routing quality per file")
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(out / "routing_apgr.png", dpi=110)
    plt.close(fig)


def _quoted(out: Path, name: str, title: str, intro: str, after: Sequence[str] = ()) -> list[str]:
    """A section quoting the tables another command last wrote to ``out / name`` (none if it never ran)."""
    path = out / name
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [f"### {title}", "", intro, "", *lines, "", *((*after, "") if after else ())]


def all_pairs_section(out: Path) -> list[str]:
    """The same comparison over every model pair of each file, as ``all_pairs.py`` last wrote it to ``out``."""
    return _quoted(out, ALL_PAIRS_MD, "Over every model pair of each file",
                   "One pair on a few dozen validation prompts is noisy, so here every pair of each file's models is "
                   "scored (the stronger by mean train score is strong) and the APGRs averaged over pairs; TF-IDF → "
                   "gain is fitted per pair on the file's train labels, as in the table above.", ALL_PAIRS_READING)


def halves_section(out: Path) -> list[str]:
    """Adapting judged over random halves of each file's train split, as ``halves.py`` last wrote it to ``out``."""
    return _quoted(out, HALVES_MD, "Over random halves of each file's train split",
                   "One validation split is one sample; here the same comparison is repeated on other samples of the "
                   "same file, cut from its train split, with the validation split left alone.")


def resplits_section(out: Path) -> list[str]:
    """The same over cuts of each train split at the proportions of its train and validation splits
    (``halves.py --share 0.79``), as last written to ``out``."""
    return _quoted(out, RESPLITS_MD, "Over cuts of each file's train split the size of its train and validation splits",
                   "The halves adapt on half as many labels as the validation table does; here each cut adapts on "
                   "79% of the train split and scores the other 21%: another draw of the split the first table "
                   "scores.")


def report(res: dict[str, dict[str, float]], data_dir: Path, artifact: Path, out: Path, latency: bool,
           carried: list[str] | None = None) -> list[str]:
    md = ["# Routing quality (validation splits)", ""]
    if carried:
        md += ["Carried over from the previous run's results (not refitted in this run): "
               + ", ".join(f"*{c}*" for c in carried) + ". Every other figure is from this run.", ""]
    md += [
          "Generated by `python -m benchmarks.routing_quality` from the five files in the shared data folder: "
          "routers are fitted on train splits only and scored on each file's validation split with the "
          "gate's rule (predicted gain strong − weak where it varies, else difficulty; "
          "`gateway/router/training/metrics.py` = `routing_eval.py`). APGR: random ≈ 0.5.", "",
          "## In-domain and leave-one-domain-out", "",
          "In-domain: one router fitted on all five train splits (the shipped artifact). "
          "Leave-one-domain-out (LODO): fitted on the other four files, so this file's prompts, format and "
          "models are new to it (a pair model it has never seen is scored from difficulty alone). "
          "TF-IDF ridge → difficulty: word uni+bigram TF-IDF ridge onto the router's shared target "
          "(each prompt's mean score, standardised within its file) on the same training rows; "
          "→ pair gain: onto this pair's own strong − weak outcome (in-domain only: LODO has no such labels). "
          "Previous: the router shipped before (MMLU-Pro only).", "",
          *_table(res, [("random", "random"), ("length", "prompt length"),
                        ("TF-IDF → difficulty (LODO)", "lodo tfidf difficulty"), ("**router LODO**", "lodo router"),
                        ("TF-IDF → difficulty", "in-domain tfidf difficulty"),
                        ("TF-IDF → pair gain", "in-domain tfidf gain"), ("previous", "previous router"),
                        ("**router in-domain**", "in-domain router"), ("oracle", "oracle")]),
          "![apgr](routing_apgr.png)", "",
          "### A pair of models the router never saw, over every pair of an unseen file", "",
          "One pair per file is one sample; here the LODO router ranks every pair of the held-out file's models "
          "whose means differ by at least 0.05 (gap-weighted APGR, as `lodo_targets` and the adaptation's "
          "cross-validation score) by what it ranks a pair of unseen models by: its difficulty, half the 1PL "
          "difficulty δ and half the predicted spread between a file's stronger and weaker models "
          "(`train.rank_head`; the mix was chosen on the train splits), beside δ alone and prompt length.", "",
          *_unseen_table(res),
          "## Adapting a router to a new domain (`switchyard train --data FILE --base DIR`)", "",
          "Base: the LODO router for the file (it never saw the file). Adapted with the file's train split "
          "(`gateway/router/training/adapt.py`: a fresh latent with a column per new model, up to 16, beside the "
          "frozen base; each new model's head is one of: the prior (the base's difficulty logit with a slope "
          "and an offset per model), the prior plus a correction on every input under a fixed L2 prior of "
          "total strength τ, length alone, a logit blend of a head on the base's inputs and one on the fresh "
          "latent + length, or the stack of all, chosen by how well it ranks the file's model pairs in 5-fold "
          "cross-validation on the train split with the one-standard-error rule towards the prior: "
          "`blend.py`), scored "
          "on its validation split; against the shipped in-domain router, prompt length, a TF-IDF ridge on "
          "the file's own labels (onto the pair's gain) and retraining from scratch on the file alone. "
          "Forgetting: mean APGR of the other four files' pairs through the base and the adapted router.", "",
          *_table(res, [("base (LODO)", "lodo router"), ("**adapted**", "adapted router"),
                        *([("adapted before", "adapted router (before)")]
                          if all("adapted router (before)" in r for r in res.values()) else []),
                        ("retrained on file alone", "retrained on the file alone"),
                        ("shipped (in-domain)", "in-domain router"), ("length", "prompt length"),
                        ("TF-IDF → gain, file's labels", "tfidf gain, file's labels"),
                        ("others before", "others before adapting"), ("others after", "others after adapting")]),
          "New-domain heads chosen by cross-validation: " + "; ".join(
              f"{f} {r.get('adapted heads', '?')}" for f, r in res.items())
          + " (blend w: (1 - w) base-input head + w fresh-latent head; prior tau τ: prior + correction "
          "under an L2 prior of total strength τ).", "",
          *all_pairs_section(out),
          *halves_section(out),
          *resplits_section(out),
          ]
    md += ["## What was tried", "", "Choosing the shipped model (in-domain APGR):", "", *TRIED, "",
           "Adapting, leave-one-domain-out and an embedding model (validation APGR of each file's pair):", "",
           *TRIED_ADAPTING, "",
           "Targets for a pair the router has never seen (leave-one-domain-out difficulty, feature-level; "
           "chosen by cross-validation over the held-out files' train splits, validation APGR of the named "
           "pairs for the record):", "",
           *TRIED_LODO, "",
           "Also part of the shipped model, not measured one by one: five more structural features "
           "(code blocks, LaTeX, list lines, open-ended writing words, a question-word opener) beside "
           "length, numbers, maths and code markers; rows weighted so each file counts as √n; the "
           "neighbour memory keeps up to 1,000 prompts per file.", ""]
    data = load_many([data_dir / "mmlu_pro.jsonl"])
    val = data.subset(data.split == "validation")
    router = load_router(artifact)
    price_path = data_dir / "mmlu_pro_prices.json"
    prices = json.loads(price_path.read_text()) if price_path.exists() else {}
    if prices and all(m in prices for m in val.models):
        scored = score_data(router, val, progress=False)
        md += ["## Pool frontier (MMLU-Pro, all 28 models, shipped router)", ""]
        md += pool_section(pool_points(val, scored, router, prices), val.models, out)
    if latency:
        md += ["## Cost of the router", "", *latency_section(router, val, artifact)]
    return md
