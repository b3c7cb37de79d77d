"""Many replicas, one truth: three `switchyard serve` processes on one Redis, with `openai` clients
spread over them. A key's budget holds (spend <= budget + one reservation), requests and tokens per
minute are exact across replicas, a revoked key is refused by every replica within 1 s, and a
policy edit and a router promotion reach every replica within 5 s."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml

from gateway.auth import hash_key
from gateway.messages import count_messages
from gateway.router.artifact import Artifact
from gateway.state import period_spend_key
from gateway.windows import period_id
from tests.integration.conftest import sim_config
from tests.support.processes import ROOT, RedisServer, Simulator, free_port, terminate, wait_until
from tests.support.routers import variant

CLI = [sys.executable, "-m", "gateway.cli"]
ADMIN, TENANT_KEY = "sk-replicas-admin", "sk-replicas-tenant"
POLICY_SMALL, POLICY_LARGE = "candidates:\n  - single: small\n", "candidates:\n  - single: large\n"
SMALL_IN, SMALL_OUT = 0.2, 0.4  # sim_config's small deployment, USD per million tokens


@dataclass
class Replicas:
    urls: list[str]
    redis_url: str
    folders: list[Path]


def _env(redis_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SWITCHYARD_REDIS_URL", "SWITCHYARD_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    if redis_url:
        env["SWITCHYARD_REDIS_URL"] = redis_url
    return env


@pytest.fixture(scope="module")
def replicas(simulator: Simulator, redis_server: RedisServer, policies_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    url = f"redis://127.0.0.1:{redis_server.port}/4"  # a database of its own: promotions stay here
    redis.Redis.from_url(url).flushdb()
    root = tmp_path_factory.mktemp("replicas")
    processes: list[subprocess.Popen[bytes]] = []
    urls, folders = [], []
    for i in range(3):
        folder = root / f"policies-{i}"  # replicas that do not share a folder: they follow the store
        folder.mkdir()
        for f in policies_dir.glob("*.yaml"):
            (folder / f.name).write_text(f.read_text())
        (folder / "pv.yaml").write_text(POLICY_SMALL)
        config = sim_config(simulator.url, url, policies_dir=str(folder), admin_api_key_sha256=hash_key(ADMIN),
                            tenants=[{"name": "acme", "api_key_sha256": hash_key(TENANT_KEY)}])
        config_file = root / f"gateway-{i}.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
        port = free_port()
        processes.append(subprocess.Popen([*CLI, "serve", "--config", str(config_file), "--port", str(port),
                                           "--log-level", "warning"], cwd=ROOT, env=_env(),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
        folders.append(folder)
    try:
        for u in urls:
            wait_until(lambda u=u: httpx.get(u + "/healthz", timeout=1).status_code == 200,  # type: ignore[misc]
                       timeout_s=60, what="gateway replica")
        yield Replicas(urls, url, folders)
    finally:
        for p in processes:
            terminate(p)
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(url).flushdb()


def _create(r: Replicas, **spec: Any) -> dict[str, Any]:
    resp = httpx.post(r.urls[0] + "/admin/keys", json={"tenant": "acme", **spec}, timeout=10,
                      headers={"authorization": f"Bearer {ADMIN}"})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def _spread(r: Replicas, key: str, n: int, content: str, max_tokens: int) -> list[Any]:
    """`n` requests at once, round-robin over the replicas: raw responses, or the SDK's errors."""
    clients = [openai.AsyncOpenAI(base_url=u + "/v1", api_key=key, max_retries=0, timeout=30) for u in r.urls]

    async def one(i: int) -> Any:
        try:
            return await clients[i % len(clients)].chat.completions.with_raw_response.create(
                model="small", messages=[{"role": "user", "content": f"{content} {i}"}], max_tokens=max_tokens,
                extra_headers={"x-switchyard-cache": "bypass"})
        except openai.APIStatusError as exc:
            return exc

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for c in clients:
            await c.close()


def test_a_keys_budget_holds_across_three_replicas(replicas: Replicas) -> None:
    budget = 0.0001  # a few requests' worth
    key = _create(replicas, budget={"usd": budget, "period": "day"})
    results = asyncio.run(_spread(replicas, key["key"], 45, "budget question", max_tokens=40))
    ok = [x for x in results if not isinstance(x, openai.APIStatusError)]
    refused = [x for x in results if isinstance(x, openai.APIStatusError)]
    assert ok and refused
    assert all(x.status_code == 429 and x.code == "budget_exceeded" for x in refused), refused[0]
    billed = sum(float(x.headers["x-switchyard-cost-usd"]) for x in ok)
    one_reservation = (count_messages([{"role": "user", "content": "budget question 10"}]) * SMALL_IN
                       + 40 * SMALL_OUT) / 1e6
    spent = float(redis.Redis.from_url(replicas.redis_url).get(
        period_spend_key("acme", key["id"], period_id("day", time.time()))) or 0)
    assert spent == pytest.approx(billed)
    assert spent <= budget + one_reservation


