"""A log line at most every so often, for failures that repeat on every request (a store outage)."""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field

OUTAGE_LOG_EVERY_S = 10.0


@dataclass(slots=True)
class LogThrottle:
    """At most one line per `every_s`; the lines in between are counted, not lost."""

    every_s: float = OUTAGE_LOG_EVERY_S
    next_at: float = 0.0
    suppressed: int = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            return False
        self.next_at = now + self.every_s
        return True


@dataclass(slots=True)
class KeyedLogThrottle:
    """A `LogThrottle` per key, for a warning a client can repeat on every request (a field a deployment
    has no price for): one line per key every `every_s`, each saying how many it stood for. Keys must
    come from a bounded set (deployments and fields of the config), never from a request."""

    every_s: float = OUTAGE_LOG_EVERY_S
    throttles: dict[Hashable, LogThrottle] = field(default_factory=dict)

    def due(self, key: Hashable) -> int | None:
        """None while the key's line is not due; else how many were held back since its last line."""
        throttle = self.throttles.get(key)
        if throttle is None:
            throttle = self.throttles[key] = LogThrottle(self.every_s)
        if not throttle.due():
            return None
        held, throttle.suppressed = throttle.suppressed, 0
        return held
