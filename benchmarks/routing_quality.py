"""How well does the shipped router route? Pair curves, pool frontier and latency.

    python -m benchmarks.routing_quality [--data PATH] [--artifact DIR] [--out DIR]

Scores the validation split of recorded routing data with the router and writes
``routing_quality.md`` plus ``routing_*.png`` to the results folder:
- per pair (weak -> strong): quality vs strong-model share and vs cost, APGR, CPT(50/80%),
  cost share at 95% quality, beside random, prompt-length and oracle baselines;
- the quality-cost frontier over the whole pool: per prompt argmax_m q_m - lam * c_m with
  the router's q and a *predicted* cost, evaluated on realised scores and recorded costs;
- load time of the artifact and assess() latency on ~2,000-token prompts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gateway.router.data import RoutingData, load_data
from gateway.router.evaluate import Scored, eval_pair, pair_rows, rank_score, score_data
from gateway.router.frontier import choose_by_utility, lambda_grid, predicted_cost
from gateway.router.metrics import pair_curve
from gateway.router.model import DEFAULT_ARTIFACT, Router, load_router

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mmlu_pro.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
PAIRS = (
    ("Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"),
    ("Phi-3-mini-4k-instruct", "gemini-1.5-pro-002"),
)
COLS = ("apgr", "cpt50", "cpt80", "cost_share_at_95pct_quality")


def baselines(data: RoutingData, weak: str, strong: str, scored: Scored) -> dict[str, np.ndarray]:
    jw, js = data.col(weak), data.col(strong)
    rng = np.random.default_rng(0)
    oracle = np.nan_to_num(data.score[:, js] - data.score[:, jw]) + rng.random(len(data.ids)) * 1e-6
    return {
        "router (shipped rule)": rank_score(scored, jw, js),
        "router difficulty only": scored.difficulty,
        "random": rng.random(len(data.ids)),
        "prompt length": np.array([len(p) for p in data.prompts], dtype=float),
        "oracle": oracle,
    }


def pair_section(data: RoutingData, scored: Scored, weak: str, strong: str, out: Path, tag: str) -> list[str]:
    import matplotlib.pyplot as plt

    lines = [f"### {weak} → {strong}", "", "| ranking | APGR | CPT(50%) | CPT(80%) | cost share at 95% |",
             "| --- | ---: | ---: | ---: | ---: |"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    jw, js = data.col(weak), data.col(strong)
    ok = pair_rows(data, jw, js)
    for name, score in baselines(data, weak, strong, scored).items():
        m = eval_pair(data, score, weak, strong).as_dict()
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in COLS) + " |")
        cur = pair_curve(score[ok], data.score[ok, jw], data.score[ok, js],
                         np.nan_to_num(data.cost[ok, jw]), np.nan_to_num(data.cost[ok, js]))
        ax1.plot(cur.share, cur.quality, label=name)
        ax2.plot(cur.cost / cur.cost[-1], cur.quality, label=name)
    ax1.set(xlabel=f"share of calls to {strong}", ylabel="accuracy", title=f"{weak} → {strong}")
    ax2.set(xlabel="cost (share of always-strong)", ylabel="accuracy")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"routing_pair_{tag}.png", dpi=110)
    plt.close(fig)
    return [*lines, "", f"![{tag}](routing_pair_{tag}.png)", ""]


def pool_points(data: RoutingData, scored: Scored, router: Router, prices: dict) -> dict[str, np.ndarray]:
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


def long_prompts(data: RoutingData, tokens: int = 2000, count: int = 30) -> list[str]:
    """~`tokens`-token prompts made by concatenating validation prompts (cl100k counts)."""
    out, buf, n = [], [], 0.0
    for p, t in zip(data.prompts, np.nan_to_num(data.prompt_tokens, nan=500.0), strict=True):
        buf.append(p)
        n += t
        if n >= tokens:
            out.append("\n\n".join(buf))
            buf, n = [], 0.0
            if len(out) == count:
                break
    return out


def latency_section(router: Router, data: RoutingData, artifact: Path) -> list[str]:
    cold = []
    for _ in range(5):  # fresh interpreter each time: import + load, what a server start pays
        code = ("import time; t=time.perf_counter(); from gateway.router import load_router; "
                f"load_router({str(artifact)!r}); print(time.perf_counter()-t)")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        cold.append(float(res.stdout.strip()))
    warm = []
    for _ in range(10):
        t = time.perf_counter()
        load_router(artifact)
        warm.append(time.perf_counter() - t)
    prompts = long_prompts(data)
    lat = []
    for _ in range(10):
        for p in prompts:
            t = time.perf_counter()
            router.assess(p)
            lat.append(time.perf_counter() - t)
    ms = np.array(lat) * 1e3
    size = sum(f.stat().st_size for f in artifact.iterdir()) / 1e6
    return [
        f"Artifact `{artifact.name}`: {size:.2f} MB on disk.", "",
        "| measurement | median | spread |", "| --- | ---: | --- |",
        f"| import + load_router, fresh interpreter (5 runs) | {np.median(cold) * 1e3:.0f} ms | "
        f"{min(cold) * 1e3:.0f}–{max(cold) * 1e3:.0f} ms |",
        f"| load_router, warm process (10 runs) | {np.median(warm) * 1e3:.1f} ms | "
        f"{min(warm) * 1e3:.1f}–{max(warm) * 1e3:.1f} ms |",
        f"| assess(), {len(prompts)} prompts of ~2,000 tokens × 10 | p50 {np.median(ms):.2f} ms | "
        f"p90 {np.percentile(ms, 90):.2f}, p99 {np.percentile(ms, 99):.2f}, max {ms.max():.2f} ms |",
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="routing data (shared schema), default %(default)s")
    ap.add_argument("--prices", type=Path, help="prices JSON (default: mmlu_pro_prices.json next to --data)")
    ap.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT,
                    help="router directory, default: the shipped one")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder, default %(default)s")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency section (smoke tests)")
    a = ap.parse_args(argv)
    if not a.data.is_file():
        ap.error(f"routing data not found at {a.data}: pass --data FILE (a JSONL file in the shared data schema)")
    price_path = a.prices or a.data.with_name("mmlu_pro_prices.json")
    prices = json.loads(price_path.read_text()) if price_path.exists() else {}
    data = load_data(a.data)
    val = data.subset(data.split == "validation")
    router = load_router(a.artifact)
    scored = score_data(router, val, progress=True)
    a.out.mkdir(parents=True, exist_ok=True)
    md = ["# Routing quality (validation split)", "",
          f"Data: `{a.data.name}`, {len(val.ids)} validation prompts, {len(val.models)} models. "
          "Generated by `python -m benchmarks.routing_quality`.", "", "## Pairs", ""]
    for i, (w, s) in enumerate(p for p in PAIRS if p[0] in val.models and p[1] in val.models):
        md += pair_section(val, scored, w, s, a.out, ["llama8b_70b", "phi3_geminipro"][i])
    if prices and all(m in prices for m in val.models):
        md += ["## Pool frontier (all models)", ""]
        md += pool_section(pool_points(val, scored, router, prices), val.models, a.out)
    if not a.no_latency:
        md += ["## Latency", "", *latency_section(router, val, a.artifact)]
    (a.out / "routing_quality.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
