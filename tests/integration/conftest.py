"""Session-wide real services: one Redis server and one simulated-model server, started and stopped here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.api.app import create_app
from gateway.config import GatewayConfig, parse_config
from tests.support.processes import (
    ROOT,
    GatewayServer,
    RedisServer,
    Simulator,
    start_redis,
    start_simulator,
)

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    sim = start_simulator(FIXTURES / "gateway_sim_models.yaml")
    yield sim
    sim.stop()


def sim_config(sim_url: str, redis_url: str | None = None, **extra: Any) -> GatewayConfig:
    def dep(name: str, model: str, tier: str, price: float, **kw: Any) -> dict[str, Any]:
        return {"name": name, "model": f"openai/{model}", "api_base": sim_url, "tier": tier,
                "price": {"input_per_mtok": price, "output_per_mtok": price * 2}, **kw}

    raw = {
        "deployments": [
            dep("small", "sim-small", "small", 0.2, router_profile="Meta-Llama-3.1-8B-Instruct",
                expected_output_tokens=30, expected_ttft_ms=20, expected_tokens_per_s=200),
            dep("large", "sim-large", "large", 1.0, router_profile="Meta-Llama-3.1-70B-Instruct",
                expected_output_tokens=40, expected_ttft_ms=60, expected_tokens_per_s=80),
            dep("broken", "sim-broken", "lab", 0.1, max_retries=1),
            dep("throttled", "sim-throttled", "lab", 0.1, max_retries=1),
            dep("flaky", "sim-flaky", "lab", 0.1, max_retries=2),
            dep("slow", "sim-slow", "lab", 0.1, timeout_s=0.4, max_retries=0),
            dep("streamy", "sim-streamy", "lab", 0.1),
        ],
        "redis_url": redis_url,
        **extra,
    }
    return parse_config(raw, "test config")


@pytest.fixture(scope="session")
def policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped policies plus test-only ones (failover onto a broken deployment)."""
    folder = tmp_path_factory.mktemp("policies")
    for f in (ROOT / "routing_policies").glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    for f in (FIXTURES / "policies").glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="session")
def gateway(simulator: Simulator, redis_server: RedisServer, policies_dir: Path,
            spans: InMemorySpanExporter) -> Iterator[GatewayServer]:
    app = create_app(sim_config(simulator.url, redis_server.url), span_exporter=spans, policies_dir=policies_dir)
    server = GatewayServer(app).start()
    yield server
    server.stop()


@pytest.fixture
def base_url(gateway: GatewayServer) -> str:
    return gateway.base_url + "/v1"
