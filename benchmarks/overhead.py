"""What does the gateway add to a request? Measured against the floors, interleaved, in one run.

    PYTHONPATH=. python -m benchmarks.overhead [--with-litellm] [--quick] [--rounds N] ...

Targets (see benchmarks/overhead_targets.py): ``direct`` (load generator straight to the
upstream), the two minimal passthrough proxies (aiohttp, httpx), the Switchyard gateway with
model "auto" (cache miss), a cache hit and a pinned deployment, and the LiteLLM proxy
(``--with-litellm``; its own venv under ~/.cache/switchyard-bench). Upstream: one nginx with
Lua (benchmarks/overhead_nginx.py), a 50 ms port and an instant port.

Two phases, each interleaved round-robin (every round visits every target, starting one
target later than the round before, so drifting machine noise hits all alike):

1. latency, 50 ms upstream: wrk at 8 and 32 connections (non-streaming); our uvloop client
   at 8 and 32 connections for streaming time-to-first-byte; h2load at fixed rates.
2. throughput, instant upstream: wrk at a ladder of connection counts, per target and round,
   stopping once p99 >= 100 ms; the best req/s with p99 < 100 ms counts.

Cores: the load generator and nginx share core 0; the process under test runs alone on core 1.
Every process started is stopped by PID (process group) on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import overhead_litellm, overhead_load, overhead_nginx, overhead_report
from benchmarks.overhead_procs import (
    Child, Processes, cpu_seconds, default_nice, free_port, peak_rss_mib, pinned, wait_http,
)  # fmt: skip
from benchmarks.overhead_targets import (
    BY_NAME, CHAT_PATH, TARGETS, Context, Server, Target, probe, start_server, switchyard_missing,
)  # fmt: skip

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "overhead.md"
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
    litellm_spec: str = overhead_litellm.DEFAULT_SPEC
    out: Path | None = DEFAULT_OUT
    json_out: Path | None = None
    workdir: Path | None = None
    nice: int = 0
    command: str = ""


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
    records: list[dict[str, object]] = field(default_factory=list)
    rss: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    probes: dict[str, dict[str, str]] = field(default_factory=dict)
    done: int = 0
    total: int = 1
    started: float = field(default_factory=time.monotonic)

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
        streams = sum(t.streams for t in self.targets())
        per_round = sum(streams if s.kind == "ttfb" else n for s in self.latency_steps())
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
                            if step.kind != "ttfb" or target.streams:
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
                _say(f"starting {target.server} for the {phase} phase...")
            try:
                servers[target.server] = start_server(target.server, ctx, phase)
            except Exception as exc:
                for t in self.targets():
                    if t.server == target.server:
                        self.skipped[t.name] = f"{target.server} did not start: {exc}"
                _say(f"SKIPPING {target.server}: {exc}")
        return servers

    def warm(self, servers: dict[str, Server]) -> None:
        for target in list(self.targets()):
            server = servers[target.server]
            try:
                self.probes[target.name] = probe(target, server.base_url, stream=False)
                if target.streams and self.settings.stream:
                    probe(target, server.base_url, stream=True)
                self.probes[target.name] |= probe(target, server.base_url, stream=False)
                overhead_load.run_wrk(server.base_url + CHAT_PATH, self.script(target), 8, 1, self.load_prefix)
            except Exception as exc:
                self.skipped[target.name] = f"warm-up request failed: {exc}"
                _say(f"SKIPPING {target.name}: {exc}")

    def ladder(self, round_no: int, target: Target, server: Server) -> None:
        for connections in self.settings.ladder:
            record = self.measure("throughput", round_no, Step("ladder", connections), target, server)
            if "error" in record or float(record["p99"]) >= P99_LIMIT_MS or int(record["errors"]) > 0:  # type: ignore[arg-type]
                self.done += len(self.settings.ladder) - 1 - self.settings.ladder.index(connections)
                return

    # ---- one measurement ----
    def measure(
        self, phase: str, round_no: int, step: Step, target: Target, server: Server
    ) -> dict[str, object]:
        url = server.base_url + CHAT_PATH
        pid = server.child.pid if server.child else None
        cpu_before = cpu_seconds(pid) if pid else 0.0
        record: dict[str, object] = {"phase": phase, "round": round_no, "step": step.label,
                                     "kind": step.kind, "target": target.name,
                                     "connections": step.connections, "rate": step.rate}  # fmt: skip
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
        self.progress(record)
        return record

    def load(self, step: Step, target: Target, url: str) -> overhead_load.Sample:
        s, core = self.settings, self.load_prefix
        if step.kind in ("wrk", "ladder"):
            seconds = s.duration if step.kind == "wrk" else s.ladder_duration
            return overhead_load.run_wrk(url, self.script(target), step.connections, seconds, core)
        if step.kind == "ttfb":
            return overhead_load.run_ttfb(url, self.body_file(target, True), step.connections, s.duration, core)
        log = self.workdir / f"h2load-{target.name}.log"
        return overhead_load.run_h2load(url, self.body_file(target, False), step.rate, s.duration, core, log)

    def script(self, target: Target) -> Path:
        path = self.workdir / "bodies" / f"{target.name}.lua"
        if not path.exists():
            overhead_load.wrk_script(path, target.body(stream=False))
        return path

    def body_file(self, target: Target, stream: bool) -> Path:
        path = self.workdir / "bodies" / f"{target.name}{'-stream' if stream else ''}.json"
        if not path.exists():
            path.write_bytes(target.body(stream))
        return path

    def progress(self, r: dict[str, object]) -> None:
        elapsed = time.monotonic() - self.started
        eta = elapsed / max(1, self.done) * max(0, self.total - self.done)
        head = f"[{self.done}/{self.total} {elapsed:4.0f}s, ~{eta:.0f}s left] {r['phase']} r{int(r['round']) + 1} "  # type: ignore[call-overload]
        head += f"{r['step']:<28} {r['target']:<20}"
        if "error" in r:
            _say(f"{head} FAILED: {str(r['error']).splitlines()[0][:150]}")
        else:
            errs = f" ERRORS={r['errors']}" if r["errors"] else ""
            _say(f"{head} p50 {r['p50']:7.2f}  p99 {r['p99']:7.2f} ms  {r['rps']:8.0f} req/s{errs}")


def _rotate(items: list[Target], k: int) -> list[Target]:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cores() -> tuple[str, str]:
    """(load generator + upstream core, server-under-test core)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return str(available[0]), str(available[0])
    return str(available[0]), str(available[1])


