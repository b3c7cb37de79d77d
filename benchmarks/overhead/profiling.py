"""Where the gateway's CPU goes under load, by stage: py-spy samples of `switchyard serve`.

    python -m benchmarks.overhead.profiling [--seconds 15] [--connections 16] [--no-span-export]
        [--flamegraph auto.svg] [--repo CHECKOUT]

Same set-up as benchmarks/overhead.py: the nginx upstream (no delay) and wrk on core 0, the
gateway alone on core 1, `model: "auto"` with a new prompt on every request (so neither the
answer cache nor the router's memory helps), spans exported over OTLP to the nginx. py-spy
samples every thread of the gateway; each sample is charged to the innermost frame that belongs
to a known stage, and the stage's share of samples times the measured CPU seconds per request
gives its cost per request. Writes benchmarks/results/overhead_profile.md (and, with --flamegraph,
an SVG flame graph of the samples); --repo profiles another checkout's gateway (before/after a
change) with this harness. Needs py-spy
(`pip install py-spy`), nginx with the Lua module, and wrk.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.overhead.flame import svg
from benchmarks.overhead.loadgen import PLACEHOLDER, parse_wrk, wrk_command, wrk_script
from benchmarks.overhead.nginx import NginxUpstream
from benchmarks.overhead.procs import Processes, cpu_seconds, free_port, pinned, wait_http
from benchmarks.overhead.targets import BY_NAME, REPO, switchyard_config

OUT = REPO / "benchmarks" / "results" / "overhead_profile.md"
# (stage, path fragments). A sample goes to the first stage met walking from the leaf frame up.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("router: assess (features, neighbours)", ("gateway/router/", "gateway/signal.py")),
    (
        "telemetry: OTLP export thread (encode + HTTP)",
        ("trace_exporter/", "trace_encoder/", "_shared_internal/", "common/_internal/", "common/http.py",
         "requests/", "urllib3/", "transport/_requests", "google/protobuf"),
    ),
    (
        "telemetry: recording spans",
        ("gateway/telemetry.py", "trace/__init__.py", "trace/span.py", "trace/sampling.py", "attributes/__init__.py"),
    ),
    ("policy: decide + estimate", ("gateway/policy/",)),
    ("request log line + metrics", ("gateway/logs.py", "gateway/observer.py", "gateway/metrics.py", "logging/")),
    ("spend ledger + request records", ("gateway/ledger.py", "gateway/feedback.py")),
    ("upstream call: aiohttp client", ("aiohttp/",)),
    ("request parsing + validation", ("gateway/api/schemas.py", "pydantic")),
    (
        "gateway: pipeline, executor, cache, auth, handlers",
        ("gateway/pipeline.py", "gateway/executor/", "gateway/cache.py", "gateway/auth.py",
         "gateway/api/", "gateway/providers/", "gateway/streaming.py", "gateway/state.py"),
    ),
    ("HTTP server: uvicorn + starlette/fastapi", ("uvicorn/", "starlette/", "fastapi/", "httptools")),
)  # fmt: skip


# The span exporter's thread, wherever its samples end (encoding reads the spans' own attributes,
# events and links, which would otherwise count as recording them).
EXPORT_THREAD = ("BatchProcessor.worker", "BatchSpanProcessor.worker")


def classify(stack: list[str]) -> str:
    if any(frame.startswith(EXPORT_THREAD) for frame in stack):
        return STAGES[1][0]
    for frame in reversed(stack):
        for stage, fragments in STAGES:
            if any(f in frame for f in fragments):
                return stage
    return "event loop, asyncio and the rest"


# Leaf frames of a thread that waits (the event loop polling, the span exporter and log flusher
# sleeping): py-spy does not always tell them from running ones on a busy machine.
IDLE = ("Runner.run (asyncio/runners.py", "Condition.wait (threading.py", "Event.wait (threading.py")


def busy_lines(path: Path) -> list[str]:
    """py-spy's raw lines, less those whose leaf frame is a wait."""
    return [line for line in path.read_text().splitlines()
            if not line.rpartition(" ")[0].rpartition(";")[2].startswith(IDLE)]  # fmt: skip


