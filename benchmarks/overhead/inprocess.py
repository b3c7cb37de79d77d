"""The gateway's request path in one process, for instruction counts: no HTTP server, no load generator.

    valgrind --tool=callgrind --instr-atstart=no /path/to/python -m benchmarks.overhead.inprocess \\
        --upstream http://127.0.0.1:PORT --requests 500

Builds the app as `switchyard serve` does (same config as the benchmark's switchyard targets, the
same logging set-up, spans exported when OTEL_EXPORTER_OTLP_ENDPOINT is set), runs its lifespan,
then drives the ASGI app directly with `--requests` chat requests (`model: "auto"`, temperature 0.7,
a new prompt each, as the `switchyard-auto` target) against a zero-delay upstream (the benchmark's
nginx, instant port). Under callgrind (`--instr-atstart=no`) it switches instrumentation on only
around the measured requests (`callgrind_control -i on|off`), so the count divided by `--requests`
is the gateway's instructions per request, the exporter thread's share included. Without callgrind
it prints CPU and wall time per request.

Kept free of newer gateway APIs so that the same file can measure an older checkout (put it on
PYTHONPATH in place of this one's gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

API_KEY = "sk-switchyard-bench-loopback-5f0c2e9a7d4b41c8"
PROMPT = "Summarize the benefits of unit testing in two sentences."


def _config(upstream: str) -> str:
    # the same gateway config the benchmark serves (targets.switchyard_config), inlined for old checkouts
    lines = ["deployments:"]
    for name, price in (("small", 0.18), ("large", 0.88)):
        lines += [f"  - name: {name}", f"    model: openai/sim-{name}", f"    api_base: {upstream}/v1",
                  f"    tier: {name}", f"    price: {{input_per_mtok: {price}, output_per_mtok: {price}}}"]  # fmt: skip
    return "\n".join([*lines, "default_policy: balanced", ""])


def _scope(body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {API_KEY}".encode()),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}  # fmt: skip


async def _one(app: Any, i: int) -> int:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": f"{PROMPT} [{i}]"}],
                       "temperature": 0.7, "max_tokens": 64}, separators=(",", ":")).encode()  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # the client never disconnects
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(body), receive, send)
    return status


def _callgrind(state: str) -> None:
    """Switch callgrind's instrumentation of this process on or off (nothing outside callgrind)."""
    if os.environ.get("SWITCHYARD_CALLGRIND"):
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


async def _drive(app: Any, warmup: int, requests: int, concurrency: int,
                 cprofile: Path | None = None) -> tuple[float, float]:
    async with app.router.lifespan_context(app):
        for i in range(warmup):
            if (status := await _one(app, -1 - i)) != 200:
                raise SystemExit(f"warm-up request answered {status}")
        _callgrind("on")
        await asyncio.sleep(0.5)  # callgrind polls for the command: let it land before counting starts
        profile = cProfile.Profile() if cprofile else None
        if profile is not None:
            profile.enable()
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, requests, concurrency):
            batch = range(start, min(start + concurrency, requests))
            statuses = await asyncio.gather(*(_one(app, i) for i in batch))
            if any(s != 200 for s in statuses):
                raise SystemExit(f"a request answered {statuses}")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        _callgrind("off")
        if profile is not None and cprofile is not None:
            profile.disable()
            profile.dump_stats(cprofile)
    return cpu, wall


def time_decide(app: Any, calls: int) -> float:
    """Seconds of CPU per `decide()` of the default policy for one routed prompt (router excluded),
    with the live view and the calibrated threshold read as the pipeline reads them. Under callgrind
    (SWITCHYARD_CALLGRIND set) the count covers these calls alone."""
    from gateway import signal as routing
    from gateway.policy import Overrides, decide

    svc = app.state.services
    svc.calibrator.prepare()
    policy = svc.policies.get(svc.config.default_policy)
    messages = [{"role": "user", "content": f"{PROMPT} [decide]"}]
    sig = routing.assess(svc.router.current, messages, svc.config.deployments)
    for _ in range(min(calls, 100)):  # warm: whatever is worked out on first use
        decide(policy, sig, svc.catalog, svc.upstreams.health.view(), Overrides(), 64, None)
    _callgrind("on")  # under callgrind, only the calls below are counted: instructions ÷ calls
    time.sleep(0.5)   # callgrind polls for the command: let it land before counting starts
    started = time.process_time()
    for _ in range(calls):
        cutoff = svc.calibrator.cutoff(policy, "bench") if policy.spec.target is not None else None
        decide(policy, sig, svc.catalog, svc.upstreams.health.view(), Overrides(), 64, cutoff)
    spent = time.process_time() - started
    _callgrind("off")
    return spent / calls


