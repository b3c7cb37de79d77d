"""Budget periods are UTC calendar periods; rate windows slide one step at a time and say when a
refused request would fit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.windows import (
    STEP_MS,
    WINDOW_STEPS,
    period_bounds,
    period_id,
    retry_after_s,
    seconds_to_reset,
    step_of,
    window_check,
)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("period", "now", "start", "end", "pid"), [
    ("day", "2026-11-26 23:59:59", "2026-11-26", "2026-11-27", "day:2026-11-26"),
    ("day", "2026-11-27 00:00:00", "2026-11-27", "2026-11-28", "day:2026-11-27"),
    ("week", "2026-11-26 12:00:00", "2026-11-23", "2026-11-30", "week:2026-11-23"),  # a Thursday → Monday
    ("week", "2026-11-23 00:00:00", "2026-11-23", "2026-11-30", "week:2026-11-23"),
    ("week", "2026-11-22 23:59:59", "2026-11-16", "2026-11-23", "week:2026-11-16"),  # Sunday ends a week
    ("month", "2026-02-28 10:00:00", "2026-02-01", "2026-03-01", "month:2026-02"),
    ("month", "2028-02-29 10:00:00", "2028-02-01", "2028-03-01", "month:2028-02"),  # leap year
    ("month", "2026-12-31 23:00:00", "2026-12-01", "2027-01-01", "month:2026-12"),  # year end
])
def test_periods_are_utc_calendar_periods(period: str, now: str, start: str, end: str, pid: str) -> None:
    got_start, got_end = period_bounds(period, _ts(now))  # type: ignore[arg-type]
    assert got_start == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert got_end == datetime.fromisoformat(end).replace(tzinfo=UTC)
    assert period_id(period, _ts(now)) == pid  # type: ignore[arg-type]


def test_a_total_budget_never_resets() -> None:
    assert period_bounds("total", _ts("2026-11-26 12:00:00")) == (None, None)
    assert period_id("total", 0.0) == "total"
    assert seconds_to_reset("total", 0.0) is None


def test_seconds_to_reset_counts_to_the_next_boundary() -> None:
    assert seconds_to_reset("day", _ts("2026-11-26 23:59:30")) == pytest.approx(30.0)


def test_a_window_admits_up_to_its_limit_and_no_more() -> None:
    now = 1_000_000 * STEP_MS
    buckets = {step_of(now): 9.0}
    assert window_check(buckets, now, limit=10, cost=1).allowed
    refused = window_check({step_of(now): 10.0}, now, limit=10, cost=1)
    assert not refused.allowed and refused.used == 10


def test_buckets_older_than_the_window_do_not_count() -> None:
    now = 1_000_000 * STEP_MS + 500
    current = step_of(now)
    buckets = {current - WINDOW_STEPS: 100.0, current - WINDOW_STEPS + 1: 3.0, current: 2.0}
    verdict = window_check(buckets, now, limit=10, cost=1)
    assert verdict.allowed and verdict.used == 5  # the bucket a full window ago has slid out


def test_a_refusal_says_when_enough_of_the_window_slides_out() -> None:
    now = 1_000_000 * STEP_MS + 250  # a quarter into the current step
    current = step_of(now)
    # 4 used 10 steps ago, 6 used now; limit 10: one more fits when the oldest bucket leaves
    verdict = window_check({current - 10: 4.0, current: 6.0}, now, limit=10, cost=1)
    assert not verdict.allowed
    leaves_at = (current - 10 + WINDOW_STEPS) * STEP_MS
    assert verdict.retry_after_ms == leaves_at - now
    assert retry_after_s(verdict.retry_after_ms) == 50  # 49.75 s, rounded up


def test_a_cost_larger_than_the_limit_never_fits() -> None:
    verdict = window_check({}, 0, limit=100, cost=101)
    assert not verdict.allowed and verdict.retry_after_ms == -1


def test_retry_after_is_at_least_one_second() -> None:
    assert retry_after_s(1) == 1 and retry_after_s(0) == 1 and retry_after_s(1001) == 2
