"""The overhead benchmark's runner: the plan of steps, the interleaving, one measurement.

``Bench.run`` does both phases (latency with the delayed upstream, throughput with the instant
one); in every round each step visits every target, the order rotated by one target per round.
See benchmarks/overhead.py for the command line and the method.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.overhead import litellm_proxy, loadgen
from benchmarks.overhead.procs import Child, Processes, cpu_seconds, peak_rss_mib
from benchmarks.overhead.targets import BY_NAME, CHAT_PATH, TARGETS, Context, Server, Target, probe, start_server

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "overhead.md"
P99_LIMIT_MS = 100.0


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    duration: float = 3.0
    ladder_duration: float = 2.0
    connections: tuple[int, ...] = (8, 32)
    rates: tuple[int, ...] = (50, 100, 200)
    ladder: tuple[int, ...] = (1, 4, 16, 64, 256)
    delay_ms: float = 50.0
    targets: tuple[str, ...] = tuple(t.name for t in TARGETS if t.name != "litellm")
    stream: bool = True
    throughput: bool = True
    litellm_spec: str = litellm_proxy.DEFAULT_SPEC
    out: Path | None = DEFAULT_OUT
    json_out: Path | None = None
    workdir: Path | None = None
    nice: int = 0
    render: Path | None = None
    command: str = ""
    export_spans: bool = True  # the gateway exports its spans over OTLP (telemetry on)


@dataclass(frozen=True)
class Step:
    """One measurement kind: wrk (closed loop), ttfb (streaming), rate (h2load) or ladder (wrk)."""

    kind: str
    connections: int = 0
    rate: int = 0

    @property
    def label(self) -> str:
        return {
            "wrk": f"non-stream c={self.connections}",
            "ttfb": f"stream TTFB c={self.connections}",
            "rate": f"fixed {self.rate} req/s",
            "ladder": f"instant upstream c={self.connections}",
        }[self.kind]


@dataclass
class Bench:
    settings: Settings
    procs: Processes
    workdir: Path
    load_prefix: list[str]  # load generator: nice + taskset onto the load core
    server_prefix: list[str]  # process under test: nice + taskset onto the server core
    records: list[dict[str, Any]] = field(default_factory=list)
    rss: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    probes: dict[str, dict[str, str]] = field(default_factory=dict)
    done: int = 0
    total: int = 1
    started: float = field(default_factory=time.monotonic)
    measuring_s: float = 0.0  # time spent in measurements, for the estimate of what is left

    # ---- planning ----
    def targets(self) -> list[Target]:
        return [BY_NAME[n] for n in self.settings.targets if n not in self.skipped]

    def latency_steps(self) -> list[Step]:
        steps = [Step("wrk", c) for c in self.settings.connections]
        if self.settings.stream:
            steps += [Step("ttfb", c) for c in self.settings.connections]
        return steps + [Step("rate", rate=r) for r in self.settings.rates]

    def plan_size(self) -> int:
        n = len(self.targets())
        per_round = sum(t.runs(s.kind) for s in self.latency_steps() for t in self.targets())
        if self.settings.throughput:
            per_round += n * len(self.settings.ladder)
        return max(1, per_round * self.settings.rounds)

    # ---- phases ----
    def run(self, upstream: Child, ports: dict[str, int]) -> None:
        """Both phases; ports maps "latency" and "throughput" to the upstream's two ports."""
        self.total = self.plan_size()
        phases = ["latency"] + (["throughput"] if self.settings.throughput else [])
        for phase in phases:
            upstream_url = f"http://127.0.0.1:{ports[phase]}"
            ctx = Context(self.procs, self.workdir, upstream_url, upstream, self.server_prefix)
            servers = self.start_servers(ctx, phase)
            self.warm(servers)
            for round_no in range(self.settings.rounds):
                order = _rotate(self.targets(), round_no)
                if phase == "latency":
                    for step in self.latency_steps():
                        for target in order:
                            if target.runs(step.kind):
                                self.measure(phase, round_no, step, target, servers[target.server])
                else:
                    for target in order:
                        self.ladder(round_no, target, servers[target.server])
            for server in servers.values():
                if server.child is not None:
                    self.rss.setdefault(phase, {})[server.name] = peak_rss_mib(server.child.pid)
                    if server.name != "upstream":
                        self.procs.stop(server.child)

    def start_servers(self, ctx: Context, phase: str) -> dict[str, Server]:
        servers: dict[str, Server] = {}
        for target in list(self.targets()):
            if target.server in servers:
                continue
            if target.server != "upstream":
                say(f"starting {target.server} for the {phase} phase...")
            try:
                servers[target.server] = start_server(target.server, ctx, phase)
            except Exception as exc:
                for t in self.targets():
                    if t.server == target.server:
                        self.skipped[t.name] = f"{target.server} did not start: {exc}"
                say(f"SKIPPING {target.server}: {exc}")
        return servers

    def warm(self, servers: dict[str, Server]) -> None:
        for target in list(self.targets()):
            server = servers[target.server]
            try:
                self.probes[target.name] = probe(target, server.base_url, stream=False)
                if target.runs("ttfb") and self.settings.stream:
                    probe(target, server.base_url, stream=True)
                self.probes[target.name] |= probe(target, server.base_url, stream=False)
                loadgen.run_wrk(server.base_url + CHAT_PATH, self.script(target), 8, 1, self.load_prefix)
            except Exception as exc:
                self.skipped[target.name] = f"warm-up request failed: {exc}"
                say(f"SKIPPING {target.name}: {exc}")

    def ladder(self, round_no: int, target: Target, server: Server) -> None:
        for connections in self.settings.ladder:
            record = self.measure("throughput", round_no, Step("ladder", connections), target, server)
            # Climb until saturated (p50 past the limit) or failing; one slow outlier at low
            # concurrency must not end the ladder, so p99 only decides which step counts.
            if "error" in record or record["errors"] > 0 or record["p50"] >= P99_LIMIT_MS:
                self.done += len(self.settings.ladder) - 1 - self.settings.ladder.index(connections)
                return

    # ---- one measurement ----
    def measure(self, phase: str, round_no: int, step: Step, target: Target, server: Server) -> dict[str, Any]:
        url = server.base_url + CHAT_PATH
        pid = server.child.pid if server.child else None
        cpu_before = cpu_seconds(pid) if pid else 0.0
        record: dict[str, Any] = {
            "phase": phase, "round": round_no, "step": step.label, "kind": step.kind,
            "target": target.name, "connections": step.connections, "rate": step.rate,
        }  # fmt: skip
        began = time.monotonic()
        try:
            sample = self.load(step, target, url)
            record |= sample.to_dict()
            if pid:
                cpu = cpu_seconds(pid) - cpu_before
                record["cpu_s"] = cpu
                record["cpu_s_per_1k"] = 1000 * cpu / max(1, sample.requests)
        except Exception as exc:
            record["error"] = str(exc)[:2000]
        self.records.append(record)
        self.done += 1
        self.measuring_s += time.monotonic() - began
        self.progress(record)
        return record

    def load(self, step: Step, target: Target, url: str) -> loadgen.Sample:
        s, core = self.settings, self.load_prefix
        if step.kind in ("wrk", "ladder"):
            seconds = s.duration if step.kind == "wrk" else s.ladder_duration
            return loadgen.run_wrk(url, self.script(target), step.connections, seconds, core)
        if step.kind == "ttfb":
            return loadgen.run_ttfb(url, self.body_file(target, True), step.connections, s.duration, core)
        log = self.workdir / f"h2load-{target.name}.log"
        return loadgen.run_h2load(url, self.body_file(target, False), step.rate, s.duration, core, log)

    def script(self, target: Target) -> Path:
        path = self.workdir / "bodies" / f"{target.name}.lua"
        if target.unique:  # a fresh salt every run, so no prompt repeats across runs
            tag = f"{uuid.uuid4().hex[:12]}-{loadgen.PLACEHOLDER}"
            return loadgen.wrk_script(path, target.body(stream=False, tag=tag))
        if not path.exists():
            loadgen.wrk_script(path, target.body(stream=False))
        return path

    def body_file(self, target: Target, stream: bool) -> Path:
        """A body for h2load (always fixed) or the TTFB client (which fills in PLACEHOLDER per request)."""
        path = self.workdir / "bodies" / f"{target.name}{'-stream' if stream else ''}.json"
        if stream and target.unique:
            tag = f"{uuid.uuid4().hex[:12]}-{loadgen.PLACEHOLDER}"
            path.write_bytes(target.body(stream, tag=tag))
        elif not path.exists():
            path.write_bytes(target.body(stream))
        return path

    def progress(self, r: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        eta = self.measuring_s / max(1, self.done) * max(0, self.total - self.done)
        head = f"[{self.done}/{self.total} {elapsed:4.0f}s, ~{eta:.0f}s left] {r['phase']} r{int(r['round']) + 1} "
        head += f"{r['step']:<28} {r['target']:<20}"
        if "error" in r:
            say(f"{head} FAILED: {str(r['error']).splitlines()[0][:150]}")
        else:
            errs = f" ERRORS={r['errors']}" if r["errors"] else ""
            say(f"{head} p50 {r['p50']:7.2f}  p99 {r['p99']:7.2f} ms  {r['rps']:8.0f} req/s{errs}")


def _rotate(items: list[Target], k: int) -> list[Target]:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
