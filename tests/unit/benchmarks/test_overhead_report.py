"""The overhead report summarises rounds within themselves and checks the targets from them (no I/O)."""

from __future__ import annotations

from typing import Any

from benchmarks.overhead.flame import svg
from benchmarks.overhead.report import render
from benchmarks.overhead.stats import Summary


def _record(target: str, rnd: int, p50: float, rps: float = 0.0, phase: str = "latency") -> dict[str, Any]:
    step = "50 ms upstream c=8" if phase == "latency" else "instant upstream c=16"
    return {"phase": phase, "kind": "wrk", "step": step, "target": target, "round": rnd, "connections": 8,
            "requests": 100, "errors": 0, "p50": p50, "p90": p50, "p99": p50 + 1, "rps": rps,
            "cpu_s_per_1k": 1.0}  # fmt: skip


def _results() -> dict[str, Any]:
    records = []
    for rnd, drift in enumerate((0.0, 5.0)):  # the second round runs on a slower machine for everyone
        records += [_record("direct", rnd, 50 + drift), _record("passthrough-aiohttp", rnd, 50.5 + drift),
                    _record("switchyard-auto", rnd, 52 + drift)]  # fmt: skip
        records += [_record("passthrough-aiohttp", rnd, 5, 2000 - 500 * rnd, "throughput"),
                    _record("switchyard-auto", rnd, 5, 1100 - 275 * rnd, "throughput")]  # fmt: skip
    meta = {"command": "python -m benchmarks.overhead", "date": "today", "machine": "m", "python": "3.11",
            "settings": {"rounds": 2, "duration": 1, "ladder_duration": 1, "ladder": [16], "delay_ms": 50,
                         "targets": ["direct", "passthrough-aiohttp", "switchyard-auto"]},
            "cores": {"load_generator_and_upstream": "0", "server_under_test": "1"},
            "tools": {}, "packages": {}}  # fmt: skip
    return {"records": records, "meta": meta}


def test_added_latency_is_taken_within_each_round() -> None:
    s = Summary(_results())
    assert s.added("latency", "50 ms upstream c=8", "switchyard-auto", "p50") == {0: 2.0, 1: 2.0}


def test_report_states_each_target_with_its_verdict() -> None:
    report = render(_results())
    assert "## Targets" in report
    assert "0.55×" in report  # 1100/2000 and 825/1500, the same ratio in both rounds
    assert "2.00 ms" in report and "PASS" in report  # added p50 at 8 connections, against 2 ms
    assert "CPU ≤ 0.6 ms per request" in report and "streaming TTFB added p50 ≤ 2 ms" in report


def test_a_flame_graph_box_is_as_wide_as_its_share_of_the_samples() -> None:
    picture = svg(["main;route;assess 3", "main;route 1", "main;log 4"], "test")
    assert picture.startswith("<svg") and "(8 samples)" in picture
    assert 'width="600.0"' in picture  # main;log: half of the samples, half of 1200 px
    assert "assess (37.5%)" in picture and "route (50.0%)" in picture
