"""A circuit breaker for the shared store: a hung or dead Redis costs one timeout, not one per call.

Without it every store call of every request waits out the socket timeout while Redis hangs
(budget check, cache lookup, spend, cache write: several per request). After a failure the store
is taken as down for `cooldown_s`, and calls fail at once; callers already treat that as an outage
(a cache miss, the `on_store_outage` rule for budgets and rates, a skipped spend). Then a single
trial call goes through: its success closes the breaker, its failure opens it for another cooldown.
Calls made while the trial is in flight fail at once too, so a hung store holds one request at most.

Pure state, no I/O and no exceptions of its own: the store asks `allow()` and reports the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

STORE_COOLDOWN_S = 2.0


@dataclass(slots=True)
class StoreBreaker:
    cooldown_s: float = STORE_COOLDOWN_S
    clock: Callable[[], float] = time.monotonic
    open_until: float = 0.0  # 0.0: closed, the common case, decided by one attribute test
    trial: bool = False

    @property
    def closed(self) -> bool:
        return not self.open_until

    def allow(self) -> bool:
        """Whether a call may go to the store now; the first call after the cooldown is the trial."""
        if not self.open_until:
            return True
        if self.trial or self.clock() < self.open_until:
            return False
        self.trial = True
        return True

    def succeeded(self) -> None:
        if self.open_until:
            self.open_until, self.trial = 0.0, False

    def failed(self) -> None:
        self.open_until, self.trial = self.clock() + self.cooldown_s, False

    def abandoned(self) -> None:
        """A call was cancelled before it answered: it proved nothing, so the next caller may try."""
        self.trial = False
