"""The routing-quality benchmark, its all-pairs tables and its halves run end to end on a 30-row cut of each data file
(one module: under pytest-xdist the tests share one worker, so the ten routers are fitted once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.routing_quality.all_pairs import main
from benchmarks.routing_quality.files import ALL_PAIRS_MD, HALVES_MD, RESPLITS_MD
from benchmarks.routing_quality.halves import main as halves
from benchmarks.routing_quality.report import all_pairs_section, halves_section, resplits_section
from benchmarks.routing_quality.seeds import main as seeds
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


def test_halves_adapt_on_one_half_of_the_train_split_and_the_report_quotes_them(
        routing_run: RoutingRun, tmp_path: Path) -> None:
    out = tmp_path / HALVES_MD
    halves(["--data-dir", str(SMALL), "--work", str(routing_run.work), "--reuse", "--halves", "2",
            "--files", "arena_chat", "theoremqa_stem", "--out", str(out)])
    text = out.read_text()
    assert text.count("| arena_chat | 2 |") == 2 and text.count("| theoremqa_stem | 2 |") == 2
    assert "`python -m benchmarks.routing_quality.halves --files arena_chat theoremqa_stem --halves 2 --work DIR " \
        "--reuse`" in text  # the command that reproduces it, as it was run
    section = halves_section(tmp_path)
    assert section[0].startswith("### Over random halves") and "| theoremqa_stem | 2 |" in "\n".join(section)
    assert halves_section(tmp_path / "nowhere") == []


def test_cuts_at_the_proportions_of_train_and_validation_are_reported_beside_the_halves(
        routing_run: RoutingRun, tmp_path: Path) -> None:
    out = tmp_path / RESPLITS_MD
    halves(["--data-dir", str(SMALL), "--work", str(routing_run.work), "--reuse", "--halves", "2", "--share", "0.79",
            "--files", "arena_chat", "--out", str(out)])
    text = out.read_text()
    assert "adapted on 79% of it, scored on the rest" in text and text.count("| arena_chat | 2 |") == 2
    assert "--halves 2 --share 0.79 --work DIR --reuse`" in text
    section = resplits_section(tmp_path)
    assert section[0].startswith("### Over cuts of each file's train split")
    assert "| arena_chat | 2 |" in "\n".join(section)
    assert resplits_section(tmp_path / "nowhere") == []
    with pytest.raises(SystemExit):  # nothing left to score
        halves(["--data-dir", str(SMALL), "--share", "0.99", "--out", str(out)])


def test_seeds_refit_the_in_domain_router_and_report_the_spread(routing_run: RoutingRun, tmp_path: Path) -> None:
    out = tmp_path / "seeds.md"
    seeds(["--data-dir", str(SMALL), "--work", str(routing_run.work), "--reuse", "--seeds", "2", "--out", str(out)])
    text = out.read_text()
    # seed 0 is the benchmark's own in-domain fit (reused); seed 1 refitted twice: whole, memory alone
    assert (routing_run.work / "in_domain_seed1" / "router.npz").exists()
    assert (routing_run.work / "in_domain_memory1" / "router.npz").exists()
    assert text.count("| mmlu_pro") == 2 and "| seed 0 (shipped) | seed 1 |" in text
    assert "| memory 0 (shipped) | memory 1 |" in text
    assert "`python -m benchmarks.routing_quality.seeds --seeds 2 --work DIR --reuse`" in text
    with pytest.raises(SystemExit):
        seeds(["--data-dir", str(SMALL), "--seeds", "1", "--out", str(out)])
