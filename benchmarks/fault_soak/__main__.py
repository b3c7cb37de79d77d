"""`python -m benchmarks.fault_soak`: run the soak and write benchmarks/results/fault_soak.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from benchmarks.progress import count, seconds

from .report import broken, render
from .soak import SoakSettings, run_soak

RESULTS = Path(__file__).resolve().parents[1] / "results" / "fault_soak.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fault_soak", description=__doc__)
    p.add_argument("--requests", type=count, default=10_000, help="requests in the faulted run (default: %(default)s)")
    p.add_argument("--baseline-requests", type=count, help="requests in the fault-free run (default: --requests)")
    p.add_argument("--hedge-requests", type=count, help="requests per hedging arm (default: --requests / 5)")
    p.add_argument("--concurrency", type=count, default=64)
    p.add_argument("--hedge-concurrency", type=count, default=8, help="concurrency of the hedging arms (default: 8)")
    p.add_argument("--latency-requests", type=count, help="requests per latency arm (default: --requests / 10)")
    p.add_argument("--latency-concurrency", type=count, default=8,
                   help="concurrency of the latency arms (default: %(default)s)")
    p.add_argument("--outage-s", type=seconds, default=10.0, help="how long Redis stays dead (default: %(default)s)")
    p.add_argument("--out", type=Path, default=RESULTS, help="report file (default: %(default)s)")
    args = p.parse_args(argv)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    settings = SoakSettings(args.requests, args.baseline_requests, args.hedge_requests, args.concurrency,
                            args.outage_s, hedge_concurrency=args.hedge_concurrency,
                            latency_requests=args.latency_requests, latency_concurrency=args.latency_concurrency)
    report = asyncio.run(run_soak(settings))
    command = "python -m benchmarks.fault_soak " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(report, command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    # Exit 1 on what the soak exists to catch (as the fuzz does on a finding), so that a script or
    # CI step running it does not read a run that lost requests or bills as a pass.
    problems = broken(report)
    for what in problems:
        print(f"python -m benchmarks.fault_soak: {what}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
