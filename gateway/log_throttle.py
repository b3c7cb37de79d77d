"""A log line at most every so often, for failures that repeat on every request (a store outage)."""

from __future__ import annotations

import time
from dataclasses import dataclass

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
