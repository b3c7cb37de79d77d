"""`switchyard router evaluate`'s numbers follow the routing gate's curve."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from gateway.router.training.compare import Targets, pair_report, share_for_quality, share_point
from gateway.router.training.data import load_data
from gateway.router.training.evaluate import eval_pair, pick_pairs
from gateway.router.training.metrics import pair_curve, pgr

GATE = Path(__file__).resolve().parents[4] / "shared" / "gates" / "routing_eval.py"


def test_target_points_read_the_same_curve_as_the_gate_metrics(small_data: Path) -> None:
    rng = np.random.default_rng(0)
    qw = (rng.random(200) < 0.4).astype(float)
    qs = np.maximum(qw, (rng.random(200) < 0.7).astype(float))
    score = qs - qw + rng.normal(0, 0.5, 200)
    curve = pair_curve(score, qw, qs, np.ones(200), np.full(200, 4.0))
    at = share_point(curve, 0.3)
    assert at["strong_share"] == 0.3 and at["pgr"] == pytest.approx(pgr(curve)[60], abs=1e-4)
    assert at["cost_share"] == pytest.approx((140 + 60 * 4) / 800, abs=1e-4)
    needed = share_for_quality(curve, 0.95)
    k = round(needed * 200)
    assert curve.quality[k] >= 0.95 * curve.quality[-1] > curve.quality[k - 1]

    data = load_data(small_data)
    weak, strong = "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"
    by_length = np.array([len(p) for p in data.prompts], dtype=float)
    report = pair_report(by_length, data, weak, strong, Targets(threshold=float(np.median(by_length))))
    assert {k: report[k] for k in eval_pair(data, by_length, weak, strong).as_dict()} == \
        eval_pair(data, by_length, weak, strong).as_dict()
    assert report["at_threshold"]["strong_share"] == pytest.approx(0.5, abs=0.05)


def test_a_pair_whose_strong_model_has_no_recorded_costs_has_no_cost_shares(tmp_path: Path) -> None:
    """A gateway export records the small model's cost and none for the shadow's reference: the cost
    shares were the small model's costs over rounding left from sums that cancel (-5e14)."""
    rows = [{"id": f"r{i}", "prompt": f"question {i}", "models": {
        "small": {"score": float(i % 2), "cost_usd": 2.79e-05 + i * 1e-7}, "large": {"score": 1.0}}}
        for i in range(43)]
    src = tmp_path / "traffic.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_data(src)
    report = pair_report(np.arange(43, dtype=float), data, "small", "large", Targets())
    assert not report["costs_recorded"]
    assert report["cost_share_at_95pct_quality"] == 0.0 and report["at_share"]["cost_share"] == 0.0


def test_the_pair_picked_for_a_file_without_known_pairs_has_scores_on_both_sides(tmp_path: Path) -> None:
    """A model whose scores are all null averaged NaN, sorted last, and was picked as the strong one."""
    src = tmp_path / "labels.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": f"q {i}", "models": {
        "a": {"score": i % 2}, "b": {"score": 1.0}, "c": {"score": None}}}) + "\n" for i in range(20)))
    assert pick_pairs(load_data(src)) == [("a", "b")]
    src.write_text("".join(json.dumps({"id": i, "prompt": f"q {i}", "models": {
        "a": {"score": 1.0}, "c": {"score": None}}}) + "\n" for i in range(20)))
    assert pick_pairs(load_data(src)) == []


@pytest.mark.skipif(not GATE.exists(), reason="the shared gate script is not present")
def test_pair_metrics_match_the_gate_on_recorded_data(small_data: Path) -> None:
    spec = importlib.util.spec_from_file_location("routing_eval", GATE)
    assert spec and spec.loader
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    data = load_data(small_data)
    weak, strong = "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"
    rows = [r for r in gate.load(small_data) if weak in r["models"] and strong in r["models"]]
    by_length = np.array([len(p) for p in data.prompts], dtype=float)
    ours = pair_report(by_length, data, weak, strong, Targets())
    theirs = gate.metrics(rows, {r["id"]: len(r["prompt"]) for r in rows}, weak, strong)
    for key in ("apgr", "cpt50", "cpt80", "cost_share_at_95pct_quality", "q_weak", "q_strong"):
        assert ours[key] == theirs[key], key


def test_evaluate_measures_at_the_target_a_policy_states(tmp_path: Path) -> None:
    from gateway.config import embedded_config
    from gateway.router.admin import policy_targets

    pair = "candidates: [{single: small}, {single: large}]\n"  # read as the gateway reads it: a whole policy
    (tmp_path / "thrifty.yaml").write_text("name: thrifty\ntarget: {strong_share: 0.2}\n" + pair)
    (tmp_path / "careful.yaml").write_text("name: careful\ntarget: {quality: 0.9}\n" + pair)
    (tmp_path / "plain.yaml").write_text("name: plain\nobjective: {value_usd: 1.0}\n" + pair)
    (tmp_path / "spend.yaml").write_text("target: {usd_per_1k_requests: 0.5}\n" + pair)
    config = embedded_config("http://127.0.0.1:9/v1").model_copy(update={"policies_dir": str(tmp_path)})
    base = Targets(threshold=0.1)
    assert policy_targets("thrifty", config, base) == (Targets(0.2, 0.95, 0.1), None)
    assert policy_targets("careful", config, base) == (Targets(0.3, 0.9, 0.1), None)
    same, note = policy_targets("plain", config, base)
    assert same == base and note is not None and "no target" in note
    same, note = policy_targets("spend", config, base)
    assert same == base and note is not None and "usd_per_1k_requests is not a share or a quality" in note


def test_the_comparison_marks_a_regression_as_it_marks_a_gain(small_data: Path) -> None:
    # Only gains were marked: a candidate worse on a figure showed it unmarked, as though nothing changed.
    from gateway.router.training.compare import render, result_json

    data = load_data(small_data)
    weak, strong = "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"
    targets = Targets(threshold=0.0)
    oracle = np.nan_to_num(data.score[:, data.col(strong)] - data.score[:, data.col(weak)])
    good = pair_report(oracle, data, weak, strong, targets)
    bad = pair_report(-oracle, data, weak, strong, targets)
    pairs = {f"{weak} -> {strong}": {"candidate": bad, "serving": good}}
    text = render(result_json(str(small_data), "validation", len(data.ids), {"version": "c"},
                              {"version": "s", "source": "shipped"}, targets, pairs))
    apgr = next(line for line in text.splitlines() if line.strip().startswith("APGR"))
    assert apgr.endswith(" worse"), text
