"""The dashboard's pure parts: who may read it, this replica's latency ring, and the hourly axis."""

from __future__ import annotations

import hashlib

import pytest

from gateway.auth import Authenticator
from gateway.config import TenantConfig, embedded_config
from gateway.dashboard.stats import RequestStats, percentile
from gateway.dashboard.view import hourly
from gateway.errors import ConfigError
from gateway.ledger import HOUR_S, Window
from gateway.state import MemoryStore


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


TENANT = TenantConfig(name="alice", api_key_sha256=_sha("sk-alice"))


def test_only_the_admin_or_viewer_key_may_view_the_dashboard() -> None:
    auth = Authenticator([TENANT], MemoryStore(), admin_sha256=_sha("sk-admin"), viewer_sha256=_sha("sk-view"))
    assert auth.may_view("Bearer sk-admin") and auth.may_view("Bearer sk-view")
    assert not auth.may_view("Bearer sk-alice") and not auth.may_view(None) and not auth.may_view("sk-view")
    assert not auth.is_admin("Bearer sk-view")  # the viewer key reads the dashboard and nothing more


def test_a_gateway_with_tenants_and_no_operator_key_shows_its_dashboard_to_no_one() -> None:
    assert not Authenticator([TENANT], MemoryStore()).may_view("Bearer sk-alice")


def test_an_open_gateway_shows_its_dashboard_to_anyone_until_an_operator_key_is_set() -> None:
    assert Authenticator([], MemoryStore()).may_view(None)
    assert not Authenticator([], MemoryStore(), viewer_sha256=_sha("sk-view")).may_view(None)


def test_the_viewer_key_hash_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_VIEWER_KEY_SHA256", _sha("sk-view").upper())
    assert embedded_config("http://127.0.0.1:9/v1").viewer_api_key_sha256 == _sha("sk-view")
    monkeypatch.setenv("SWITCHYARD_VIEWER_KEY_SHA256", "not-a-hash")
    with pytest.raises(ConfigError, match="SWITCHYARD_VIEWER_KEY_SHA256"):
        embedded_config("http://127.0.0.1:9/v1")


def test_latency_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99 and percentile(values, 1.0) == 100
    assert percentile([], 0.5) is None and percentile([7.0], 0.99) == 7.0


def test_the_request_ring_keeps_only_the_most_recent_requests() -> None:
    stats = RequestStats(size=4)
    for latency, status in ((9.0, 500), (9.0, 500), (0.010, 200), (0.020, 200), (0.030, 429), (0.040, 200)):
        stats.observe(latency, status)
    s = stats.summary()
    assert s["requests"] == 4 and s["requests_since_start"] == 6
    assert s["status"] == {"200": 3, "429": 1} and s["server_error_rate"] == 0 and s["client_error_rate"] == 0.25
    assert s["latency_p50_ms"] == 20 and s["latency_p99_ms"] == 40


def test_an_idle_replica_reports_no_latency_rather_than_zero() -> None:
    s = RequestStats().summary()
    assert s["requests"] == 0 and s["latency_p50_ms"] is None and s["server_error_rate"] is None


def test_the_spend_chart_has_every_hour_of_the_window() -> None:
    window = Window(10 * HOUR_S, 13 * HOUR_S)
    rows = [{"hour": "1970-01-01T11:00:00Z", "requests": 2, "cost_usd": 0.5, "counterfactual_usd": 2.0,
             "savings_usd": 1.5}]
    hours = hourly(rows, window)
    assert [h["hour"][11:13] for h in hours] == ["10", "11", "12"]
    assert [h["cost_usd"] for h in hours] == [0, 0.5, 0]
