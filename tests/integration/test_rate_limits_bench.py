"""The rate-limit benchmark runs: every implementation answers, and each check costs something."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("limits")

from benchmarks.rate_limits.__main__ import _measure, run


def test_the_rate_limit_benchmark_measures_every_implementation() -> None:
    rows = asyncio.run(run(30))
    assert set(rows) == {"switchyard", "switchyard (60 full buckets)", "limits-moving", "limits-sliding-counter"}
    for name, row in rows.items():
        assert row["mean_us"] > 0 and row["redis_cpu_us"] > 0, name
        assert row["p50_us"] <= row["p99_us"], name


def test_a_refused_check_stops_the_benchmark_rather_than_being_timed_as_a_full_one() -> None:
    async def refused(_i: int) -> bool:
        return False

    with pytest.raises(SystemExit, match="refused"):
        asyncio.run(_measure(refused, 5, port=0))  # stops at the first check, before Redis is asked
