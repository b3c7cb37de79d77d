"""The soak's phases: warm-up, a fault-free baseline, the faulted run with a Redis outage, hedging.

Billing is checked per phase: the calls the simulator served each model (answers delivered whole,
streams that sent a first chunk) against the calls the spend ledger billed its deployment, read
back from Redis after the ledger has settled.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.progress import phase
from gateway.executor.drain import DRAIN_S
from gateway.ledger import Window
from gateway.spend_report import spend_rows

from .load import Ask, Run, drive, mix
from .services import DEPLOYMENT_OF, Gateway, Redis, Simulator, write_config, write_models

# 20% of calls to the faulted deployment hit one of these.
FAULTS: list[dict[str, Any]] = [
    {"kind": "http_500", "rate": 0.04},
    {"kind": "http_429", "rate": 0.03, "retry_after_s": 0.1},
    {"kind": "refuse", "rate": 0.03},
    {"kind": "hang", "rate": 0.02, "delay_ms": 5000},
    {"kind": "slow", "rate": 0.03, "delay_ms": 800},
    {"kind": "drop_stream", "rate": 0.02},
    {"kind": "malformed", "rate": 0.02},
    {"kind": "no_usage", "rate": 0.01},
]
SLOW_TAIL: list[dict[str, Any]] = [{"kind": "slow", "rate": 0.05, "delay_ms": 1000}]
FAULTED_MODEL = "sim-primary"


@dataclass(frozen=True, slots=True)
class SoakSettings:
    requests: int = 10_000
    baseline_requests: int | None = None  # default: as many as the faulted run
    hedge_requests: int | None = None     # per arm; default: a fifth of `requests`
    concurrency: int = 64
    outage_s: float = 10.0
    seed: int = 7
    warmup_requests: int = 200
    # Hedging is about a slow tail, not queueing: its arms run where the gateway is not saturated.
    hedge_concurrency: int = 8
    # Added latency too: a fault-free and a faulted arm of the same asks, back to back, at a
    # concurrency the gateway keeps up with (at `concurrency` on this machine it is queueing).
    latency_requests: int | None = None  # per arm; default: a tenth of `requests`
    latency_concurrency: int = 8


@dataclass(slots=True)
class Billing:
    served: dict[str, int]   # per deployment, from the simulator
    billed: dict[str, int]   # per deployment, from the spend ledger
    faults: dict[str, int]   # per fault kind, as the simulator injected them
    abandoned: dict[str, int]

    @property
    def exact(self) -> bool:
        return self.served == self.billed


@dataclass(slots=True)
class Phase:
    name: str
    run: Run
    billing: Billing
    log_lines: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class SoakReport:
    settings: SoakSettings
    baseline: Phase
    faulted: Phase
    unhedged: Phase
    hedged: Phase
    calm: Phase      # the latency arms: fault-free,
    troubled: Phase  # and faulted, same asks, same concurrency
    rss_before_mb: float
    rss_after_mb: float
    outage: dict[str, float]
    seconds: float


async def _ledger_calls(redis_url: str, since: float) -> dict[str, int]:
    rows = await spend_rows(redis_url, Window(since - 3600, time.time() + 3600), ("deployment",))
    return {r["deployment"]: int(r["calls"]) for r in rows if r["deployment"]}


def _in_flight(stats: dict[str, Any]) -> int:
    """Calls the simulator has taken and not yet answered, failed or found abandoned."""
    return sum(s["requests"] - s["served"] - s["abandoned"] - s["errors"] for s in stats.values())


async def _quiet(sim: Simulator, timeout_s: float = DRAIN_S + 10) -> None:
    """Wait until no upstream call is in flight: the gateway reads on calls it gave up on (and
    bills those that answer), so the phase's calls are all known only then."""
    for _ in range(int(timeout_s / 0.2)):
        if not _in_flight(sim.stats()):
            return
        await asyncio.sleep(0.2)


async def _settled_calls(redis_url: str, since: float, expect: dict[str, int] | None = None,
                         timeout_s: float = 30.0) -> dict[str, int]:
    """The ledger's calls once two reads a while apart agree (its writer lingers and retries), or
    once one such interval confirms ``expect`` (every served call billed): a bill written twice
    would land within that interval, and the usual case waits one interval instead of two."""
    deadline = time.monotonic() + timeout_s
    last, same = await _ledger_calls(redis_url, since), 0
    while time.monotonic() < deadline and same < (1 if last == expect else 2):
        await asyncio.sleep(1.2)  # longer than the writer's linger and its retry interval
        now = await _ledger_calls(redis_url, since)
        same = same + 1 if now == last else 0
        last = now
    return last


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
            if after.get(k, 0) - before.get(k, 0)}


def _log_counts(log_file: Path, start: int, end: int) -> Counter[str]:
    """Warning-and-above lines, retries and late answers, of one phase, by what they are about."""
    counts: Counter[str] = Counter()
    with log_file.open("rb") as f:
        f.seek(start)
        for raw in f.read(end - start).splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                counts["(not json)"] += 1
                continue
            if line.get("level") == "INFO" and line.get("event") not in ("upstream_retry", "late_answer"):
                continue
            what = line.get("event") or line.get("message", "")[:50]
            kind = line.get("error_type") or ""
            if line.get("event") == "upstream_failure" and kind in ("connection", "stream"):
                kind += f" ({str(line.get('reason'))[:40]})"  # refused, unreadable, cut short: the reason tells
            counts[f"{line.get('level')} {line.get('logger')} {what} {kind}".strip()] += 1
    return counts