FEATURES = ("spans", "observer", "ledger", "records")
# Callgrind runs the gateway about 50-80 times slower than full speed, but the batch writers wait
# wall-clock times (the ledger's and the request log's linger, the request-line flusher's interval,
# the span exporter's schedule): left as they are, a batch would carry one or two items where at
# full speed it carries dozens, and the count would charge each request a batch's fixed cost.
CALLGRIND_STRETCH = 50.0


def stretch_batching(app: Any, factor: float) -> None:
    """Make the app's batch writers wait `factor` times longer (what exists in the checkout measured);
    the span exporter's schedule is stretched through OTEL_BSP_SCHEDULE_DELAY before the app is built."""
    svc = app.state.services
    for writer in (getattr(svc, "ledger", None), getattr(svc, "requests", None)):
        if writer is not None and isinstance(getattr(writer, "linger_s", None), float):
            writer.linger_s *= factor
    for handler in logging.getLogger().handlers:
        if isinstance(getattr(handler, "flush_s", None), float):
            handler.flush_s *= factor  # type: ignore[attr-defined]


def switch_off(app: Any, features: set[str]) -> None:
    """Take ops features out of the request path, to count what each costs (`--without`).
    spans: nothing recorded nor propagated (as with no OTLP endpoint; set before the app is built);
    observer: no metrics and no request log line; ledger: bills are not queued for the durable
    ledger (budgets still settle); records: no request records."""
    svc = app.state.services
    if "observer" in features:
        def finish(trail: Any, *_: Any) -> None:
            trail.finished = True
        for name in ("decided", "looked_up", "billed"):
            setattr(svc.observer, name, lambda *_: None)
        svc.observer.finish = finish
    if "ledger" in features:
        svc.ledger.add = lambda _spent: None
    if "records" in features:
        svc.requests = None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.overhead.inprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--upstream", required=True, help="zero-delay OpenAI-compatible upstream, without /v1")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    p.add_argument("--cprofile", type=Path, default=None, help="write cProfile stats of the measured requests")
    p.add_argument("--decide", type=int, default=0, help="only time this many policy decide() calls")
    p.add_argument("--stretch", type=float, default=None,
                   help="stretch the batch writers' waits by this factor (default: "
                        f"{CALLGRIND_STRETCH:g} under callgrind (SWITCHYARD_CALLGRIND set), else 1)")
    p.add_argument("--without", default="", help=f"comma-separated ops features to switch off: {', '.join(FEATURES)}")
    a = p.parse_args(argv)
    without = {f for f in a.without.split(",") if f}
    if unknown := without - set(FEATURES):
        p.error(f"--without: unknown {sorted(unknown)}; known: {', '.join(FEATURES)}")
    if "spans" in without:
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    stretch = a.stretch if a.stretch is not None else (CALLGRIND_STRETCH if os.environ.get("SWITCHYARD_CALLGRIND")
                                                       else 1.0)
    if stretch != 1.0:
        delay_ms = float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", 5000))
        os.environ["OTEL_BSP_SCHEDULE_DELAY"] = str(int(delay_ms * stretch))
    from gateway import cli
    from gateway.api.app import create_app
    from gateway.config import load_config

    params = inspect.signature(cli._setup_logging).parameters
    cli._setup_logging("info", "json") if len(params) > 1 else cli._setup_logging("info")  # as `serve` does
    config = Path(tempfile.mkdtemp()) / "gateway.yaml"
    config.write_text(_config(a.upstream))
    # Background loops that poll on a timer (policy follower, router sync, calibration every second)
    # run 50x more often per request under callgrind than at full speed: off, they stay out of the count.
    quiet = {"watch_policies_s": None, "watch_router_s": None, "calibrate_s": 3600.0}
    accepted = inspect.signature(create_app).parameters
    app = create_app(load_config(str(config)), **{k: v for k, v in quiet.items() if k in accepted})
    switch_off(app, without)
    stretch_batching(app, stretch)
    if a.decide:
        print(f"decide(): {time_decide(app, a.decide) * 1e6:.1f} µs CPU per call ({a.decide} calls)")
        return 0
    import uvloop

    cpu, wall = uvloop.run(_drive(app, a.warmup, a.requests, a.concurrency, a.cprofile))
    print(f"{a.requests} requests: {cpu / a.requests * 1000:.3f} ms CPU, {wall / a.requests * 1000:.3f} ms wall "
          "per request", file=sys.stdout)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