def run(settings: Settings) -> dict[str, object]:
    """Run the benchmark; return the raw results (also written to settings.json_out/out)."""
    for problem in (overhead_load.missing(), overhead_nginx.missing()):
        if problem:
            raise RuntimeError(problem)
    workdir = settings.workdir or Path(tempfile.mkdtemp(prefix="switchyard-overhead-"))
    (workdir / "bodies").mkdir(parents=True, exist_ok=True)
    load_core, server_core = cores()
    load_prefix, server_prefix = pinned(load_core, settings.nice), pinned(server_core, settings.nice)
    with Processes(workdir / "logs") as procs:
        bench = Bench(settings, procs, workdir, load_prefix, server_prefix)
        meta = environment(settings, bench, (load_core, server_core))
        upstream = overhead_nginx.NginxUpstream(workdir, free_port(), free_port(), settings.delay_ms)
        nginx = procs.start("upstream", upstream.write(), load_prefix)
        wait_http(nginx, f"http://127.0.0.1:{upstream.instant_port}/healthz", 15)
        _say(f"upstream nginx pid {nginx.pid}: {settings.delay_ms:.0f} ms on :{upstream.delayed_port}, "
             f"instant on :{upstream.instant_port}; logs in {workdir}")  # fmt: skip
        ports = {"latency": upstream.delayed_port, "throughput": upstream.instant_port}
        bench.run(nginx, ports)
        meta["loadavg_end"] = _loadavg()
    results = {"meta": meta, "records": bench.records, "rss": bench.rss, "skipped": bench.skipped,
               "probes": bench.probes, "workdir": str(workdir)}  # fmt: skip
    json_out = settings.json_out or workdir / "results.json"
    json_out.write_text(json.dumps(results, indent=1, default=str))
    if settings.out:
        settings.out.parent.mkdir(parents=True, exist_ok=True)
        settings.out.write_text(overhead_report.render(results))
        _say(f"report: {settings.out}")
    _say(f"raw results: {json_out}")
    return results