class _Soak:
    def __init__(self, settings: SoakSettings, folder: Path) -> None:
        self.settings = settings
        self.redis = Redis(folder / "redis")
        self.redis.workdir.mkdir()
        self.sim = Simulator(folder / "models.yaml")
        self.gateway = Gateway(folder / "gateway.yaml", folder / "gateway.log")
        self.folder = folder
        self.outage: dict[str, float] = {}

    def start(self) -> None:
        self.redis.start()
        write_models(self.folder)
        self.sim.start()
        write_config(self.folder, self.sim.url, self.redis.url)
        self.gateway.start()

    def stop(self) -> None:
        for service in (self.gateway, self.sim, self.redis):
            service.stop()

    async def phase(self, name: str, asks: list[Ask], outage_at: int | None = None,
                    concurrency: int | None = None) -> Phase:
        phase(f"{name}: {len(asks)} requests")
        self.sim.reset()
        since = time.time()
        before = await _ledger_calls(self.redis.url, since)  # the previous phase has settled
        log_start = self.gateway.log_file.stat().st_size
        progress = self._outage(outage_at) if outage_at is not None else None
        run = await drive(self.gateway.url, asks, concurrency or self.settings.concurrency, progress)
        if self._restart is not None:
            await self._restart
            self._restart = None
        await _quiet(self.sim)
        stats = self.sim.stats()  # final: no call is in flight
        served = {DEPLOYMENT_OF[m]: s["served"] for m, s in stats.items() if s["served"]}
        expect = {k: before.get(k, 0) + served.get(k, 0) for k in set(before) | set(served)}
        after = await _settled_calls(self.redis.url, since, expect)
        faults: Counter[str] = Counter()
        for s in stats.values():
            faults.update(s["faults"])
        abandoned = {DEPLOYMENT_OF[m]: s["abandoned"] for m, s in stats.items() if s["abandoned"]}
        billing = Billing(served, _delta(after, before), dict(faults), abandoned)
        return Phase(name, run, billing, _log_counts(self.gateway.log_file, log_start,
                                                     self.gateway.log_file.stat().st_size))

    _restart: asyncio.Task[None] | None = None

    def _outage(self, at: int) -> Any:
        async def on_progress(done: int) -> None:
            if done == at and self._restart is None:
                self._restart = asyncio.create_task(self._kill_and_restart())
        return on_progress

    async def _kill_and_restart(self) -> None:
        self.outage["killed_at_s"] = time.time()
        self.redis.kill()
        await asyncio.sleep(self.settings.outage_s)
        await asyncio.to_thread(self.redis.start)
        self.outage["down_s"] = round(time.time() - self.outage["killed_at_s"], 2)


async def run_soak(settings: SoakSettings) -> SoakReport:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sy-soak-") as tmp:
        soak = _Soak(settings, Path(tmp))
        soak.start()
        try:
            return await _phases(soak, settings, started)
        finally:
            soak.stop()


async def _phases(soak: _Soak, s: SoakSettings, started: float) -> SoakReport:
    phase(f"warming up the gateway: {s.warmup_requests} requests")
    await drive(soak.gateway.url, mix(s.warmup_requests, s.seed + 100), s.concurrency)  # imports, pools, caches
    rss_before = soak.gateway.rss_mb()
    await _settled_calls(soak.redis.url, time.time())  # the warm-up's bills are in before the first count
    baseline = await soak.phase("baseline", mix(s.baseline_requests or s.requests, s.seed))
    # Hedging first: the faulted run leaves the primary's circuit open for a while after it.
    soak.sim.set_faults(FAULTED_MODEL, SLOW_TAIL)
    arm = s.hedge_requests or max(1, s.requests // 5)
    unhedged = await soak.phase("slow tail, unhedged", mix(arm, s.seed + 2, {"soak-single": 1.0}),
                                concurrency=s.hedge_concurrency)
    hedged = await soak.phase("slow tail, hedged", mix(arm, s.seed + 2, {"soak-hedged": 1.0}),
                              concurrency=s.hedge_concurrency)
    soak.sim.set_faults(FAULTED_MODEL, [])
    asks = mix(s.latency_requests or max(1, s.requests // 10), s.seed + 3)
    calm = await soak.phase("latency, fault-free", asks, concurrency=s.latency_concurrency)
    soak.sim.set_faults(FAULTED_MODEL, FAULTS)
    troubled = await soak.phase("latency, faulted", asks, concurrency=s.latency_concurrency)
    faulted = await soak.phase("faulted", mix(s.requests, s.seed + 1), outage_at=s.requests // 2)
    rss_after = soak.gateway.rss_mb()
    soak.sim.set_faults(FAULTED_MODEL, [])
    return SoakReport(s, baseline, faulted, unhedged, hedged, calm, troubled, rss_before, rss_after,
                      dict(soak.outage), time.perf_counter() - started)
