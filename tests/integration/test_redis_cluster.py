"""Two gateway replicas on a real three-master Redis Cluster, over real HTTP.

What the replicas share lives in the cluster: cached answers, budgets (the reservation script),
rate windows (a tenant's, a key's, a deployment's), keys made with the admin API, request records
and feedback, the spend ledger, policy versions and the promoted router. Every multi-key
operation touches one tenant's (or one policy's) keys, which share a hash tag and so one slot: a
cross-slot operation would fail here with CROSSSLOT, where a single Redis accepts it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from gateway.router.artifact import Artifact
from gateway.router.model import DEFAULT_ARTIFACT
from tests.integration.conftest import sim_config
from tests.support.cluster import RedisCluster, keys_by_node, start_redis_cluster
from tests.support.processes import ROOT, GatewayServer, Simulator, wait_until
from tests.support.routers import variant

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None or shutil.which("redis-server") is None,
                                reason="redis-server and redis-cli are needed (apt-get install redis-server)")

SHIPPED = Artifact.read(DEFAULT_ARTIFACT).version
ADMIN = "sk-cluster-admin"
TENANTS = [
    {"name": "alice", "api_key_sha256": hash_key("sk-alice"), "budget_usd": 0.1},
    {"name": "bob", "api_key_sha256": hash_key("sk-bob"), "requests_per_minute": 3},
    {"name": "carol", "api_key_sha256": hash_key("sk-carol")},
]


@dataclass
class Replicas:
    cluster: RedisCluster
    urls: list[str]

    def chat(self, replica: int, key: str, **body: Any) -> httpx.Response:
        body.setdefault("messages", [{"role": "user", "content": "What is 17 + 25?"}])
        return httpx.post(self.urls[replica] + "/v1/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def replicas(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    cluster = start_redis_cluster()
    folder = tmp_path_factory.mktemp("cluster")
    policies = folder / "policies"
    shutil.copytree(ROOT / "routing_policies", policies, ignore=shutil.ignore_patterns("*.md"))
    raw = sim_config(simulator.url, cluster.url, tenants=TENANTS,
                     admin_api_key_sha256=hash_key(ADMIN)).model_dump(exclude_defaults=True)
    # A deployment priced so that one request's cost is a visible share of alice's budget.
    raw["deployments"].append({"name": "pricey", "model": "openai/sim-small", "api_base": simulator.url,
                               "tier": "lab", "price": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0},
                               # one attempt: a budget holds every attempt that may be billed
                               "max_retries": 0})
    # A deployment with its own request rate, shared by every replica and tenant.
    raw["deployments"].append({"name": "metered", "model": "openai/sim-small", "api_base": simulator.url,
                               "tier": "lab", "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.1},
                               "requests_per_minute": 2})
    config = parse_config(raw, "cluster test config")
    servers = [GatewayServer(create_app(config, policies_dir=policies)).start() for _ in range(2)]
    try:
        yield Replicas(cluster, [s.base_url for s in servers])
    finally:
        for server in servers:
            server.stop()
        cluster.stop()


def test_the_store_is_a_three_master_cluster(replicas: Replicas) -> None:
    info = replicas.cluster.cli("cluster", "info")
    assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info and "cluster_size:3" in info
    ready = httpx.get(replicas.urls[0] + "/readyz", headers={"authorization": "Bearer sk-carol"}, timeout=10).json()
    assert ready["status"] == "ready" and ready["store_kind"] == "redis"


def test_an_answer_cached_by_one_replica_is_served_by_the_other(replicas: Replicas) -> None:
    body = {"model": "small", "temperature": 0, "messages": [{"role": "user", "content": "Name a prime over 90."}]}
    first = replicas.chat(0, "sk-carol", **body)
    second = replicas.chat(1, "sk-carol", **body)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-switchyard-cache"] == "miss" and second.headers["x-switchyard-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"]


def test_one_budget_holds_across_replicas(replicas: Replicas) -> None:
    # Each call reserves its worst case (max_tokens) against alice's 0.1 USD and settles its real cost,
    # a few cents. Alternating replicas, the calls stop at the budget: what both spent, never more.
    costs: list[float] = []
    for i in range(12):
        got = replicas.chat(i % 2, "sk-alice", model="pricey", max_tokens=50)
        if got.status_code != 200:
            break
        costs.append(float(got.headers["x-switchyard-cost-usd"]))
    assert got.status_code == 429 and got.json()["error"]["code"] == "budget_exceeded"
    assert len(costs) >= 2 and 0 < sum(costs) <= 0.1
    assert float(replicas.cluster.cli("get", "sy:spend:{alice}")) == pytest.approx(sum(costs), rel=1e-6)


def test_one_rate_window_counts_requests_on_every_replica(replicas: Replicas) -> None:
    if time.time() % 60 > 50:  # the window is a calendar minute: do not straddle two
        time.sleep(61 - time.time() % 60)
    codes = [replicas.chat(i % 2, "sk-bob", model="small", messages=[
        {"role": "user", "content": f"Count to {i}."}]).status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]


def test_feedback_reaches_a_request_recorded_by_the_other_replica(replicas: Replicas) -> None:
    asked = replicas.chat(0, "sk-carol", model="small", messages=[{"role": "user", "content": "Say hi."}])
    rid = asked.headers["x-request-id"]
    label = {"request_id": rid, "source": "user", "thumbs": "up"}
    deadline = time.monotonic() + 10
    while True:  # records are written in the background, shortly after the answer
        given = httpx.post(replicas.urls[1] + "/v1/feedback", json=label, timeout=10,
                           headers={"authorization": "Bearer sk-carol"})
        if given.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert given.status_code == 200, given.text
    assert "fb:user" in replicas.cluster.cli("hkeys", f"sy:req:{{carol}}:{rid}")
    assert int(replicas.cluster.cli("xlen", "sy:requests")) >= 1


def test_the_spend_ledger_is_read_back_from_the_cluster(replicas: Replicas) -> None:
    replicas.chat(0, "sk-carol", model="small", messages=[{"role": "user", "content": "Spend a little."}])
    spend = httpx.get(replicas.urls[0] + "/v1/spend", headers={"authorization": "Bearer sk-carol"}, timeout=10)
    assert spend.status_code == 200, spend.text
    assert spend.json()["total"]["requests"] >= 1
    assert "carol" in replicas.cluster.cli("smembers", "sy:ledger:tenants").split()


def test_policy_versions_are_published_once_to_the_cluster(replicas: Replicas) -> None:
    current = yaml.safe_load(replicas.cluster.cli("get", "sy:policy:current:{balanced}"))
    assert current["version"]
    # Two replicas loaded the same file: one entry, not two.
    assert int(replicas.cluster.cli("llen", "sy:policy:audit:{balanced}")) == 1


def test_the_gateway_keys_are_spread_over_the_masters(replicas: Replicas) -> None:
    where = keys_by_node(replicas.cluster)
    assert sum(1 for keys in where.values() if keys) >= 2, where
    # a tenant's keys sit together, whichever master holds them
    for keys in where.values():
        if any("{alice}" in k for k in keys):
            assert {"sy:spend:{alice}"} <= set(keys)



def _admin(replicas: Replicas, replica: int, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, replicas.urls[replica] + path, headers={"authorization": f"Bearer {ADMIN}"},
                         timeout=10, **kw)


def test_a_key_made_on_one_replica_is_limited_and_revoked_on_every_replica(replicas: Replicas) -> None:
    created = _admin(replicas, 0, "POST", "/admin/keys", json={"tenant": "carol", "requests_per_minute": 2})
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    others = {_admin(replicas, 1, "POST", "/admin/keys", json={"tenant": "carol"}).json()["id"] for _ in range(4)}
    listed = _admin(replicas, 1, "GET", "/admin/keys").json()["data"]  # records in several slots, one read
    assert {key_id, *others} <= {k["id"] for k in listed}
    codes = [replicas.chat(i % 2, key, model="small", messages=[{"role": "user", "content": f"Key call {i}."}])
             .status_code for i in range(3)]
    assert codes == [200, 200, 429]
    budget = httpx.get(replicas.urls[1] + "/v1/budget", headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert budget.status_code == 200, budget.text
    assert {r["limit"]: r["used"] for r in budget.json()["rate_limits"]}["requests_per_minute"] >= 2
    assert _admin(replicas, 1, "DELETE", f"/admin/keys/{key_id}").json()["status"] == "revoked"
    wait_until(lambda: replicas.chat(0, key, model="small").status_code == 401, 5, "the revocation on replica 0")
    assert key_id in replicas.cluster.cli("smembers", "sy:vkeys").split()


def test_a_deployments_own_rate_limit_counts_requests_on_every_replica(replicas: Replicas) -> None:
    codes = [replicas.chat(i % 2, "sk-carol", model="metered", messages=[
        {"role": "user", "content": f"Metered {i}."}]).status_code for i in range(3)]
    assert codes == [200, 200, 429], codes


def _routers(replicas: Replicas) -> set[str]:
    return {httpx.post(url + "/v1/route", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10,
                       headers={"authorization": "Bearer sk-carol"}).json()["router_version"] for url in replicas.urls}


def test_a_router_promoted_through_the_cluster_is_served_by_every_replica(
        replicas: Replicas, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = variant(tmp_path_factory.mktemp("routers") / "fewer-neighbours")
    new = Artifact.read(folder)
    assert _routers(replicas) == {SHIPPED}
    env = {k: v for k, v in os.environ.items() if k not in ("SWITCHYARD_REDIS_URL", "SWITCHYARD_CONFIG")}
    promoted = subprocess.run([sys.executable, "-m", "gateway.cli", "router", "promote", str(folder), "--by", "ci"],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**env, "PYTHONPATH": str(ROOT), "SWITCHYARD_REDIS_URL": replicas.cluster.url})
    assert promoted.returncode == 0, promoted.stderr
    wait_until(lambda: _routers(replicas) == {new.version}, 15, "the promoted router on both replicas")
    assert new.version in replicas.cluster.cli("get", "sy:router:current")


def test_a_cluster_that_stops_answering_is_a_store_outage_within_the_call_bound_not_an_error() -> None:
    # redis-py's cluster client raises RedisClusterException ("cannot be connected"), which is no
    # RedisError, after re-reading the topology from every seed (~4 s): the gateway answered 500s, some
    # after the upstream had answered, with the request's spend left out of its budget.
    import asyncio
    import signal

    from gateway.state import RedisStore, StoreUnavailable

    cluster = start_redis_cluster()

    def signal_all(sig: int) -> None:
        for process in cluster.processes:
            if process.poll() is None:
                os.kill(process.pid, sig)

    async def scenario() -> tuple[type[BaseException] | None, float]:
        store = RedisStore(cluster.url, timeout_s=0.3)
        await store.get("sy:probe")  # connected, the topology known
        signal_all(signal.SIGSTOP)
        started = time.monotonic()
        raised: type[BaseException] | None = None
        try:
            await store.get("sy:probe")
        except BaseException as exc:  # what it raises is the point
            raised = type(exc)
        took = time.monotonic() - started
        signal_all(signal.SIGCONT)
        await store.close()
        return raised, took

    try:
        raised, took = asyncio.run(scenario())
    finally:
        signal_all(signal.SIGCONT)
        cluster.stop()
    assert raised is StoreUnavailable and took < 1.5


def test_an_error_of_the_gateways_own_code_in_a_store_call_is_not_a_cluster_outage() -> None:
    # The cluster client's own RuntimeError/AttributeError on a dead node's connection is a store failure;
    # the same exception from the gateway's code inside a store call is a bug, which must not open the
    # breaker that every tenant's requests share.
    import asyncio

    from gateway.state import RedisStore, StoreUnavailable

    async def scenario() -> tuple[bool, bool]:
        store = RedisStore("redis+cluster://127.0.0.1:9", timeout_s=0.3)  # never connected: no call reaches it

        async def ours() -> None:
            raise AttributeError("'NoneType' object has no attribute 'decode'")

        try:
            await store._guarded(ours)
        except StoreUnavailable:
            return True, store.breaker.closed
        except AttributeError:
            return False, store.breaker.closed
        return False, store.breaker.closed

    as_outage, still_closed = asyncio.run(scenario())
    assert not as_outage and still_closed


def test_a_cluster_clients_own_error_from_below_it_is_a_store_outage() -> None:
    # "unable to perform operation on <TCPTransport closed=True>" is raised by asyncio's transport under
    # redis-py's connection: it is the store failing, even though its innermost frame is not redis-py's.
    import asyncio

    from redis.asyncio import connection

    from gateway.state import RedisStore, StoreUnavailable

    async def transport_closed() -> None:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    # a coroutine function of redis-py's connection module (its frames say so) that calls the transport
    names = {**vars(connection), "transport_closed": transport_closed}
    exec("async def send():\n    await transport_closed()\n", names)

    async def scenario() -> bool:
        store = RedisStore("redis+cluster://127.0.0.1:9", timeout_s=0.3)  # never connected

        async def through_redis() -> None:
            await names["send"]()

        try:
            await store._guarded(through_redis)
        except StoreUnavailable:
            return not store.breaker.closed
        return False

    assert asyncio.run(scenario())


def test_a_burst_of_store_calls_to_one_node_waits_for_connections_and_leaves_the_breaker_closed(
        replicas: Replicas) -> None:
    # One tenant's keys share a slot, so a burst of its requests on one worker sends every store call to one
    # node. redis-py's cluster client keeps at most 100 connections per node and refuses the next call at once
    # (MaxConnectionsError), which was taken for an outage: the breaker every tenant shares opened, and a burst
    # of 120 requests of one budgeted tenant left 20 of them, and everyone's for 2 s, a 503 store_unavailable.
    # As on a single Redis, a call past the worker's connections waits for one within the store's timeout.
    import asyncio

    from gateway.state import RedisStore, StoreUnavailable

    async def burst() -> tuple[list[str], bool]:
        store = RedisStore(replicas.cluster.url)
        await store.get("sy:burst:{dana}:warm")

        async def one(i: int) -> str:
            try:
                await store.get(f"sy:burst:{{dana}}:{i}")
            except StoreUnavailable as exc:
                return str(exc)
            return "ok"

        got = await asyncio.gather(*(one(i) for i in range(250)))
        closed = store.breaker.closed
        await store.close()
        return got, closed

    got, closed = asyncio.run(burst())
    assert closed and got == ["ok"] * 250, {g for g in got if g != "ok"}


def test_a_plain_redis_url_naming_a_cluster_node_says_so_and_is_not_ready(replicas: Replicas) -> None:
    # `redis://host:port` (no `+cluster`, no `?cluster=true`) pointed at a cluster node: PING answered, so
    # /readyz said "ready", while every keyed call was refused with `MOVED 7188 127.0.0.1:…`, which the logs
    # repeated as the whole reason; budgets failed closed for good and held spend was never written.
    import asyncio

    from gateway.state import RedisStore, StoreUnavailable

    port = replicas.cluster.ports[0]
    elsewhere = next(k for k in (f"sy:probe:{i}" for i in range(100))
                     if int(replicas.cluster.cli("cluster", "keyslot", k)) not in _slots_of(replicas.cluster, port))

    async def scenario() -> tuple[str, bool, str]:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
        try:
            await store.get(elsewhere)
        except StoreUnavailable as exc:
            said = str(exc)
        else:
            said = "answered"
        ready = await store.ping()
        try:
            await store.get(elsewhere)  # while the breaker is open: the reason still given
        except StoreUnavailable as exc:
            again = str(exc)
        await store.close()
        return said, ready, again

    said, ready, again = asyncio.run(scenario())
    assert "Redis Cluster" in said and "redis+cluster://" in said, said
    assert "redis+cluster://" in again, again
    assert ready is False


def _slots_of(cluster: RedisCluster, port: int) -> set[int]:
    slots: set[int] = set()
    for line in cluster.cli("cluster", "nodes").splitlines():
        fields = line.split()
        if fields[1].split("@")[0].endswith(f":{port}"):
            for span in fields[8:]:
                low, _, high = span.partition("-")
                slots.update(range(int(low), int(high or low) + 1))
    return slots
