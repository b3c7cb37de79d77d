"""Smoke test for benchmarks/overhead/: its smallest path runs end to end and writes a report.

Needs the Debian packages wrk, nginx and libnginx-mod-http-lua (the upstream); skipped, with the
reason, where they are missing. Runs direct vs the aiohttp passthrough for about ten seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.overhead import cli, loadgen, nginx

MISSING = loadgen.missing(fixed_rate=False) or nginx.missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"overhead benchmark cannot run: {MISSING}")


def test_passthrough_overhead_is_measured_against_direct(tmp_path: Path) -> None:
    out = tmp_path / "overhead.md"
    settings = cli.parse_args([
        "--quick", "--targets", "direct,passthrough-aiohttp", "--connections", "8", "--rates", "",
        "--no-throughput", "--nice", "0", "--out", str(out), "--workdir", str(tmp_path / "work"),
    ])  # fmt: skip

    results = cli.run(settings)

    records = [r for r in results["records"] if "error" not in r]
    assert {(r["target"], r["kind"]) for r in records} == {
        ("direct", "wrk"), ("passthrough-aiohttp", "wrk"), ("direct", "ttfb"), ("passthrough-aiohttp", "ttfb"),
    }  # fmt: skip
    for record in records:
        assert record["errors"] == 0 and record["requests"] > 0
        # the upstream's 50 ms delay is in every answer (less the ~1 ms an event loop's timer may fire early)
        assert record["p50"] >= 49.0
    assert all("cpu_s_per_1k" in r for r in records)
    report = out.read_text()
    assert "## Targets" in report and "passthrough-aiohttp" in report
    assert "not measured" in report  # switchyard was not asked for, and the report says so
    assert not results["skipped"]
