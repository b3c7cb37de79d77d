"""Time arithmetic for budgets and rate limits, pure functions (no clock, no I/O).

Budget periods are calendar periods in UTC: a `day` starts at 00:00, a `week` on Monday 00:00, a
`month` on its 1st; `total` never resets. Each period has an id (`day:2026-11-26`,
`week:2026-11-23`, `month:2026-11`, `total`) that names its spend counter, so a new period starts
from zero without anyone resetting anything.

Rate limits are sliding windows of `WINDOW_S` seconds kept as `WINDOW_STEPS` buckets of one step
each: a request is counted in the bucket of its step, and the window's usage is the sum of the
buckets of the last `WINDOW_STEPS` steps (the current one included). So the limit holds exactly,
to within one step at the window's trailing edge. The store runs the same arithmetic in Lua
(`gateway.state`); `window_check` is its reference, used by the in-memory store and the tests.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["day", "week", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "total")

WINDOW_S = 60
STEP_MS = 1000
WINDOW_STEPS = WINDOW_S * 1000 // STEP_MS


def period_bounds(period: Period, now: float) -> tuple[datetime | None, datetime | None]:
    """The UTC start and end (the next reset) of the period that contains `now` (unix seconds);
    (None, None) for `total`."""
    if period == "total":
        return None, None
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + timedelta(days=days)


def period_id(period: Period, now: float) -> str:
    """The name of the period containing `now`: it keys that period's spend."""
    start, _ = period_bounds(period, now)
    if start is None:
        return "total"
    return f"{period}:{start:%Y-%m}" if period == "month" else f"{period}:{start:%Y-%m-%d}"


def seconds_to_reset(period: Period, now: float) -> float | None:
    """Seconds until the period containing `now` ends; None for `total`."""
    _, end = period_bounds(period, now)
    return None if end is None else end.timestamp() - now


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    allowed: bool
    used: float              # the window's usage before this request
    retry_after_ms: int = 0  # when refused: until enough of the window has slid out (-1: never fits)


def step_of(now_ms: int, step_ms: int = STEP_MS) -> int:
    return now_ms // step_ms


def live_buckets(buckets: Mapping[int, float], now_ms: int, step_ms: int = STEP_MS,
                 steps: int = WINDOW_STEPS) -> dict[int, float]:
    """The buckets still inside the window that ends at `now_ms`."""
    oldest = step_of(now_ms, step_ms) - steps + 1
    return {b: c for b, c in buckets.items() if b >= oldest}


def window_check(buckets: Mapping[int, float], now_ms: int, limit: float, cost: float,
                 step_ms: int = STEP_MS, steps: int = WINDOW_STEPS) -> WindowVerdict:
    """Whether `cost` more fits under `limit` in the window ending now, and if not, how long until it
    would: the oldest buckets leave the window one step at a time."""
    live = live_buckets(buckets, now_ms, step_ms, steps)
    used = sum(live.values())
    if used + cost <= limit:
        return WindowVerdict(True, used)
    if cost > limit:
        return WindowVerdict(False, used, -1)
    freed = 0.0
    for bucket in sorted(live):
        freed += live[bucket]
        if used - freed + cost <= limit:
            return WindowVerdict(False, used, (bucket + steps) * step_ms - now_ms)
    return WindowVerdict(False, used, -1)  # unreachable: with every bucket freed, cost <= limit fits


def retry_after_s(retry_after_ms: int) -> int:
    """Retry-After in whole seconds, rounded up, at least 1."""
    return max(1, -(-retry_after_ms // 1000))
