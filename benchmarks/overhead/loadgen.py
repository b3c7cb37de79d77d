"""Compiled load generators and what they measure: wrk (closed loop) and h2load (fixed rate).

wrk keeps N connections busy and reports latency percentiles of whole responses; a generated
Lua script sets the POST body and prints one JSON line from wrk's ``done`` hook. h2load
(``--rps`` per client, HTTP/1.1) is the fixed-rate generator: Debian has neither wrk2 nor
oha. h2load writes every request's latency to ``--log-file``; we take percentiles from that.
Its rate is per connection without pipelining, so a response slower than the connection's
interval delays the next send (coordinated omission): the harness gives each connection an
interval well above the upstream delay so this bites only on outliers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Sent to every target. LiteLLM refuses to start without a master key, so it gets this one (a
# loopback-only benchmark key, not a secret); servers without auth ignore the header.
API_KEY = "sk-switchyard-bench-loopback-5f0c2e9a7d4b41c8"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
APT_PACKAGES = ("wrk", "nghttp2-client")


@dataclass
class Sample:
    """One measured run against one target. Latencies in milliseconds."""

    requests: int
    seconds: float
    p50: float
    p90: float
    p99: float
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, object]:
        flat: dict[str, object] = {k: v for k, v in asdict(self).items() if k != "extra"}
        return flat | self.extra | {"rps": self.rps}


def _lua_long(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


PLACEHOLDER = "@@N@@"


def wrk_script(path: Path, body: bytes, headers: dict[str, str] | None = None) -> Path:
    """A wrk script POSTing body; if body contains PLACEHOLDER, each request replaces it with a
    counter, so every request is distinct (a real cache miss, not a bypass)."""
    text = body.decode()
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_long(text.replace(PLACEHOLDER, '0'))}"]
    for key, value in (headers or HEADERS).items():
        lines.append(f'wrk.headers["{key}"] = "{value}"')
    if PLACEHOLDER in text:
        before, after = text.split(PLACEHOLDER, 1)
        lines += [
            f"local before, after, n = {_lua_long(before)}, {_lua_long(after)}, 0",
            "request = function()",
            "  n = n + 1",
            "  return wrk.format(nil, nil, nil, before .. n .. after)",
            "end",
        ]
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return path


def wrk_command(url: str, script: Path, connections: int, seconds: float, prefix: list[str]) -> list[str]:
    return [
        *prefix,
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(script), url,
    ]  # fmt: skip


def parse_wrk(stdout: str) -> Sample:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result line:\n{stdout[-2000:]}")
    raw = json.loads(line[len("WRKJSON ") :])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Sample(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50=raw["p50"] / 1000,
        p90=raw["p90"] / 1000,
        p99=raw["p99"] / 1000,
        errors=errors,
        extra={"max": raw["max"] / 1000},
    )


def run_wrk(url: str, script: Path, connections: int, seconds: float, prefix: list[str]) -> Sample:
    """prefix: what to run wrk under, e.g. ``["nice", "-n", "-10", "taskset", "-c", "0"]``."""
    cmd = wrk_command(url, script, connections, seconds, prefix)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-1000:]}")
    return parse_wrk(proc.stdout)


def fixed_rate_connections(rate: float, expected_latency_s: float = 0.08) -> int:
    """Enough connections that each one's send interval is ~2x the expected latency."""
    return max(1, math.ceil(rate * expected_latency_s * 2))


def run_h2load(url: str, body_file: Path, rate: float, seconds: float, prefix: list[str], log_file: Path) -> Sample:
    clients = fixed_rate_connections(rate)
    cmd = [
        *prefix,
        "h2load", "--h1", "-c", str(clients), "-t", "1", "-m", "1",
        "--rps", f"{rate / clients:.4f}", "-D", str(max(1, round(seconds))),
        "-d", str(body_file), "--log-file", str(log_file),
        *[arg for key, value in HEADERS.items() for arg in ("-H", f"{key.lower()}: {value}")],
        url,
    ]  # fmt: skip
    log_file.unlink(missing_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-1000:]}")
    return parse_h2load_log(log_file, seconds, rate)


def parse_h2load_log(log_file: Path, seconds: float, rate: float) -> Sample:
    latencies: list[float] = []
    errors = 0
    for line in log_file.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        if not parts[1].startswith("2"):
            errors += 1
            continue
        latencies.append(int(parts[2]) / 1000)
    if not latencies:
        raise RuntimeError(f"h2load logged no successful request in {log_file}")
    pct = percentiles(latencies)
    return Sample(len(latencies), seconds, pct[50], pct[90], pct[99], errors, {"target_rps": rate})


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[int, float]:
    """Nearest-rank percentiles (what wrk and HdrHistogram report)."""
    ordered = sorted(values)
    n = len(ordered)
    return {p: ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))] for p in points}


def run_ttfb(url: str, body_file: Path, connections: int, seconds: float, prefix: list[str]) -> Sample:
    """Streaming: time to first body byte (and to the end) from benchmarks/overhead/ttfb.py."""
    cmd = [
        *prefix,
        sys.executable, "-m", "benchmarks.overhead.ttfb", "--url", url, "--body-file", str(body_file),
        "--connections", str(connections), "--seconds", str(seconds),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("TTFBJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"ttfb client failed ({proc.returncode}): {proc.stderr[-1500:]}")
    raw = json.loads(line[len("TTFBJSON ") :])
    ttfb, total = raw["ttfb"], raw["total"]
    return Sample(
        requests=raw["requests"], seconds=raw["seconds"], p50=ttfb["50"], p90=ttfb["90"], p99=ttfb["99"],
        errors=raw["errors"], extra={"total_p50": total["50"], "total_p90": total["90"], "total_p99": total["99"]},
    )  # fmt: skip


def missing(fixed_rate: bool = True) -> str | None:
    """Why the load generators cannot run here, or None when they can (h2load only for fixed rates)."""
    tools = [("wrk", "wrk"), ("taskset", "util-linux")] + ([("h2load", "nghttp2-client")] if fixed_rate else [])
    for tool, package in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None
