"""Per-request cost of a requests-per-minute + tokens-per-minute check on a real Redis.

Compares, for the same two limits (one request and ~300 tokens per check, limits high enough that
every check passes, so each does its full work):

- `switchyard`: `RedisStore.admit`, one Lua script that checks both sliding windows (60 one-second
  buckets each) and only then counts the request in both: one round trip.
- `limits-moving`: the `limits` package's moving window (exact, a sorted set of every hit),
  `hit()` once per limit (redis-py backend): two round trips, and no way to check both before
  counting either.
- `limits-sliding-counter`: its sliding window counter (two fixed windows, weighted: approximate).

For each: wall time per check (mean, p50, p99), the client's CPU per check, and Redis's CPU per
check (from INFO commandstats). Results: benchmarks/results/rate_limits.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis

from benchmarks.progress import count
from gateway.admission_store import Admission, Window
from gateway.state import RedisStore
from gateway.windows import STEP_MS, WINDOW_STEPS

RESULTS = Path(__file__).resolve().parents[1] / "results" / "rate_limits.md"
TOKENS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis() -> tuple[subprocess.Popen[bytes], int, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port, workdir = _free_port(), tempfile.mkdtemp(prefix="sy-bench-redis-")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if redis.Redis(port=port).ping():
                return process, port, workdir
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


def _redis_cpu_us(port: int) -> float:
    stats = redis.Redis(port=port).info("commandstats")
    return float(sum(v["usec"] for v in stats.values()))


async def _measure(check: Callable[[int], Awaitable[bool]], n: int, port: int) -> dict[str, float]:
    for i in range(min(200, n)):  # warm: scripts loaded, connections open
        _passed(await check(i))
    redis.Redis(port=port).config_resetstat()
    times, passed = [], 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        passed += await check(i)
        times.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    _passed(passed == n)
    times.sort()
    return {"mean_us": wall / n * 1e6, "p50_us": statistics.median(times) * 1e6,
            "p99_us": times[int(0.99 * (n - 1))] * 1e6, "client_cpu_us": cpu / n * 1e6,
            "redis_cpu_us": _redis_cpu_us(port) / n}


def _passed(passed: bool) -> None:
    """Every check must pass: a refused one stops short of counting, so the figures would be the
    cost of a refusal, not of the full check they are reported as."""
    if not passed:
        raise SystemExit("python -m benchmarks.rate_limits: a check was refused, so it did not do its full work; "
                         "the limits are meant to be high enough that every check passes")


async def _switchyard(port: int, n: int, full: bool) -> dict[str, float]:
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    tag = "full" if full else "fresh"
    windows = (Window(f"sy:window:{{{tag}}}:rpm", 1e12, 1), Window(f"sy:window:{{{tag}}}:tpm", 1e12, TOKENS))
    if full:  # steady traffic: every one of the window's 60 one-second buckets holds counts
        now = int(time.time() * 1000) // STEP_MS
        for w in windows:
            redis.Redis(port=port).hset(w.key, mapping={str(now - b): 5 for b in range(WINDOW_STEPS)})
    try:
        async def check(i: int) -> bool:
            return (await store.admit(Admission(f"h{i}", 0.0, (), windows))).verdict == "ok"

        return await _measure(check, n, port)
    finally:
        await store.close()


async def _limits(port: int, n: int, strategy: str) -> dict[str, float]:
    from limits import RateLimitItemPerMinute
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

    storage = RedisStorage(f"async+redis://127.0.0.1:{port}/0", implementation="redispy")
    kind = MovingWindowRateLimiter if strategy == "moving" else SlidingWindowCounterRateLimiter
    limiter = kind(storage)
    rpm, tpm = RateLimitItemPerMinute(10**9), RateLimitItemPerMinute(10**12)

    async def check(_i: int) -> bool:
        return await limiter.hit(rpm, "bench", "rpm") and await limiter.hit(tpm, "bench", "tpm", cost=TOKENS)

    return await _measure(check, n, port)


def _table(rows: dict[str, dict[str, float]]) -> str:
    out = ["| implementation | round trips | mean µs | p50 µs | p99 µs | client CPU µs | Redis CPU µs |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    trips = {"switchyard": 1, "switchyard (60 full buckets)": 1, "limits-moving": 2, "limits-sliding-counter": 2}
    for name, r in rows.items():
        out.append(f"| {name} | {trips[name]} | {r['mean_us']:.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
                   f"{r['client_cpu_us']:.0f} | {r['redis_cpu_us']:.1f} |")
    return "\n".join(out)


async def run(n: int) -> dict[str, dict[str, float]]:
    process, port, workdir = _start_redis()
    try:
        rows = {"switchyard": await _switchyard(port, n, full=False)}
        rows["switchyard (60 full buckets)"] = await _switchyard(port, n, full=True)
        rows["limits-moving"] = await _limits(port, n, "moving")
        rows["limits-sliding-counter"] = await _limits(port, n, "sliding")
        return rows
    finally:
        process.terminate()
        process.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rate_limits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=count, default=5000, help="checks per implementation")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the Markdown table ('-': none)")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.checks))
    table = _table(rows)
    print(table)
    if str(args.out) != "-":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Rate-limit check cost (requests + tokens per minute, one check per request)\n\n"
                            f"`python -m benchmarks.rate_limits --checks {args.checks}` on {os.cpu_count()} "
                            f"shared cores, Redis on loopback, one check at a time.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
