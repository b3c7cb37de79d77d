"""Shadow evaluation shared fairly between tenants, over real HTTP on a real Redis: one tenant flooding
the shadow queue with slow jobs cannot crowd out another tenant's sampled requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
import redis

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from gateway.pipeline import Services
from gateway.state import request_key
from tests.integration.conftest import sim_config
from tests.support.lab import policies_folder
from tests.support.processes import GatewayServer, RedisServer, Simulator, running_gateway

TENANTS = [{"name": "alice", "api_key_sha256": hash_key("sk-alice")},
           {"name": "mallory", "api_key_sha256": hash_key("sk-mallory")}]
POLICIES = {
    # mallory's shadow jobs each hold a worker for a second (the reference answers in 3 s, and is given 1 s)
    "flooded": {"candidates": [{"single": "small"}], "cache": {"enabled": False},
                "shadow": {"rate": 1.0, "against": "laggard"}},
    "shadowed": {"candidates": [{"single": "small"}], "cache": {"enabled": False},
                 "shadow": {"rate": 1.0, "against": "large"}},
}
SUM = [{"role": "user", "content": "What is 17 + 25?"}]


@pytest.fixture(scope="module")
def gateway(simulator: Simulator, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayServer, Services]]:
    folder = tmp_path_factory.mktemp("shadow-fairness")
    raw = sim_config(simulator.url, redis_server.url, tenants=TENANTS,
                     request_log={"shadow_concurrency": 2, "shadow_queue_size": 4}).model_dump(exclude_defaults=True)
    raw["deployments"].append({"name": "laggard", "model": "openai/sim-slow", "api_base": simulator.url,
                               "tier": "lab", "price": {"input_per_mtok": 5.0, "output_per_mtok": 10.0},
                               "timeout_s": 1.0, "max_retries": 0})
    app = create_app(parse_config(raw, "test config"), policies_dir=policies_folder(folder, POLICIES))
    with running_gateway(app) as server:
        yield server, app.state.services


def _ask(server: GatewayServer, key: str, policy: str) -> str:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=f"router/{policy}", messages=SUM)
    return str(raw.headers["x-request-id"])


def _label(redis_url: str, tenant: str, rid: str, timeout_s: float) -> Any:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = {k: v for k, v in client.hgetall(request_key(tenant, rid)).items() if k.startswith(b"fb:")}
        if found:
            return orjson.loads(next(iter(found.values())))
        time.sleep(0.02)
    return None


def test_a_tenant_flooding_the_shadow_queue_leaves_room_for_another_tenants_samples(
        gateway: tuple[GatewayServer, Services], redis_server: RedisServer) -> None:
    server, services = gateway
    assert services.shadow is not None
    dropped = services.shadow.counts["dropped"]
    for _ in range(8):  # more slow jobs than the workers and the queue hold
        _ask(server, "sk-mallory", "flooded")
    assert services.shadow.counts["dropped"] > dropped  # the flood overflows the queue
    started = time.monotonic()
    rid = _ask(server, "sk-alice", "shadowed")
    label = _label(redis_server.url, "alice", rid, timeout_s=2.5)
    assert label is not None, "alice's sample was crowded out by mallory's flood"
    assert label["against"] == "large" and label["origin"] == "gateway"
    assert time.monotonic() - started < 0.9  # not after mallory's slow jobs: a worker was left for alice
