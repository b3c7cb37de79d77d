"""The routing-quality benchmark runs end to end on a 30-row cut of each data file."""

from __future__ import annotations

from tests.unit.benchmarks.conftest import RoutingRun


def test_benchmark_smoke_run_writes_the_report(routing_run: RoutingRun) -> None:
    text = (routing_run.out / "routing_quality.md").read_text()
    assert "leave-one-domain-out" in text and "Adapting a router" in text
    assert (routing_run.out / "routing_apgr.png").stat().st_size > 0
