"""Instructions per assess(), counted by callgrind: the same short or ~2,000-token prompts as the
latency benchmark, assessed after a warm-up with instrumentation on around them alone.

    SWITCHYARD_CALLGRIND=1 valgrind --tool=callgrind --instr-atstart=no /path/to/python \\
        -m benchmarks.routing_quality.assess_count --kind short --n 300

Run it twice with different ``--n`` and divide the difference of the two totals ("Collected") by the
difference of ``n``: what switching instrumentation on and off costs cancels. A count does not move
with the machine's load, unlike the latency benchmark's timings (``/path/to/python`` is the real
interpreter, not a pyenv shim, which valgrind would follow instead).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from benchmarks.routing_quality.files import DEFAULT_DATA
from benchmarks.routing_quality.latency import SHORT_PROMPTS, long_prompts
from gateway.router.model import load_router
from gateway.router.training.data import load_many


def _callgrind(state: str) -> None:
    """Switch callgrind's instrumentation of this process on or off (nothing outside callgrind)."""
    if os.environ.get("SWITCHYARD_CALLGRIND"):
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)
        time.sleep(0.5)  # callgrind polls for the command: let it land before going on


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routing_quality.assess_count",
                                 description="assess() N prompts after a warm-up; under callgrind "
                                             "(SWITCHYARD_CALLGRIND set) only those N are counted")
    ap.add_argument("--kind", choices=("short", "long"), default="short",
                    help="the latency benchmark's 8 short prompts, or its 30 prompts of ~2,000 tokens")
    ap.add_argument("--n", type=int, default=300, help="how many assess() calls to count (prompts cycle)")
    a = ap.parse_args(argv)
    if a.kind == "short":
        prompts = list(SHORT_PROMPTS)
    else:
        data = load_many([DEFAULT_DATA / "mmlu_pro.jsonl"])
        prompts = long_prompts(data.subset(data.split == "validation"))
    router = load_router()
    for p in prompts * 3:
        router.assess(p)
    _callgrind("on")
    for i in range(a.n):
        router.assess(prompts[i % len(prompts)])
    _callgrind("off")


if __name__ == "__main__":
    main()
