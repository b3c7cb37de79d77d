"""The fault soak, short: 400 requests through a faulted deployment and a Redis outage.

Holds the properties the full soak reports on: no client-visible failure (a healthy fallback
exists for every request), every upstream call the simulator served billed exactly once in the
ledger, the gateway's memory flat, and hedging cutting the slow tail.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.fault_soak import SoakSettings, run_soak
from benchmarks.fault_soak.load import percentile
from benchmarks.fault_soak.soak import SLOW_TAIL

pytestmark = pytest.mark.soak


def test_a_short_soak_fails_nothing_a_fallback_could_save_and_bills_every_call_once() -> None:
    report = asyncio.run(run_soak(SoakSettings(requests=400, baseline_requests=60, hedge_requests=80,
                                               latency_requests=40, outage_s=2.0, warmup_requests=40)))
    assert report.outage["down_s"] >= 2.0
    phases = (report.baseline, report.unhedged, report.hedged, report.calm, report.troubled, report.faulted)
    # Every call the simulator served is billed once, faults and the Redis outage included. Calls the
    # gateway gave up on are read on and billed if they answer, so however late the gateway's loop
    # reads them (a loaded machine), none is lost.
    for phase in phases:
        assert phase.billing.exact, (phase.name, phase.billing)
    # A healthy fallback exists for every request: nothing fails, not even a stream that broke after
    # its first tokens (it resumes on the fallback).
    for phase in phases:
        assert not phase.run.failures(), (phase.name, phase.run.failures())
    faults = report.faulted.billing.faults
    assert faults.get("drop_stream", 0) + faults.get("malformed", 0) > 0  # streams did break
    assert report.rss_after_mb <= report.rss_before_mb * 1.10
    assert report.hedged.billing.billed.get("backup", 0) > 0  # hedges went out and won
    # Slow faults hit the hedged arm too, yet its tail stays under their delay: the hedge answered instead.
    assert report.hedged.billing.faults.get("slow", 0) > 0
    assert percentile(report.hedged.run.latencies(), 0.99) < SLOW_TAIL[0]["delay_ms"] / 1000
