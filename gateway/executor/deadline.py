"""One deadline per request, passed by value through every call it makes.

It bounds all retries, fallbacks, cascade steps and best-of samples together: each attempt gets
min(deployment timeout_s, remaining), a retry wait that does not fit is skipped for the next
fallback, and once it has passed the request ends with 504.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deadline:
    at: float         # time.monotonic() by which the request must be answered
    budget_s: float   # the whole budget, for messages

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.at
