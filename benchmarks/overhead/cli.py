"""What does the gateway add to a request? Measured against the floors, interleaved, in one run.

    PYTHONPATH=. python -m benchmarks.overhead [--with-litellm] [--quick] [--rounds N] ...

Targets (see benchmarks/overhead/targets.py): ``direct`` (load generator straight to the
upstream), the two minimal passthrough proxies (aiohttp, httpx), the Switchyard gateway with
model "auto" (temperature 0.7: router, policy, cache bypassed), a real cache miss (temperature
0, a new prompt per request), a cache hit and a pinned deployment, and the LiteLLM proxy
(``--with-litellm``; its own venv under ~/.cache/switchyard-bench). Switchyard targets are
skipped, with the reason in the report, when ``python -m gateway.cli serve`` is not usable.
Upstream: one nginx with Lua (benchmarks/overhead/nginx.py), a 50 ms port and an instant port.

Needs the Debian packages wrk, nginx, libnginx-mod-http-lua and nghttp2-client (h2load).

Two phases, each interleaved round-robin (every round visits every target, starting one
target later than the round before, so drifting machine noise hits all alike):

1. latency, 50 ms upstream: wrk at 8 and 32 connections (non-streaming); our uvloop client
   at 8 and 32 connections for streaming time-to-first-byte; h2load at fixed rates.
2. throughput, instant upstream: wrk at a ladder of connection counts, per target and round,
   climbing until p50 >= 100 ms; the best req/s among steps with p99 < 100 ms counts.

Cores: the load generator and nginx share core 0; the process under test runs alone on core 1,
everything at niceness -10 when run as root (the machine is shared; see --nice).
Every process started is stopped by PID (process group) on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.overhead import litellm_proxy, loadgen, nginx, report
from benchmarks.overhead.procs import Processes, default_nice, free_port, pinned, wait_http
from benchmarks.overhead.runner import DEFAULT_OUT, Bench, Settings, loadavg, say
from benchmarks.overhead.targets import BY_NAME, TARGETS, gateway_fingerprint, switchyard_missing

__all__ = ["Settings", "main", "parse_args", "run"]


def cores() -> tuple[str, str]:
    """(load generator + upstream core, server-under-test core)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return str(available[0]), str(available[0])
    return str(available[0]), str(available[1])


SYSTEM_TOOLS = {"wrk": "wrk", "h2load": "nghttp2-client", "nginx": "nginx"}


def install_system_tools(fixed_rate: bool) -> None:
    """From a fresh clone the load generators and nginx are usually missing: as root, apt-get them
    (as the LiteLLM proxy gets its own venv); otherwise the checks below say what to install."""
    wanted = [pkg for tool, pkg in SYSTEM_TOOLS.items() if shutil.which(tool) is None
              and (fixed_rate or tool != "h2load")]
    if nginx.missing() is not None:
        wanted.append("libnginx-mod-http-lua")
    if not wanted or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    say(f"installing {' '.join(wanted)} with apt-get...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *wanted],
                   check=False, env=env, capture_output=True)
    if "nginx" in wanted:  # Debian starts its own nginx on install; ours runs from a generated config
        subprocess.run(["nginx", "-s", "quit"], check=False, capture_output=True)


def run(settings: Settings) -> dict[str, Any]:
    """Run the benchmark; return the raw results (also written to settings.json_out/out)."""
    install_system_tools(fixed_rate=bool(settings.rates))
    for problem in (loadgen.missing(fixed_rate=bool(settings.rates)), nginx.missing()):
        if problem:
            raise RuntimeError(problem)
    workdir = settings.workdir or Path(tempfile.mkdtemp(prefix="switchyard-overhead-"))
    (workdir / "bodies").mkdir(parents=True, exist_ok=True)
    load_core, server_core = cores()
    load_prefix, server_prefix = pinned(load_core, settings.nice), pinned(server_core, settings.nice)
    with Processes(workdir / "logs") as procs:
        bench = Bench(settings, procs, workdir, load_prefix, server_prefix)
        meta = environment(settings, bench, (load_core, server_core))
        upstream = nginx.NginxUpstream(workdir, free_port(), free_port(), settings.delay_ms)
        upstream_proc = procs.start("upstream", upstream.write(), load_prefix)
        wait_http(upstream_proc, f"http://127.0.0.1:{upstream.instant_port}/healthz", 15)
        say(f"upstream nginx pid {upstream_proc.pid}: {settings.delay_ms:.0f} ms on :{upstream.delayed_port}, "
             f"instant on :{upstream.instant_port}; logs in {workdir}")  # fmt: skip
        ports = {"latency": upstream.delayed_port, "throughput": upstream.instant_port}
        bench.run(upstream_proc, ports)
        meta["loadavg_end"] = loadavg()
        meta["gateway_sources_end"] = gateway_fingerprint()
    results = {"meta": meta, "records": bench.records, "rss": bench.rss, "skipped": bench.skipped,
               "probes": bench.probes, "workdir": str(workdir)}  # fmt: skip
    json_out = settings.json_out or workdir / "results.json"
    json_out.write_text(json.dumps(results, indent=1, default=str))
    if settings.out:
        settings.out.parent.mkdir(parents=True, exist_ok=True)
        settings.out.write_text(report.render(results))
        say(f"report: {settings.out}")
    say(f"raw results: {json_out}")
    return results


