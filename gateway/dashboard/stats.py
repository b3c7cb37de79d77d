"""This replica's recent requests: latency and status of the last `size` chat completions, kept in a
fixed ring (no allocation per request, ~0.3 µs), summarised only when the dashboard asks.

Per replica by design: the durable ledger holds spend across replicas, while latency and error
rates here describe the process that answers the dashboard's request.
"""

from __future__ import annotations

import math
import time
from typing import Any

DEFAULT_SIZE = 2048


class RequestStats:
    __slots__ = ("_at", "_i", "_latency", "_status", "size", "started", "total")

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._latency = [0.0] * size
        self._status = [0] * size
        self._at = [0.0] * size
        self._i = 0
        self.total = 0  # every request observed since start, not only those the ring still holds
        self.started = time.time()

    def observe(self, latency_s: float, status: int) -> None:
        i = self._i
        self._latency[i] = latency_s
        self._status[i] = status
        self._at[i] = time.time()
        self._i = (i + 1) % self.size
        self.total += 1

    def summary(self) -> dict[str, Any]:
        """Percentiles and error rates over the requests the ring holds (the most recent `size`)."""
        n = min(self.total, self.size)
        latencies = sorted(self._latency[:n])
        statuses = self._status[:n]
        by_status: dict[str, int] = {}
        for s in statuses:
            by_status[str(s)] = by_status.get(str(s), 0) + 1
        client = sum(1 for s in statuses if 400 <= s < 500)
        server = sum(1 for s in statuses if s >= 500)
        oldest = min(self._at[:n]) if n else None
        return {"requests": n, "requests_since_start": self.total, "since": oldest,
                "started": self.started,
                "latency_p50_ms": _ms(percentile(latencies, 0.50)), "latency_p99_ms": _ms(percentile(latencies, 0.99)),
                "status": dict(sorted(by_status.items())),
                "client_error_rate": client / n if n else None, "server_error_rate": server / n if n else None}


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))  # the tolerance: 0.99 × 100 is 99, not 99.00000000000001
    return ordered[min(rank, len(ordered)) - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
