"""Router cost for the routing-quality report: load time and assess() latency."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.routing_quality.files import ROOT
from gateway.router.model import Router
from gateway.router.training.data import RoutingData

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
    ms = np.array(lat) * 1e3
    short = short_latency(router)
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
    ]