def environment(settings: Settings, bench: Bench, core: tuple[str, str]) -> dict[str, Any]:
    """What ran where; also decides which targets are skipped and why."""
    if "litellm" in settings.targets:
        try:
            version = litellm_proxy.ensure_venv(settings.litellm_spec, bench.workdir / "pip-litellm.log")
            say(f"litellm {version} in {litellm_proxy.venv_dir()}")
        except Exception as exc:
            bench.skipped["litellm"] = f"could not install litellm: {exc}"
    if any(BY_NAME[n].server == "switchyard" for n in settings.targets):
        reason = switchyard_missing()
        if reason:
            for name in settings.targets:
                if BY_NAME[name].server == "switchyard":
                    bench.skipped[name] = f"gateway not available: {reason}"
            say(f"SKIPPING switchyard targets: {reason}")
    return report.machine_facts() | {
        "command": settings.command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cores": {"load_generator_and_upstream": core[0], "server_under_test": core[1]},
        "nice": settings.nice,
        "loadavg_start": loadavg(),
        "gateway_sources_start": gateway_fingerprint(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.__dict__.items()},
        "litellm_version": litellm_proxy.installed_version() if "litellm" in settings.targets else None,
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
    p.add_argument("--litellm-spec", default=litellm_proxy.DEFAULT_SPEC, help="pip spec for the venv")
    p.add_argument("--quick", action="store_true", help="1 round, 1 s steps, no litellm (smoke run)")
    p.add_argument("--targets", default="", help=f"comma list from: {', '.join(BY_NAME)}")
    p.add_argument("--connections", default="8,32", help="closed-loop connection counts (default 8,32)")
    p.add_argument("--rates", default="50,100,200", help="fixed rates in req/s for h2load ('' for none)")
    p.add_argument("--ladder", default="1,4,16,64,256", help="throughput connection ladder")
    p.add_argument("--delay-ms", type=float, default=50.0, help="upstream delay in the latency phase")
    p.add_argument("--no-stream", action="store_true", help="skip streaming TTFB measurements")
    p.add_argument("--no-span-export", action="store_true",
                   help="run the gateway without an OTLP endpoint (spans are then not recorded at all)")
    p.add_argument("--no-throughput", action="store_true", help="skip the instant-upstream phase")
    p.add_argument("--render", type=Path, default=None, help="only re-render --out from a raw results JSON")
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
        litellm_spec=a.litellm_spec, out=a.out, json_out=a.json, workdir=a.workdir, nice=a.nice, render=a.render,
        command="PYTHONPATH=. python -m benchmarks.overhead " + " ".join(shlex.quote(x) for x in (argv or [])),
        export_spans=not a.no_span_export,
    )  # fmt: skip
    if not settings.export_spans:
        os.environ["SWITCHYARD_BENCH_NO_SPAN_EXPORT"] = "1"  # read by targets.py when starting the gateway
    if a.quick:
        settings = replace(settings, rounds=1, duration=1.0, ladder_duration=1.0)
    return settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_args(argv)
    if settings.render:
        out = settings.out or DEFAULT_OUT
        out.write_text(report.render(json.loads(settings.render.read_text())))
        say(f"report: {out}")
        return 0
    try:
        run(settings)
    except (KeyboardInterrupt, SystemExit) as exc:
        say("interrupted: every process the benchmark started has been stopped")
        return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
