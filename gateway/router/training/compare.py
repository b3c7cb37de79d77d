"""`switchyard router evaluate`: a candidate router against the serving one, on labelled data.

Both routers score the same prompts; each weak→strong pair is ranked and measured exactly as
`evaluate.py` and `metrics.py` do for training reports and benchmarks (the definitions of the
routing gate: APGR, CPT(50%), CPT(80%), cost share at 95% quality). Added here, for a policy's
target:

- at a share `s` to the strong model (`target: {strong_share: s}`): the share of the quality gap
  recovered (PGR) and the cost, as a share of always-strong;
- for a quality target `q` (`target: {quality: q}`): the smallest share to strong whose quality
  reaches `q` × always-strong's;
- at a threshold `t` on the router's score (its predicted gain of strong over weak): the share of
  prompts at or above it, and the PGR there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, NotRequired, TypedDict, cast

import numpy as np

from gateway.router.arrays import F64, Bools, Floats
from gateway.router.model import Router
from gateway.router.training.data import RoutingData
from gateway.router.training.evaluate import pair_rows, rank_score, score_data
from gateway.router.training.metrics import PairCurve, pair_curve, pair_metrics, pgr


@dataclass(frozen=True)
class Targets:
    strong_share: float = 0.3
    quality: float = 0.95
    threshold: float | None = None


class SharePoint(TypedDict):
    strong_share: float
    pgr: float
    quality: float
    cost_share: float


class PairReport(TypedDict):
    """``PairMetrics.as_dict()`` plus the points a policy's target names."""

    n: int
    q_weak: float
    q_strong: float
    apgr: float
    cpt50: float
    cpt80: float
    cost_share_at_95pct_quality: float
    best_quality: float
    costs_recorded: bool
    at_share: SharePoint
    share_for_quality: float
    at_threshold: NotRequired[SharePoint]


# {"weak->strong": {router label: report}}
Reports = dict[str, dict[str, PairReport]]


class TargetsDict(TypedDict):
    """``asdict(Targets)``."""

    strong_share: float
    quality: float
    threshold: float | None


class Comparison(TypedDict):
    data: str
    split: str
    n: int
    candidate: dict[str, str]  # version, source
    serving: dict[str, str]
    targets: TargetsDict
    pairs: Reports


def share_point(curve: PairCurve, share: float) -> SharePoint:
    """PGR, quality and cost share when the `share` hardest prompts go to the strong model."""
    n = len(curve.share) - 1
    k = min(n, max(0, round(share * n)))
    c_strong = curve.cost[-1] or 1.0
    return {"strong_share": round(float(curve.share[k]), 4), "pgr": round(float(pgr(curve)[k]), 4),
            "quality": round(float(curve.quality[k]), 4), "cost_share": round(float(curve.cost[k] / c_strong), 4)}


def share_for_quality(curve: PairCurve, frac: float) -> float:
    """The smallest strong-call share whose quality reaches `frac` of always-strong (1.0 if none)."""
    hit = np.nonzero(curve.quality >= frac * curve.quality[-1])[0]
    return round(float(curve.share[hit[0]]), 4) if hit.size else 1.0


def pair_costs(data: RoutingData, ok: Bools, weak: int, strong: int) -> tuple[F64, F64]:
    """The pair's recorded costs, or zeros for both unless every prompt records both. A cost missing on
    one side (a gateway export has none for its shadow reference) read as free made always-strong's
    cost the rounding left from sums that cancel, and every cost share, divided by it, ±1e14."""
    c_weak, c_strong = data.cost[ok, weak], data.cost[ok, strong]
    if np.isnan(c_weak).any() or np.isnan(c_strong).any():
        return np.zeros_like(c_weak), np.zeros_like(c_strong)
    return c_weak, c_strong


def pair_report(score: Floats, data: RoutingData, weak: str, strong: str, targets: Targets) -> PairReport:
    jw, js = data.col(weak), data.col(strong)
    ok = pair_rows(data, jw, js)
    args = (score[ok], data.score[ok, jw], data.score[ok, js], *pair_costs(data, ok, jw, js))
    curve = pair_curve(*args)
    # as_dict() holds PairReport's metric keys (PairMetrics' fields); the rest are added here.
    out = cast(PairReport, {
        **pair_metrics(*args).as_dict(),
        "costs_recorded": bool(np.any(args[3] > 0) or np.any(args[4] > 0)),  # else cost shares read 0
        "at_share": share_point(curve, targets.strong_share),
        "share_for_quality": share_for_quality(curve, targets.quality),
    })
    if targets.threshold is not None and len(args[0]):
        out["at_threshold"] = share_point(curve, float(np.mean(args[0] >= targets.threshold)))
    return out