def read_raw(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in busy_lines(path):
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[classify(stack.split(";"))] += int(n)
    return counts


def profile(
    seconds: float, connections: int, export_spans: bool, workdir: Path, repo: Path = REPO
) -> tuple[Counter[str], dict[str, float]]:
    with Processes(workdir) as procs:
        upstream = NginxUpstream(workdir, free_port(), free_port(), 0.0)
        procs.start("nginx", upstream.write(), pinned("0"))
        base = f"http://127.0.0.1:{upstream.instant_port}"
        config = workdir / "gateway.yaml"
        config.write_text(switchyard_config(base))
        port = free_port()
        env: dict[str, str | None] = {
            "PYTHONPATH": str(repo),
            "OTEL_EXPORTER_OTLP_ENDPOINT": base if export_spans else None,
        }
        gw = procs.start(
            "switchyard",
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
            pinned("1"),
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(gw, url + "/healthz", 90)
        script = wrk_script(workdir / "auto.lua", BY_NAME["switchyard-auto"].body(tag=PLACEHOLDER))
        subprocess.run(
            wrk_command(url + "/v1/chat/completions", script, connections, 2.0, pinned("0")),
            capture_output=True,
            check=False,
        )  # warm-up
        load = subprocess.Popen(
            wrk_command(url + "/v1/chat/completions", script, connections, seconds + 1.0, pinned("0")),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        cpu0 = cpu_seconds(gw.pid)
        raw = workdir / "profile.raw"
        subprocess.run(
            [
                "py-spy",
                "record",
                "-p",
                str(gw.pid),
                "-d",
                str(int(seconds)),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
            ],
            capture_output=True,
            check=True,
        )
        cpu = cpu_seconds(gw.pid) - cpu0
        out, _ = load.communicate(timeout=seconds + 30)
        sample = parse_wrk(out)
    requests = sample.rps * seconds
    return read_raw(raw), {"rps": sample.rps, "cpu_ms_per_request": 1000 * cpu / max(requests, 1.0)}


def render(counts: Counter[str], facts: dict[str, float], command: str, export_spans: bool) -> str:
    total = sum(counts.values()) or 1
    lines = [
        '# Where the gateway\'s CPU goes (`model: "auto"`, new prompt per request)',
        "",
        f"Made by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Spans "
        + ("exported over OTLP." if export_spans else "not recorded (no OTLP endpoint)."),
        f"Gateway under load: {facts['rps']:.0f} req/s, {facts['cpu_ms_per_request']:.3f} ms of CPU per request.",
        "",
        "| stage | share of samples | CPU ms per request |",
        "|---|---:|---:|",
    ]
    for stage, n in counts.most_common():
        share = n / total
        lines.append(f"| {stage} | {share:.1%} | {share * facts['cpu_ms_per_request']:.3f} |")
    lines += [
        "",
        "Each sample is charged to the innermost frame that belongs to a stage (see STAGES in "
        "benchmarks/overhead/profiling.py); shares are of all samples of all the gateway's threads, "
        "less those of a thread waiting (IDLE).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead.profiling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=15.0, help="sampling time (default 15)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--no-span-export", action="store_true", help="run the gateway without an OTLP endpoint")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--keep-raw", type=Path, help="also keep py-spy's raw samples here")
    p.add_argument("--flamegraph", type=Path, help="also write a flame graph (SVG) of the samples here")
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout whose gateway is profiled")
    a = p.parse_args(argv)
    missing = [tool for tool in ("py-spy", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"needs {', '.join(missing)} (pip install py-spy; apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="switchyard-profile-") as tmp:
        counts, facts = profile(a.seconds, a.connections, not a.no_span_export, Path(tmp), a.repo.resolve())
        raw = Path(tmp) / "profile.raw"
        if a.keep_raw:
            shutil.copy(raw, a.keep_raw)
        if a.flamegraph:
            title = f"switchyard serve, model auto, {facts['cpu_ms_per_request']:.3f} ms CPU per request"
            a.flamegraph.write_text(svg(busy_lines(raw), title))
    command = "python -m benchmarks.overhead.profiling " + " ".join(argv if argv is not None else sys.argv[1:])
    a.out.write_text(render(counts, facts, command.strip(), not a.no_span_export))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
