"""Routing quality per shared file, in-domain, leave-one-domain-out and adapted:
``python -m benchmarks.routing_quality`` (see ``run.py``)."""

import os

# As every `switchyard` command does (gateway/cli.py), before anything here imports numpy: one BLAS
# thread, so that the router's cost measured here is the cost it has when it serves.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