def compare(routers: dict[str, Router], data: RoutingData, pairs: Sequence[tuple[str, str]], targets: Targets,
            progress: bool = True) -> Reports:
    """{"weak->strong": {router label: report}} for every router on the same prompts."""
    reports: Reports = {f"{w}->{s}": {} for w, s in pairs}
    for label, router in routers.items():
        scored = score_data(router, data, progress)
        for weak, strong in pairs:
            score = rank_score(scored, data.col(weak), data.col(strong))
            reports[f"{weak}->{strong}"][label] = pair_report(score, data, weak, strong, targets)
    return reports


_Metric = Literal["apgr", "cpt50", "cpt80", "cost_share_at_95pct_quality"]
_ROWS: tuple[tuple[str, _Metric], ...] = (("APGR", "apgr"), ("CPT(50%)", "cpt50"), ("CPT(80%)", "cpt80"),
                                          ("cost share at 95% quality", "cost_share_at_95pct_quality"))
_HIGHER_IS_BETTER = {"apgr", "at_share.pgr", "at_threshold.pgr"}
_LOWER_IS_BETTER = {"cpt50", "cpt80", "cost_share_at_95pct_quality", "at_share.cost_share", "share_for_quality"}


def _rows(report: PairReport, targets: Targets) -> list[tuple[str, str, float]]:
    rows: list[tuple[str, str, float]] = [(label, key, float(report[key])) for label, key in _ROWS]
    rows.append((f"PGR at {targets.strong_share:.0%} to strong", "at_share.pgr", report["at_share"]["pgr"]))
    rows.append((f"cost share at {targets.strong_share:.0%} to strong", "at_share.cost_share",
                 report["at_share"]["cost_share"]))
    rows.append((f"share to strong for {targets.quality:.0%} quality", "share_for_quality",
                 float(report["share_for_quality"])))
    if "at_threshold" in report:
        rows.append((f"share to strong at score >= {targets.threshold:g}", "at_threshold.strong_share",
                     report["at_threshold"]["strong_share"]))
        rows.append((f"PGR at score >= {targets.threshold:g}", "at_threshold.pgr", report["at_threshold"]["pgr"]))
    return rows


def render(result: Comparison) -> str:
    """The comparison as a table per pair: candidate, serving, and the difference."""
    cand, serv = result["candidate"]["version"], result["serving"]["version"]
    targets = Targets(**result["targets"])
    lines = [f"data: {result['data']} ({result['split']}, {result['n']} prompts)",
             f"candidate: {cand}   serving: {serv} ({result['serving']['source']})"]
    for pair, by_router in result["pairs"].items():
        c, s = by_router["candidate"], by_router["serving"]
        lines += ["", f"{pair}  ({c['n']} prompts with both outcomes; weak {c['q_weak']:.4f}, "
                      f"strong {c['q_strong']:.4f})",
                  f"  {'':<36}{'candidate':>10}{'serving':>10}{'change':>9}"]
        for (label, key, cv), (_, _, sv) in zip(_rows(c, targets), _rows(s, targets), strict=True):
            # Marked both ways: a regression left unmarked read, beside a marked gain, as no change
            better = (key in _LOWER_IS_BETTER and cv < sv) or (key in _HIGHER_IS_BETTER and cv > sv)
            worse = (key in _LOWER_IS_BETTER and cv > sv) or (key in _HIGHER_IS_BETTER and cv < sv)
            mark = " better" if better else " worse" if worse else ""
            lines.append(f"  {label:<36}{cv:>10.4f}{sv:>10.4f}{cv - sv:>+9.4f}{mark}")
        if not c["costs_recorded"]:
            lines.append("  (the data does not record both models' costs for every prompt of this pair: "
                         "cost shares read 0)")
    return "\n".join(lines)


def result_json(data_path: str, split: str, n: int, candidate: dict[str, str], serving: dict[str, str],
                targets: Targets, pairs: Reports) -> Comparison:
    return {"data": data_path, "split": split, "n": n, "candidate": candidate, "serving": serving,
            "targets": cast(TargetsDict, asdict(targets)), "pairs": pairs}
