"""Does test-time compute (votes across small models, agreement cascades) pay on recorded outcomes?

    python -m benchmarks.test_time_compute [--data PATH] [--out DIR] [--fit-rows N] [--quick]

Writes benchmarks/results/test_time_compute.md and test_time_compute.png. The package:
`data` (recorded outcomes and their replay), `calibrate` (fitting the answer model), `plans` (the
arms compared), `frontier` (cost-quality frontiers and the policy sweep), `validate` (fit quality
on validation), `report` (tables and plot) and `run` (the whole benchmark).
"""

from benchmarks.test_time_compute.run import main

__all__ = ["main"]
