"""The benchmark's run: fit, replay, compare, write the report (see the package's docstring).

Fits the vote/cascade answer model of `gateway.plans.odds` on the train split, then on the
validation split replays every single model, several votes and cascades, and the policy (max
value_usd·q̂ − ĉ per prompt, with the real estimator) with and without the test-time-compute plans.
Writes benchmarks/results/test_time_compute.md and test_time_compute.png.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks.progress import count, missing, phase
from benchmarks.test_time_compute.calibrate import Fit, fit
from benchmarks.test_time_compute.data import DEFAULT_DATA, Row, has_models, load_prices, load_rows
from benchmarks.test_time_compute.frontier import VALUES_USD, build_matrices, compare, sweep
from benchmarks.test_time_compute.plans import (
    FLASH_SET,
    LLAMA70,
    PRO,
    SMALL,
    VOTE_SETS,
    Arm,
    assess_rows,
    build_catalog,
    singles,
    ttc_arms,
)
from benchmarks.test_time_compute.report import (
    ScenarioResult,
    arms_table,
    comparison_table,
    fit_tables,
    plot,
    sweep_table,
    verdict,
)
from benchmarks.test_time_compute.validate import arm_fits, vote_scores
from gateway.plans.odds import CALIBRATION
from gateway.policy.estimate import Catalog
from gateway.router import load_router
from gateway.signal import RouteSignal

RESULTS = Path(__file__).resolve().parents[1] / "results"
FIT_CASCADES = [
    (VOTE_SETS["v3-math"], LLAMA70, 0.6),
    (VOTE_SETS["v3-math"], LLAMA70, 1.0),
    (VOTE_SETS["v5"], LLAMA70, 0.8),
    (FLASH_SET, PRO, 1.0),
]


def scenario(
    name: str,
    description: str,
    arms: list[Arm],
    rows: Sequence[Row],
    signals: Sequence[RouteSignal],
    catalog: Catalog,
    values: Sequence[float],
) -> ScenarioResult:
    needed = {m for a in arms for m in a.models}
    keep = [i for i, r in enumerate(rows) if has_models(r, sorted(needed))]
    rows_k, sig_k = [rows[i] for i in keep], [signals[i] for i in keep]
    m = build_matrices(arms, rows_k, sig_k, catalog)
    single_cols = [j for j, a in enumerate(arms) if a.kind == "single"]
    without, with_ttc = sweep(m, single_cols, values), sweep(m, range(len(arms)), values)
    desc = f"{description} ({len(rows_k)} prompts)"
    return ScenarioResult(
        name, desc, m, without, with_ttc, compare(without, with_ttc), arm_fits(m, sig_k), vote_scores(m, sig_k)
    )


NOTES = [
    "## Notes",
    "",
    "- The model: members right with their router p̂, mixed between independence (weight 1−ρ) and one shared "
    "draw (weight ρ: the weaker members are wrong first); wrong answers split over `distractors` options; ties "
    "to the earliest member. Escalated prompts are harder: P(right | reached with prob e) mixes p with "
    "max(0, p+e−1)/e by `escalation_correlation`. Fitted on train by least squares (closed form in each ρ).",
    "- The router's p̂ on train is in-sample (it was trained there), so it is sharper than on validation; the "
    "validation tables above are the honest check.",
    "- The data has one answer per model, so votes are across different models. Samples of one deployment "
    "(`best_of: {deployment: x, n: 3}`, `cascade` agreement steps) are not measurable here: their correlation "
    "is a prior (0.8), as is `judge_keep`.",
    "- Cascades whose agreement step asks several different models are estimated with "
    "`gateway.plans.cascade.estimate_cascade`; the `Cascade` plan can only sample one deployment "
    "`samples` times, so a policy cannot express them yet (needs a member list on `Cascade`).",
    "- The executor accepts when agreement ≥ threshold with agreement = top/n: with 3 samples a threshold "
    "of 0.6 (the default) accepts two of three and 0.7 or more needs all three.",
]


def render(results: list[ScenarioResult], fitted: Fit, args: argparse.Namespace, n_train: int) -> str:
    lines = [
        "# Test-time compute: votes and agreement cascades vs single models",
        "",
        f"`python -m benchmarks.test_time_compute{' --quick' if args.quick else ''}` — data `{args.data.name}`; "
        f"calibration fitted on {n_train} train prompts, everything below on the validation split. "
        "Quality = mean recorded score; cost = mean of the recorded `cost_usd` of every call made. "
        "The policy picks, per prompt, the plan with max `value_usd·q̂ − ĉ` using the gateway's real "
        "estimator (`gateway.policy.estimate`) on the router's q̂; frontiers are the upper convex hulls "
        "of the policy's points over value_usd (mixing neighbouring settings reaches the segments).",
        "",
    ]
    for s in results:
        lines += [
            f"## {s.description}",
            "",
            f"**Verdict:** {verdict(s)}.",
            "",
            "### Policy frontier: with vs without",
            "",
            *comparison_table(s),
            "",
            "### Policy sweep (every 6th value_usd)",
            "",
            *sweep_table(s),
            "",
            "### Every plan on its own",
            "",
            *arms_table(s),
            "",
        ]
    lines += ["## Calibration (fitted on train, checked on validation)", "", *fit_tables(fitted, results[-1]), ""]
    if results[0].fits:
        lines += [
            f"Same check on {results[0].name}:",
            "",
            *fit_tables(fitted, results[0])[-len(results[0].fits) - 2 :],
            "",
        ]
    return "\n".join(lines + NOTES) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.test_time_compute", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Does test-time compute (votes across small models, agreement cascades) pay on recorded outcomes?")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="mmlu_pro.jsonl (prices file beside it)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for test_time_compute.md/.png")
    p.add_argument("--fit-rows", type=count, default=4000, help="train prompts used for the calibration fit")
    p.add_argument("--quick", action="store_true", help="tiny run (smoke test): few prompts, coarse sweep")
    args = p.parse_args(argv)
    if not args.data.is_file():
        missing(p.prog, f"no routing data at {args.data}"
                + ("" if args.data.parent.is_dir() else f" (no folder {args.data.parent})")
                + ": pass --data FILE (a JSONL file in the shared data schema)")
    phase(f"reading {args.data} and the shipped router")
    router = load_router()
    train, val = load_rows(args.data, "train"), load_rows(args.data, "validation")
    if not train or not val:  # else a traceback from numpy, after fitting on nothing
        missing(p.prog, f"{args.data} has {len(train)} train and {len(val)} validation rows; the benchmark fits on "
                        "the first and measures on the second: pass --data FILE with both (e.g. mmlu_pro.jsonl)")
    prices = load_prices(args.data, train + val)
    if args.quick:
        train, val = train[:40], val[:40]
    train = train[:: max(1, len(train) // args.fit_rows)]
    models = [m for m in router.known_profiles() if m in prices]
    catalog = build_catalog(models, prices, router)
    phase(f"assessing {len(train)} train prompts and fitting the calibration")
    fitted = fit(
        train, assess_rows(router, train, models, "train"), [*VOTE_SETS.values(), FLASH_SET], FIT_CASCADES, CALIBRATION
    )
    phase(f"assessing {len(val)} validation prompts")
    signals = assess_rows(router, val, models, "validation")
    values = VALUES_USD[::6] if args.quick else VALUES_USD
    open_pool = singles((*SMALL, LLAMA70)) + ttc_arms(with_gemini=False)
    full_pool = singles(models) + ttc_arms(with_gemini=True)
    phase(f"sweeping {len(values)} values of a correct answer over two pools of plans")
    results = [
        scenario("open-weights pool", "8 small open models + Llama-3.1-70B", open_pool, val, signals, catalog, values),
        scenario("full pool", f"all {len(models)} models", full_pool, val, signals, catalog, values),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "test_time_compute.md").write_text(render(results, fitted, args, len(train)))
    plot(results, args.out / "test_time_compute.png")
    for s in results:
        print(f"{s.name}: {verdict(s)}")
    print(f"fitted {fitted.calibration}\nwrote {args.out / 'test_time_compute.md'}")
    return 0
