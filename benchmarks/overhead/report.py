"""Turn the overhead benchmark's raw records into benchmarks/results/overhead.md.

Every comparison is made within a round (target minus ``direct`` in the same round and step;
target over ``passthrough-aiohttp`` in the same round) and then summarised over rounds as
``median [min–max]``, so slow drift of the machine cancels instead of favouring whoever ran
in the quiet minute.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable
from typing import Any

from benchmarks.overhead.checks import checks_section, method_section
from benchmarks.overhead.stats import BASE, Summary, stat, table


def _version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem_kib = 0
    packages = {}
    for name in ("aiohttp", "httpx", "uvicorn", "uvloop", "httptools", "starlette", "fastapi", "litellm"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {mem_kib / 1024 / 1024:.0f} GiB, Linux {platform.release()}",
        "tools": {
            "wrk": _version(["wrk", "-v"]),
            "h2load": _version(["h2load", "--version"]),
            "nginx": _version(["nginx", "-v"]),
        },
        "packages": packages,
    }


# ---- rendering ----


ABSOLUTE = {"direct": "direct (absolute)", "switchyard-hit": "switchyard-hit (absolute: never reaches the upstream)"}


def _latency_section(s: Summary, kind: str, title: str, keys: tuple[str, ...]) -> list[str]:
    steps = s.steps("latency", kind)
    if not steps:
        return []
    header = ["target", *[f"{step}: added {k}" for step in steps for k in keys]]
    rows = []
    for t in s.targets:
        if t in ABSOLUTE:
            vals = [stat(list(s.absolute("latency", st, t, k).values())) for st in steps for k in keys]
        else:
            vals = [stat(list(s.added("latency", st, t, k).values())) for st in steps for k in keys]
        if any(v != "–" for v in vals):
            rows.append([ABSOLUTE.get(t, t), *vals])
    return [f"### {title}", "", *table(header, rows), ""]


def _ratio_cell(s: Summary, mine: dict[int, float], other: str, get: Callable[[str], dict[int, float]]) -> str:
    base = {k: v for k, v in get(other).items() if v > 0}
    return stat(s.ratio({k: v for k, v in mine.items()}, base)) if other in s.targets else "–"


def _ratios_section(s: Summary) -> list[str]:
    step32 = next((st for st in s.steps("latency", "wrk") if st.endswith("c=32")), None)
    if step32 is None:
        return []
    getters: dict[str, Callable[[str], dict[int, float]]] = {
        "added p50": lambda t: s.added("latency", step32, t, "p50"),
        "added p99": lambda t: s.added("latency", step32, t, "p99"),
        "CPU s / 1k req": lambda t: s.absolute("latency", step32, t, "cpu_s_per_1k"),
    }
    rows = []
    for t in s.targets:
        if t in ABSOLUTE:
            continue
        cells = []
        for get in getters.values():
            mine = get(t)
            cells += [_ratio_cell(s, mine, BASE, get), _ratio_cell(s, mine, "litellm", get)]
        rows.append([t, *cells])
    header = ["target"] + [f"{name} ({step32}) × {o}" for name in getters for o in ("aiohttp", "litellm")]
    note = (
        "Ratios are taken within each round (target over the reference in the same round), then summarised "
        "as median [min–max]; below 1 means the target adds less or costs less than the reference. Ratios of "
        "added latency are only as steady as the reference's added latency, which is small for aiohttp."
    )
    return ["### Ratios to passthrough-aiohttp and litellm, 50 ms upstream", "", *table(header, rows), "", note, ""]


def _throughput_section(s: Summary) -> list[str]:
    if not any(r["phase"] == "throughput" for r in s.records):
        return []
    base = {k: v[0] for k, v in s.best_rps(BASE).items()}
    lite = {k: v[0] for k, v in s.best_rps("litellm").items()}
    rows = []
    for t in s.targets:
        best = s.best_rps(t)
        if not best:
            rows.append([t, "none under 100 ms", "", "", "", "", ""])
            continue
        rps = {k: v[0] for k, v in best.items()}
        conns = sorted(v[1] for v in best.values())
        cpu = [float(v[2]["cpu_s_per_1k"]) for v in best.values() if "cpu_s_per_1k" in v[2]]
        p99 = [float(v[2]["p99"]) for v in best.values()]
        rows.append([t, stat(list(rps.values()), "{:.0f}"), ",".join(map(str, conns)), stat(p99),
                     stat(s.ratio(rps, base)), stat(s.ratio(rps, lite), "{:.1f}"), stat(cpu, "{:.3f}")])  # fmt: skip
    header = ["target", "req/s (p99 < 100 ms)", "at connections", "p99 there (ms)",
              f"× {BASE}", "× litellm", "CPU s / 1k req there"]  # fmt: skip
    return ["### Throughput, instant upstream", "", *table(header, rows), ""]


def _resources_section(s: Summary, rss: dict[str, dict[str, float]]) -> list[str]:
    rows = []
    step = next((st for st in s.steps("latency", "wrk") if st.endswith("c=32")), None)
    base_cpu = s.per_round("latency", step, BASE, lambda r: float(r.get("cpu_s_per_1k", 0))) if step else {}
    for t in s.targets:
        cpu = s.per_round("latency", step, t, lambda r: float(r.get("cpu_s_per_1k", 0))) if step else {}
        server = {"direct": "upstream"}.get(t, "switchyard" if t.startswith("switchyard") else t)
        peak = max((phase.get(server, 0.0) for phase in rss.values()), default=0.0)
        rows.append([t, stat(list(cpu.values()), "{:.3f}"), stat(s.ratio(cpu, base_cpu)),
                     f"{peak:.0f}" if peak else "–"])  # fmt: skip
    header = ["target", f"CPU s / 1k req ({step}, 50 ms)", f"CPU × {BASE}", "peak RSS MiB (VmHWM)"]
    note = ("CPU is utime+stime of the process under test (its whole process tree) from /proc/PID/stat "
            "before and after each run; for `direct` it is nginx. Peak RSS is VmHWM at the end of each phase, "
            "max over phases; the switchyard targets share one process.")  # fmt: skip
    return ["### CPU and memory of the process under test", "", *table(header, rows), "", note, ""]


# Why the missed targets are missed, from py-spy profiles of the gateway under the same load
# (`python -m benchmarks.overhead.profiling`, results in overhead_profile*.md beside this report).
CAUSES = [
    "## Where the time goes, and what would remove it",
    "",
    "Profiles: [overhead_profile.md](overhead_profile.md) (spans exported) and "
    "[overhead_profile_no_span_export.md](overhead_profile_no_span_export.md), made by "
    "`python -m benchmarks.overhead.profiling [--no-span-export]`: py-spy samples of the gateway serving "
    '`model: "auto"` with a new prompt per request, charged to stages.',
    "",
    "Instructions per `auto` request, counted with callgrind (`benchmarks.overhead.inprocess`, 640 requests at "
    "32 concurrent; overhead_profile.md has the command), which counts the same on a loaded machine as on a "
    "quiet one: 2.61 M with spans off and 3.21 M with spans exported on 2026-11-27 (511c60d), against 2.64 M "
    "and 3.55 M on 2026-11-26 (947d085) and 3.18 M and 4.47 M before the router's and the policy's work "
    "(315117b).",
    "",
    "- **The learned router** is still the largest single stage: `assess()` takes about 0.94 M instructions on "
    "a short prompt (1.5 M before the numpy calls were cut) and 22.7 M on a ~2,000-token one (28.3 M before "
    "the byte-table counts), 0.09 ms p50 on a short prompt on this machine when quiet "
    "(`python -m benchmarks.routing_quality.latency`) but ~0.15 ms under load, when every stage's memory "
    "and code miss cache between requests. What is left is numpy's per-call overhead on small arrays "
    "(hashing word and character n-grams, two sparse gathers), the text's regex passes on long prompts and "
    "the nearest-neighbour search (a matrix-vector product over the stored prompts and a partial sort). "
    "What would remove it: a compiled featuriser, or routing on a prompt's features cached upstream; "
    "repeated prompts already cost a dict lookup (the gateway remembers 4,096 recent assessments per tenant).",
    "- **Spans** cost about 0.59 M instructions per request (0.85 M before 2026-11-27: spans are now "
    "started without the SDK's general path where it decides nothing and written straight to OTLP's wire "
    "format): recording the 3 spans, then the OTLP exporter thread encoding and posting batches on the same "
    "GIL. Sampling removes most of it: `OTEL_TRACES_SAMPLER=parentbased_traceidratio "
    "OTEL_TRACES_SAMPLER_ARG=0.1`; without an OTLP endpoint spans are not recorded at all.",
    "- The rest (HTTP server, aiohttp client, pipeline, policy) is what a pinned deployment pays: see its CPU "
    "per request against the passthrough's in the table above.",
    "",
]


def render(results: dict[str, Any]) -> str:
    s = Summary(results)
    meta: dict[str, Any] = results["meta"]
    rss: dict[str, dict[str, float]] = results.get("rss", {})

    lines = [
        "# Gateway overhead",
        "",
        f"Made by `{meta['command']}` on {meta['date']}.",
        f"Machine: {meta['machine']}; Python {meta['python']}.",
        "",
        *checks_section(s, results),
        "## Results",
        "",
        "Latency in ms. Every cell is the median over rounds [min–max]; *added* = target minus `direct` "
        "in the same round and step.",
        "",
        *_latency_section(s, "wrk", "Added latency, non-streaming, 50 ms upstream (wrk, closed loop)",
                          ("p50", "p90", "p99")),
        *_latency_section(s, "rate", "Added latency at fixed rates, non-streaming, 50 ms upstream (h2load)",
                          ("p50", "p99")),
        *_latency_section(s, "ttfb", "Added time to first byte, streaming, 50 ms upstream (own client)",
                          ("p50", "p90", "p99")),
        *_latency_section(s, "ttfb", "Added time to the end of the stream (same runs)",
                          ("total_p50", "total_p99")),
        *_throughput_section(s),
        *_ratios_section(s),
        *_resources_section(s, rss),
        *CAUSES,
        *method_section(s, results),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"
