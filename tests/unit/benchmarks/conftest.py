"""One run of the routing-quality benchmark on the 30-row cut of each data file, shared by the
tests that read its report and by the all-pairs tables, which reuse its ten fitted routers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.routing_quality.run import main as run_benchmark

SMALL = Path(__file__).resolve().parents[2] / "fixtures" / "routing_small"


@dataclass(frozen=True)
class RoutingRun:
    out: Path   # the report and plots
    work: Path  # the fitted routers, by tag


@pytest.fixture(scope="session")
def routing_run(tmp_path_factory: pytest.TempPathFactory) -> RoutingRun:
    root = tmp_path_factory.mktemp("routing_quality")
    run = RoutingRun(root / "results", root / "fits")
    run_benchmark(["--data-dir", str(SMALL), "--work", str(run.work), "--out", str(run.out), "--no-latency"])
    return run
