"""The metrics' own pieces: histogram buckets, and gauges read from their owners when collected."""

from __future__ import annotations

import logging
import math
import time
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.api.app import observe_state
from gateway.metrics import Histogram, Metrics
from gateway.providers.health import HealthBoard


def test_histogram_buckets_hold_values_up_to_and_including_their_bound() -> None:
    h = Histogram("h", "s", "", (0.1, 1.0), "policy")
    for v in (0.05, 0.1, 0.5, 1.0, 3.0):
        h.record(("p",), v)
    metric = h.metric(time.time_ns())
    assert metric is not None
    (point,) = metric.data.data_points  # type: ignore[union-attr]
    assert list(point.bucket_counts) == [2, 2, 1]  # type: ignore[union-attr]
    assert (point.count, point.min, point.max) == (5, 0.05, 3.0)  # type: ignore[union-attr]
    assert point.sum == pytest.approx(4.65)  # type: ignore[union-attr]
    assert dict(point.attributes or {}) == {"policy": "p"}


def test_a_calibrated_policy_reports_each_tenants_threshold_as_a_gauge() -> None:
    metrics = Metrics(otlp=False)
    policies: Any = SimpleNamespace(policies={"calibrated": object(), "plain": object()})
    calibrator: Any = SimpleNamespace(  # policies by value_usd have none
        thresholds=lambda _: {("calibrated", "acme"): 0.42, ("calibrated", "globex"): 0.37})
    board = HealthBoard(["small"], failure_threshold=1)
    board["small"].record_failure(time.monotonic())
    observe_state(metrics, board, policies, calibrator, None, None)
    text = metrics.prometheus_text().decode()
    assert 'switchyard_policy_threshold{policy="calibrated",tenant="acme"} 0.42' in text
    assert 'switchyard_policy_threshold{policy="calibrated",tenant="globex"} 0.37' in text
    assert 'policy="plain"' not in text
    assert 'switchyard_circuit_state{deployment="small"} 2.0' in text
    metrics.shutdown()


def test_a_non_finite_threshold_is_left_out_of_the_gauge_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(otlp=False)
    policies: Any = SimpleNamespace(policies={"none-up": object(), "all-up": object(), "calibrated": object()})
    # +inf sends nothing to the strong model, -inf everything: neither is a number a gauge can carry
    thresholds = {("none-up", "t"): math.inf, ("all-up", "t"): -math.inf, ("calibrated", "t"): 0.42}
    calibrator: Any = SimpleNamespace(thresholds=lambda _: thresholds)
    observe_state(metrics, HealthBoard(["small"], failure_threshold=1), policies, calibrator, None, None)
    with caplog.at_level(logging.WARNING):
        text = metrics.prometheus_text().decode()
        metrics.shutdown()
    assert 'switchyard_policy_threshold{policy="calibrated",tenant="t"} 0.42' in text
    assert 'policy="none-up"' not in text and 'policy="all-up"' not in text
    assert not [r for r in caplog.records if "non-finite" in r.getMessage()]