def environment(settings: Settings, bench: Bench, core: tuple[str, str]) -> dict[str, object]:
    """What ran where; also decides which targets are skipped and why."""
    if "litellm" in settings.targets:
        try:
            version = overhead_litellm.ensure_venv(settings.litellm_spec, bench.workdir / "pip-litellm.log")
            _say(f"litellm {version} in {overhead_litellm.venv_dir()}")
        except Exception as exc:
            bench.skipped["litellm"] = f"could not install litellm: {exc}"
    if any(BY_NAME[n].server == "switchyard" for n in settings.targets):
        reason = switchyard_missing()
        if reason:
            for name in settings.targets:
                if BY_NAME[name].server == "switchyard":
                    bench.skipped[name] = f"gateway not available: {reason}"
            _say(f"SKIPPING switchyard targets: {reason}")
    return overhead_report.machine_facts() | {
        "command": settings.command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cores": {"load_generator_and_upstream": core[0], "server_under_test": core[1]},
        "nice": settings.nice,
        "loadavg_start": _loadavg(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.__dict__.items()},
        "litellm_version": overhead_litellm.installed_version() if "litellm" in settings.targets else None,
    }


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per phase (default 3)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per latency measurement (default 3)")
    p.add_argument("--ladder-duration", type=float, default=2.0, help="seconds per throughput step (default 2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown report (default {DEFAULT_OUT})")
    p.add_argument("--json", type=Path, default=None, help="raw results JSON (default: in the work dir)")
    p.add_argument("--workdir", type=Path, default=None, help="configs and logs (default: a new temp dir)")
    p.add_argument("--with-litellm", action="store_true", help="also benchmark the LiteLLM proxy (own venv)")
    p.add_argument("--litellm-spec", default=overhead_litellm.DEFAULT_SPEC, help="pip spec for the venv")
    p.add_argument("--quick", action="store_true", help="1 round, 1 s steps, no litellm (smoke run)")
    p.add_argument("--targets", default="", help=f"comma list from: {', '.join(BY_NAME)}")
    p.add_argument("--connections", default="8,32", help="closed-loop connection counts (default 8,32)")
    p.add_argument("--rates", default="50,100,200", help="fixed rates in req/s for h2load ('' for none)")
    p.add_argument("--ladder", default="1,4,16,64,256", help="throughput connection ladder")
    p.add_argument("--delay-ms", type=float, default=50.0, help="upstream delay in the latency phase")
    p.add_argument("--no-stream", action="store_true", help="skip streaming TTFB measurements")
    p.add_argument("--no-throughput", action="store_true", help="skip the instant-upstream phase")
    p.add_argument("--nice", type=int, default=default_nice(),
                   help="niceness of every process started (default -10 as root, else 0)")  # fmt: skip
    a = p.parse_args(argv)
    names = [n.strip() for n in a.targets.split(",") if n.strip()] or [t.name for t in TARGETS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    if not a.with_litellm or a.quick:
        names = [n for n in names if n != "litellm"]
    ints = lambda text: tuple(int(x) for x in text.split(",") if x.strip())  # noqa: E731
    settings = Settings(
        rounds=a.rounds, duration=a.duration, ladder_duration=a.ladder_duration,
        connections=ints(a.connections), rates=ints(a.rates), ladder=ints(a.ladder), delay_ms=a.delay_ms,
        targets=tuple(names), stream=not a.no_stream, throughput=not a.no_throughput,
        litellm_spec=a.litellm_spec, out=a.out, json_out=a.json, workdir=a.workdir, nice=a.nice,
        command="PYTHONPATH=. python -m benchmarks.overhead " + " ".join(shlex.quote(x) for x in (argv or [])),
    )  # fmt: skip
    if a.quick:
        settings = replace(settings, rounds=1, duration=1.0, ladder_duration=1.0)
    return settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_args(argv)
    try:
        run(settings)
    except KeyboardInterrupt:
        _say("interrupted: every process started was stopped")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
