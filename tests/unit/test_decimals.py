"""`rounded` gives what round() gives for the numbers log lines and records hold."""

from __future__ import annotations

import random

from gateway.decimals import MICRO, MS, PICO, as_decimal, rounded


def test_rounded_matches_round_on_latencies_costs_and_qualities() -> None:
    rng = random.Random(7)
    cases = [(rng.uniform(0, 60_000), MS, 3) for _ in range(20_000)]  # milliseconds
    cases += [(rng.uniform(0, 1), MICRO, 4) for _ in range(20_000)]  # qualities, difficulty
    cases += [(rng.uniform(0, 0.05), PICO, 12) for _ in range(20_000)]  # a request's cost in USD
    differ = [(x, n) for x, scale, n in cases if rounded(x, scale) != round(x, n)]
    assert len(differ) <= len(cases) // 1000  # at most a tie's last decimal, now and then
    assert all(abs(rounded(x, 10.0**n) - round(x, n)) <= 1.01 / 10**n for x, n in differ)


def test_rounded_keeps_exact_values_and_signs() -> None:
    assert rounded(10.0, MS) == 10.0 and rounded(0.000042, PICO) == 0.000042 and rounded(9e-06, PICO) == 9e-06
    assert rounded(-0.30004, MS) == -0.3 and rounded(0.0, MICRO) == 0.0


def test_as_decimal_writes_small_and_large_numbers_without_an_exponent() -> None:
    assert as_decimal(1e-8) == "0.00000001" and as_decimal(1.224e-05) == "0.00001224"
    assert as_decimal(1e-6) == "0.000001" and as_decimal(60.0) == "60" and as_decimal(0.1 + 0.2) == "0.3"
    assert as_decimal(1234567.89) == "1234570" and as_decimal(0.0) == "0" and as_decimal(-2.5e-7) == "-0.00000025"
