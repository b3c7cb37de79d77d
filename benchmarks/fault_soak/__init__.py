"""Fault soak: thousands of mixed requests through the gateway while a deployment misbehaves and
Redis dies and comes back; reports client-visible failures, billing against the simulator's own
count of served calls, added latency, memory growth, log lines per fault class and hedging's p99.

`python -m benchmarks.fault_soak [--requests N]`; the report goes to benchmarks/results/fault_soak.md.
"""

from .soak import SoakReport, SoakSettings, run_soak

__all__ = ["SoakReport", "SoakSettings", "run_soak"]
