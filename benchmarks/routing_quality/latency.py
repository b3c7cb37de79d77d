"""Router cost for the routing-quality report: load time and assess() latency.

Run alone, ``python -m benchmarks.routing_quality.latency``, it measures the shipped artifact and
rewrites only the report's last section ("Cost of the router"): the router's speed changes more
often than its quality, and the full report refits every router.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.routing_quality.files import DEFAULT_DATA, RESULTS, ROOT
from gateway.router.model import DEFAULT_ARTIFACT, Router, load_router
from gateway.router.training.data import RoutingData, load_many

SECTION = "## Cost of the router"
# The budgets for assess(): p50 on short prompts, p99 on ~2,000-token prompts (ms).
SHORT_P50_BUDGET_MS = 0.3
LONG_P99_BUDGET_MS = 10.0

SHORT_PROMPTS = ("hi", "Say hi.", "What is the capital of France?", "Translate 'good morning' into German.",
                 "Write a haiku about autumn.", "What is 17 * 23?", "Who wrote Pride and Prejudice?",
                 "Give me three names for a cat.")


def long_prompts(data: RoutingData, tokens: int = 2000, count: int = 30) -> list[str]:
    """~`tokens`-token prompts made by concatenating validation prompts (cl100k counts)."""
    out, buf, n = [], [], 0.0
    for p, t in zip(data.prompts, np.nan_to_num(data.prompt_tokens, nan=500.0), strict=True):
        buf.append(p)
        n += t
        if n >= tokens:
            out.append("\n\n".join(buf))
            buf, n = [], 0.0
            if len(out) == count:
                break
    return out


def short_latency(router: Router) -> np.ndarray:
    lat = []
    for _ in range(200):
        for p in SHORT_PROMPTS:
            t = time.perf_counter()
            router.assess(p)
            lat.append(time.perf_counter() - t)
    return np.array(lat) * 1e3


def latency_section(router: Router, data: RoutingData, artifact: Path) -> list[str]:
    cold = []
    for _ in range(5):  # fresh interpreter each time: import + load, what a server start pays
        code = ("import time; t=time.perf_counter(); from gateway.router import load_router; "
                f"load_router({str(artifact)!r}); print(time.perf_counter()-t)")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        cold.append(float(res.stdout.strip()))
    prompts = long_prompts(data)
    lat = []
    for _ in range(10):
        for p in prompts:
            t = time.perf_counter()
            router.assess(p)
            lat.append(time.perf_counter() - t)
    short = short_latency(router)
    ms = np.array(lat) * 1e3
    short_p50, long_p99 = float(np.median(short)), float(np.percentile(ms, 99))
    size = sum(f.stat().st_size for f in artifact.iterdir()) / 1e6
    return [
        f"Artifact `{artifact.name}`: {size:.2f} MB on disk. Load average during the measurement: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine slows memory-bound "
        "long prompts far more than short ones).", "",
        "| measurement | p50 | p99 | spread |", "| --- | ---: | ---: | --- |",
        f"| import + load_router, fresh interpreter (5 runs) | {np.median(cold) * 1e3:.0f} ms | | "
        f"{min(cold) * 1e3:.0f}–{max(cold) * 1e3:.0f} ms |",
        f"| assess(), {len(SHORT_PROMPTS)} short prompts × 200 | {np.median(short):.3f} ms | "
        f"{np.percentile(short, 99):.3f} ms | max {short.max():.3f} ms |",
        f"| assess(), {len(prompts)} prompts of ~2,000 tokens × 10 | {np.median(ms):.2f} ms | "
        f"{np.percentile(ms, 99):.2f} ms | p90 {np.percentile(ms, 90):.2f}, max {ms.max():.2f} ms |",
        "",
        f"Budgets: assess() p50 on short prompts ≤ {SHORT_P50_BUDGET_MS} ms: "
        f"{'met' if short_p50 <= SHORT_P50_BUDGET_MS else 'missed'} ({short_p50:.3f} ms); p99 on ~2,000-token "
        f"prompts ≤ {LONG_P99_BUDGET_MS:g} ms: {'met' if long_p99 <= LONG_P99_BUDGET_MS else 'missed'} "
        f"({long_p99:.2f} ms). Measured with {os.environ.get('OPENBLAS_NUM_THREADS', 'the default number of')} BLAS "
        "thread(s), as `switchyard serve` runs (benchmarks/routing_quality/__init__.py), "
        f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routing_quality.latency",
        description="Measure the shipped router's load time and assess() latency and rewrite the "
                    f"'{SECTION}' section of routing_quality.md (nothing else is refitted).")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                    help=f"folder with mmlu_pro.jsonl (long prompts are built from its validation split), "
                         f"default {DEFAULT_DATA}")
    ap.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="router artifact, default the shipped one")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"results folder, default {RESULTS}")
    a = ap.parse_args(argv)
    data = load_many([a.data_dir / "mmlu_pro.jsonl"])
    section = [SECTION, "", *latency_section(load_router(a.artifact), data.subset(data.split == "validation"),
                                             a.artifact)]
    a.out.mkdir(parents=True, exist_ok=True)
    report = a.out / "routing_quality.md"
    text = report.read_text(encoding="utf-8") if report.exists() else ""
    head = text.split(SECTION)[0] if SECTION in text else text
    report.write_text(head + "\n".join(section), encoding="utf-8")
    print("\n".join(section))


if __name__ == "__main__":
    main()
