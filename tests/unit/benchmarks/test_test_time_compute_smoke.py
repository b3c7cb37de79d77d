"""The test-time-compute benchmark runs end to end on a small cut of the recorded data."""

from __future__ import annotations

from pathlib import Path

from benchmarks.test_time_compute import main
from benchmarks.test_time_compute.data import load_rows, replay_cascade, replay_vote

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "ttc_small.jsonl"
MEMBERS = ("Meta-Llama-3.1-8B-Instruct", "mathstral-7B", "Phi-3-mini-4k-instruct")


def test_vote_replay_follows_the_recorded_letters() -> None:
    row = {"reference": "B", "models": {
        "x": {"pred": "A", "cost_usd": 1.0, "score": 0.0}, "y": {"pred": "B", "cost_usd": 1.0, "score": 1.0},
        "z": {"pred": "B", "cost_usd": 2.0, "score": 1.0}, "big": {"pred": "B", "cost_usd": 9.0, "score": 1.0}}}
    vote = replay_vote(row, ("x", "y", "z"))
    assert (vote.score, vote.cost_usd, vote.agreement) == (1.0, 4.0, 2 / 3)
    assert replay_vote(row, ("x", "y")).score == 0.0  # a tie goes to the earliest member
    escalated = replay_cascade(row, ("x", "y", "z"), "big", 1.0)
    assert escalated.escalated and escalated.cost_usd == 13.0


def test_quick_run_writes_the_report_and_plot(tmp_path: Path) -> None:
    assert len(load_rows(FIXTURE)) <= 40
    assert main(["--data", str(FIXTURE), "--out", str(tmp_path), "--quick"]) == 0
    report = (tmp_path / "test_time_compute.md").read_text()
    assert "Policy frontier: with vs without" in report and "member_correlation" in report
    assert (tmp_path / "test_time_compute.png").stat().st_size > 0
    rows = load_rows(FIXTURE, "validation")
    assert all(0 <= replay_vote(r, MEMBERS).score <= 1 for r in rows)
