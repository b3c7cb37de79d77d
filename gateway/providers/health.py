"""Live view of each deployment: latency and error statistics, and a circuit breaker.

The policy reads a `LiveView` snapshot (a pure input to `decide`); the executor reports outcomes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class DeploymentHealth:
    failure_threshold: int = 5
    cooldown_s: float = 15.0
    consecutive_failures: int = 0
    opened_at: float | None = None
    latency_ewma_s: float | None = None
    ttft_ewma_s: float | None = None
    calls: int = 0
    failures: int = 0

    def is_open(self, now: float) -> bool:
        """Open = skip this deployment. After the cooldown one trial call is let through (half-open)."""
        if self.opened_at is None:
            return False
        return now - self.opened_at < self.cooldown_s

    def record_success(self, latency_s: float, ttft_s: float | None = None) -> None:
        self.calls += 1
        self.consecutive_failures = 0
        self.opened_at = None
        self.latency_ewma_s = _ewma(self.latency_ewma_s, latency_s)
        if ttft_s is not None:
            self.ttft_ewma_s = _ewma(self.ttft_ewma_s, ttft_s)

    def record_failure(self, now: float) -> None:
        self.calls += 1
        self.failures += 1
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failure_threshold:
            self.opened_at = now


def _ewma(previous: float | None, value: float, alpha: float = 0.2) -> float:
    return value if previous is None else (1 - alpha) * previous + alpha * value


@dataclass(frozen=True, slots=True)
class LiveView:
    """What the policy may know about live state: open circuits and observed latencies."""

    open_circuits: frozenset[str] = frozenset()
    latency_s: dict[str, float] = field(default_factory=dict)


class HealthBoard:
    def __init__(self, names: list[str], *, failure_threshold: int = 5, cooldown_s: float = 15.0) -> None:
        self._health = {n: DeploymentHealth(failure_threshold, cooldown_s) for n in names}

    def __getitem__(self, name: str) -> DeploymentHealth:
        return self._health[name]

    def view(self) -> LiveView:
        now = time.monotonic()
        return LiveView(
            open_circuits=frozenset(n for n, h in self._health.items() if h.is_open(now)),
            latency_s={n: h.latency_ewma_s for n, h in self._health.items() if h.latency_ewma_s is not None},
        )

    def snapshot(self) -> dict[str, dict[str, float | int | bool | None]]:
        now = time.monotonic()
        return {n: {"calls": h.calls, "failures": h.failures, "circuit_open": h.is_open(now),
                    "latency_ewma_s": h.latency_ewma_s} for n, h in self._health.items()}