def test_requests_per_minute_is_exact_across_replicas(replicas: Replicas) -> None:
    key = _create(replicas, requests_per_minute=12)
    results = asyncio.run(_spread(replicas, key["key"], 30, "rpm question", max_tokens=5))
    refused = [x for x in results if isinstance(x, openai.APIStatusError)]
    assert len(results) - len(refused) == 12  # all 30 fall in one window: exactly the limit
    assert all(x.status_code == 429 and "requests_per_minute" in x.message for x in refused)


def test_tokens_per_minute_is_exact_across_replicas(replicas: Replicas) -> None:
    limit, max_tokens = 600, 50
    key = _create(replicas, tokens_per_minute=limit)["key"]
    used, i = 0, 0
    messages = [{"role": "user", "content": "tpm question"}]
    reserve = count_messages(messages) + max_tokens
    while True:  # one at a time, round-robin: each settles to its real count before the next
        client = openai.OpenAI(base_url=replicas.urls[i % 3] + "/v1", api_key=key, max_retries=0)
        try:
            reply = client.chat.completions.create(model="small", messages=messages, max_tokens=max_tokens,
                                                   extra_headers={"x-switchyard-cache": "bypass"})
        except openai.RateLimitError as exc:
            assert "tokens_per_minute" in exc.message
            break
        assert reply.usage is not None
        used += reply.usage.prompt_tokens + reply.usage.completion_tokens
        i += 1
    assert i > 3  # settled to the real count (30 output tokens), not the 50 reserved
    assert used <= limit < used + reserve  # refused exactly when the next worst case would not fit


def test_a_revoked_key_is_refused_by_every_replica_within_1_s(replicas: Replicas) -> None:
    created = _create(replicas)
    headers = {"authorization": f"Bearer {created['key']}"}
    for u in replicas.urls:  # every replica has the key in its cache
        assert httpx.get(u + "/v1/models", headers=headers, timeout=5).status_code == 200
    revoked = httpx.delete(replicas.urls[1] + f"/admin/keys/{created['id']}", timeout=10,
                           headers={"authorization": f"Bearer {ADMIN}"})
    assert revoked.status_code == 200
    start = time.monotonic()
    pending = set(replicas.urls)
    while pending and time.monotonic() - start < 3:
        pending = {u for u in pending if httpx.get(u + "/v1/models", headers=headers, timeout=5).status_code != 401}
    took = time.monotonic() - start
    assert not pending and took < 1.0, (pending, took)


def test_a_rotated_key_works_on_every_replica_at_once(replicas: Replicas) -> None:
    """A replica that had read the key's record in the last 0.5 s still held the old secret's hash, and
    answered the new key 401 invalid_api_key, which SDKs do not retry: a client given the rotated key
    failed on every replica but the one that rotated it."""
    created = _create(replicas)
    for u in replicas.urls:  # every replica has the key in its cache
        assert httpx.get(u + "/v1/models", headers={"authorization": f"Bearer {created['key']}"}).status_code == 200
    rotated = httpx.post(replicas.urls[0] + f"/admin/keys/{created['id']}/rotate", timeout=10,
                         headers={"authorization": f"Bearer {ADMIN}"})
    assert rotated.status_code == 200, rotated.text
    for u in replicas.urls:
        resp = httpx.get(u + "/v1/models", headers={"authorization": f"Bearer {rotated.json()['key']}"})
        assert resp.status_code == 200, (u, resp.text)


def _versions(url: str) -> tuple[str, str]:
    r = httpx.post(url + "/v1/route", json={"model": "router/pv", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["policy_version"], r.json()["router_version"]


def test_policy_and_router_versions_agree_within_5_s(replicas: Replicas, tmp_path: Path) -> None:
    router = variant(tmp_path / "router")
    before = {_versions(u) for u in replicas.urls}
    assert len(before) == 1
    (replicas.folders[0] / "pv.yaml").write_text(POLICY_LARGE)  # one replica's file
    later = time.time() + 2
    os.utime(replicas.folders[0] / "pv.yaml", (later, later))
    promoted = subprocess.run([*CLI, "router", "promote", str(router), "--by", "ci"], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, env=_env(replicas.redis_url))
    assert promoted.returncode == 0, promoted.stderr
    old_policy, _ = next(iter(before))
    new_router = Artifact.read(router).version
    start = time.monotonic()
    seen: set[tuple[str, str]] = set()
    while time.monotonic() - start < 5:
        seen = {_versions(u) for u in replicas.urls}
        if len(seen) == 1 and next(iter(seen))[0] != old_policy and next(iter(seen))[1] == new_router:
            break
        time.sleep(0.1)
    assert len(seen) == 1, f"replicas disagree 5 s after the changes: {seen}"
    (policy, router_version), = seen
    assert policy != old_policy and router_version == new_router
