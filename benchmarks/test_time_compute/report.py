"""Markdown and PNG for the test-time-compute benchmark."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.test_time_compute.calibrate import Fit
from benchmarks.test_time_compute.frontier import Comparison, Matrices, PolicyPoint, hull, quality_at
from benchmarks.test_time_compute.validate import ArmFit, Scores
from gateway.plans.odds import CALIBRATION


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    name: str
    description: str
    matrices: Matrices
    without: list[PolicyPoint]
    with_ttc: list[PolicyPoint]
    comparison: list[Comparison]
    fits: list[ArmFit]
    scores: Scores


def _u(x: float) -> str:
    return "–" if math.isnan(x) else f"{x * 1e6:.1f}"


def _q(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.4f}"


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def arms_table(s: ScenarioResult) -> list[str]:
    m = s.matrices
    single_hull = hull(
        [(float(m.cost[:, j].mean()), float(m.score[:, j].mean())) for j, a in enumerate(m.arms) if a.kind == "single"]
    )
    lines = ["| arm | kind | quality | cost µ$/prompt | vs singles' hull at that cost |", "|---|---|---:|---:|---:|"]
    order = sorted(range(len(m.arms)), key=lambda j: float(m.cost[:, j].mean()))
    for j in order:
        a, q, c = m.arms[j], float(m.score[:, j].mean()), float(m.cost[:, j].mean())
        ref = quality_at(single_hull, c)
        gap = "–" if a.kind == "single" or math.isnan(ref) else f"{q - ref:+.4f}"
        lines.append(f"| {a.name} | {a.kind} | {q:.4f} | {c * 1e6:.1f} | {gap} |")
    return lines


def comparison_table(s: ScenarioResult) -> list[str]:
    lines = [
        "| mean cost µ$ | quality, singles only | quality, with TTC | Δ quality | "
        "target quality | cost µ$, singles only | cost µ$, with TTC | cost saving |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in s.comparison:
        dq = c.quality_with - c.quality_without
        save = 1 - c.cost_with / c.cost_without if c.cost_without and not math.isnan(c.cost_with) else float("nan")
        lines.append(
            f"| {_u(c.cost_usd)} | {_q(c.quality_without)} | {_q(c.quality_with)} | {dq:+.4f} | "
            f"{c.quality:.4f} | {_u(c.cost_without)} | {_u(c.cost_with)} | {_pct(save)} |"
        )
    return lines


def sweep_table(s: ScenarioResult, every: int = 6) -> list[str]:
    lines = [
        "| value_usd | singles only: quality | cost µ$ | with TTC: quality | cost µ$ | TTC share |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in list(zip(s.without, s.with_ttc, strict=True))[::every]:
        lines.append(
            f"| {a.value_usd:.2g} | {a.quality:.4f} | {_u(a.cost_usd)} | {b.quality:.4f} | "
            f"{_u(b.cost_usd)} | {_pct(b.ttc_share)} |"
        )
    return lines


def fit_tables(fit: Fit, s: ScenarioResult) -> list[str]:
    c, f = CALIBRATION, fit.calibration
    lines = [
        "| constant | in gateway/plans/odds.py | fitted on train now |",
        "|---|---:|---:|",
        f"| member_correlation ρ | {c.member_correlation} | {f.member_correlation} |",
        f"| distractors | {c.distractors} | {f.distractors} |",
        f"| escalation_correlation | {c.escalation_correlation} | {f.escalation_correlation} |",
        f"| same_deployment_correlation (prior) | {c.same_deployment_correlation} | not measurable |",
        f"| judge_keep (prior) | {c.judge_keep} | not measurable |",
        "",
    ]
    sc = s.scores
    lines += [
        f"Brier score of per-prompt P(vote right) on validation ({s.name}, all vote arms pooled): "
        f"calibrated model **{sc.calibrated:.4f}**, earlier guess (mean p̂ + 0.5·independent gain) "
        f"{sc.linear_keep_half:.4f}, best member's p̂ alone {sc.best_member:.4f}.",
        "",
        "| predicted P(vote right), quintile mean | realised | prompts |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {p:.3f} | {r:.3f} | {n} |" for p, r, n in sc.bins]
    lines += [
        "",
        "| arm | predicted quality | realised | predicted cost µ$ | realised | predicted accept | realised |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {a.arm} | {a.predicted_quality:.4f} | {a.realised_quality:.4f} | {_u(a.predicted_cost_usd)} | "
        f"{_u(a.realised_cost_usd)} | {_pct(a.predicted_accept)} | {_pct(a.realised_accept)} |"
        for a in s.fits
    ]
    return lines


def verdict(s: ScenarioResult) -> str:
    gains = [c.quality_with - c.quality_without for c in s.comparison if not math.isnan(c.quality_without)]
    saves = [
        1 - c.cost_with / c.cost_without
        for c in s.comparison
        if c.cost_without and not math.isnan(c.cost_with) and not math.isnan(c.cost_without)
    ]
    if not gains:
        return "no overlapping cost range"
    return (
        f"quality at equal cost: Δ from {min(gains):+.4f} to {max(gains):+.4f} "
        f"(never below: {'yes' if min(gains) >= -5e-4 else 'NO'}); "
        f"cost at equal quality: saving from {_pct(min(saves) if saves else None)} "
        f"to {_pct(max(saves) if saves else None)}"
    )


def plot(results: Sequence[ScenarioResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 5.5), squeeze=False)
    for ax, s in zip(axes[0], results, strict=True):
        m = s.matrices
        for kind, marker, color in (
            ("single", "o", "0.55"),
            ("vote", "^", "tab:green"),
            ("cascade", "s", "tab:purple"),
        ):
            js = [j for j, a in enumerate(m.arms) if a.kind == kind]
            ax.scatter(
                [m.cost[:, j].mean() * 1e6 for j in js],
                [m.score[:, j].mean() for j in js],
                marker=marker,
                color=color,
                label=kind,
                s=28,
                zorder=3,
            )
        for pts, label, color in (
            (s.without, "policy, singles only", "tab:blue"),
            (s.with_ttc, "policy, with votes + cascades", "tab:red"),
        ):
            ax.plot([p.cost_usd * 1e6 for p in pts], [p.quality for p in pts], ".-", color=color, label=label, ms=3)
        ax.set_xscale("log")
        ax.set(xlabel="mean cost per prompt (µ$, log)", ylabel="mean score (validation)", title=s.description)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
