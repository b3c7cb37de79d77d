"""The routing-quality benchmark and its all-pairs tables run end to end on a 30-row cut of each data file
(one module: under pytest-xdist both tests share one worker, so the ten routers are fitted once)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.routing_quality.all_pairs import main
from benchmarks.routing_quality.files import ALL_PAIRS_MD
from benchmarks.routing_quality.report import all_pairs_section
from tests.unit.benchmarks.conftest import SMALL, RoutingRun


def test_benchmark_smoke_run_writes_the_report(routing_run: RoutingRun) -> None:
    text = (routing_run.out / "routing_quality.md").read_text()
    assert "leave-one-domain-out" in text and "Adapting a router" in text
    assert (routing_run.out / "routing_apgr.png").stat().st_size > 0


def test_all_pairs_writes_both_tables_and_the_report_quotes_them(routing_run: RoutingRun, tmp_path: Path) -> None:
    out = tmp_path / ALL_PAIRS_MD
    # the benchmark's own ten fits, reused as `--work DIR --reuse` does
    main(["--data-dir", str(SMALL), "--work", str(routing_run.work), "--reuse", "--resamples", "20", "--out", str(out)])
    text = out.read_text()
    assert text.count("| arena_chat | 8 |") == 2  # all pairs, then the pairs the adaptation's CV judges
    assert "python -m benchmarks.routing_quality.all_pairs" in text
    section = all_pairs_section(tmp_path)
    assert section[0].startswith("### Over every model pair") and "| arena_chat | 8 |" in "\n".join(section)
    assert all_pairs_section(tmp_path / "nowhere") == []
