"""A request record keeps, for a tenant without `log_prompts`, a keyed digest of its prompt:
HMAC-SHA256 under the gateway's secret, the same on every replica sharing a store, never a plain
sha256 that hashing a dictionary of short prompts reverses. Real Redis, real HTTP, the `openai` client."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import redis

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.errors import ConfigError
from gateway.state import DIGEST_SECRET_KEY, request_key
from tests.integration.conftest import sim_config
from tests.support.jsonl import whole_records
from tests.support.processes import (
    GatewayServer,
    RedisServer,
    Simulator,
    free_port,
    running_gateway,
    start_redis,
    wait_until,
)

TENANTS = [{"name": "bob", "api_key_sha256": hash_key("sk-bob")}]
PROMPT = "What is my balance?"
SECRET_ENV = "SY_TEST_DIGEST_SECRET"


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    url = f"redis://127.0.0.1:{redis_server.port}/11"  # a database of its own: no secret stored yet
    redis.Redis.from_url(url).flushdb()
    return url


def _app(simulator: Simulator, redis_url: str, policies_dir: Path, **extra: Any) -> Any:
    return create_app(sim_config(simulator.url, redis_url, tenants=TENANTS, **extra), policies_dir=policies_dir,
                      watch_policies_s=None, watch_router_s=None)


def _ask(gw: GatewayServer, prompt: str = PROMPT) -> str:
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="sk-bob", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-switchyard-cache": "bypass"})  # each replica answers (a cache hit is not recorded)
    return raw.headers["x-request-id"]


def _record(redis_url: str, request_id: str) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        raw = client.hget(request_key("bob", request_id), "record")
        if raw is not None:
            record: dict[str, Any] = orjson.loads(raw)
            return record
        time.sleep(0.05)
    raise AssertionError(f"no record of {request_id}")


def test_two_replicas_on_one_redis_digest_a_prompt_alike_and_not_as_its_sha256(
        simulator: Simulator, redis_url: str, policies_dir: Path) -> None:
    with running_gateway(_app(simulator, redis_url, policies_dir)) as one, \
            running_gateway(_app(simulator, redis_url, policies_dir)) as two:
        first, second, other = _record(redis_url, _ask(one)), _record(redis_url, _ask(two)), \
            _record(redis_url, _ask(two, "What is my balance??"))
    plain = hashlib.sha256(PROMPT.encode()).hexdigest()
    assert "prompt" not in first and "prompt_sha256" not in first
    assert len(first["prompt_hmac"]) == 64 and first["prompt_hmac"] != plain
    assert second["prompt_hmac"] == first["prompt_hmac"]  # one secret for every replica
    assert other["prompt_hmac"] != first["prompt_hmac"]
    # The secret was generated once and kept in the store, where a restarted replica finds it again.
    stored = redis.Redis.from_url(redis_url).get(DIGEST_SECRET_KEY)
    assert isinstance(stored, bytes) and first["prompt_hmac"] == hmac.new(stored, PROMPT.encode(), "sha256").hexdigest()
    with running_gateway(_app(simulator, redis_url, policies_dir)) as restarted:
        assert _record(redis_url, _ask(restarted))["prompt_hmac"] == first["prompt_hmac"]


def test_a_configured_secret_keys_the_digest(simulator: Simulator, redis_url: str, policies_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "0123456789abcdef-configured-secret"
    monkeypatch.setenv(SECRET_ENV, secret)
    with running_gateway(_app(simulator, redis_url, policies_dir, digest_secret_env=SECRET_ENV)) as gw:
        record = _record(redis_url, _ask(gw))
    assert record["prompt_hmac"] == hmac.new(secret.encode(), PROMPT.encode(), hashlib.sha256).hexdigest()
    assert redis.Redis.from_url(redis_url).get(DIGEST_SECRET_KEY) is None  # nothing generated, nothing stored


@pytest.mark.parametrize("value", ["", "short"])
def test_a_named_secret_that_is_unset_or_short_stops_the_start(
        value: str, simulator: Simulator, redis_url: str, policies_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, value)
    with pytest.raises(ConfigError, match=SECRET_ENV):
        _app(simulator, redis_url, policies_dir, digest_secret_env=SECRET_ENV)


def test_a_replica_that_starts_while_redis_is_down_digests_once_it_is_back(
        simulator: Simulator, policies_dir: Path, tmp_path: Path) -> None:
    port, sink = free_port(), tmp_path / "requests.jsonl"
    app = create_app(sim_config(simulator.url, f"redis://127.0.0.1:{port}/0", tenants=TENANTS,
                                request_log={"path": str(sink)}), policies_dir=policies_dir,
                     watch_policies_s=None, watch_router_s=None)
    with running_gateway(app) as gw:
        down = _ask(gw)
        redis_server = start_redis(port)
        try:
            wait_until(lambda: app.state.services.digests.shared, timeout_s=20, what="the secret read from Redis")
            up = _record(redis_server.url, _ask(gw))
        finally:
            redis_server.stop()
    logged = _sunk(sink, down)
    assert "prompt_hmac" not in logged and "prompt" not in logged  # no digest under a secret of its own
    assert len(up["prompt_hmac"]) == 64


def _sunk(sink: Path, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in whole_records(sink):
            if record.get("request_id") == request_id:
                return record
        time.sleep(0.05)
    raise AssertionError(f"no record of {request_id} in {sink}")
