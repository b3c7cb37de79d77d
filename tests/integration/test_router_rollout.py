"""Router versions across replicas: two gateways on one Redis (one in this process, one a real
`switchyard serve`) follow `switchyard router promote` and `rollback` within seconds, report the
version they serve, and `router evaluate` compares routers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.api.app import create_app
from gateway.router.artifact import Artifact
from gateway.router.model import DEFAULT_ARTIFACT
from tests.integration.conftest import FIXTURES, sim_config
from tests.support.processes import ROOT, RedisServer, Simulator, free_port, running_gateway, terminate, wait_until
from tests.support.routers import MISMATCHES, copy_default, mismatched, variant

CLI = [sys.executable, "-m", "gateway.cli"]
HARD = [{"role": "user", "content": "Prove that the integral of x^2 sin(x) from 0 to pi is pi^2 - 4, step by step."}]
SHIPPED = Artifact.read(DEFAULT_ARTIFACT).version


def _env(redis_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SWITCHYARD_REDIS_URL", "SWITCHYARD_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    if redis_url:
        env["SWITCHYARD_REDIS_URL"] = redis_url
    return env


def _cli(*args: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=_env(redis_url))


@pytest.fixture
def versions_url(redis_server: RedisServer) -> Iterator[str]:
    """A Redis database of its own, so that promotions here never reach the other tests' gateways."""
    url = f"redis://127.0.0.1:{redis_server.port}/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def variant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return variant(tmp_path_factory.mktemp("routers") / "fewer-neighbours")


def _route(base_url: str) -> dict:
    resp = httpx.post(base_url + "/v1/route", json={"messages": HARD}, timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _all_serve(urls: list[str], version: str, within_s: float) -> float:
    """Seconds until every replica answers with `version`; fails after `within_s`."""
    start = time.monotonic()
    seen: list[str] = []
    while time.monotonic() - start < within_s:
        seen = [_route(u)["router_version"] for u in urls]
        if all(v == version for v in seen):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"replicas serve {seen}, not {version}, {within_s} s after the change")


@contextlib.contextmanager
def _serve(config_file: Path, log: Path) -> Iterator[str]:
    """`switchyard serve` as operators run it, in its own process; its log goes to `log`."""
    port = free_port()
    with log.open("w") as sink:
        process = subprocess.Popen([*CLI, "serve", "--config", str(config_file), "--port", str(port)],
                                   stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(base + "/healthz", timeout=1).status_code == 200, 30, "switchyard serve")
        yield base
    finally:
        terminate(process)


def test_every_replica_serves_a_promoted_router_within_5_s_and_a_rolled_back_one_too(
        simulator: Simulator, versions_url: str, policies_dir: Path, variant_dir: Path, tmp_path: Path) -> None:
    config = sim_config(simulator.url, versions_url, policies_dir=str(policies_dir))
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(exclude_none=True)))
    in_process = create_app(config, watch_policies_s=None)
    log = tmp_path / "serve.log"
    with running_gateway(in_process) as ga, _serve(config_file, log) as gb_url:
        urls = [ga.base_url, gb_url]
        before = [_route(u) for u in urls]
        assert [r["router_version"] for r in before] == [SHIPPED, SHIPPED]

        promoted = _cli("router", "promote", str(variant_dir), "--by", "ci", redis_url=versions_url)
        assert promoted.returncode == 0, promoted.stderr
        new = Artifact.read(variant_dir).version
        assert new in promoted.stdout and new != SHIPPED
        _all_serve(urls, new, within_s=5.0)
        assert f"router {new} now serving (was {SHIPPED}; promote by ci)" in log.read_text()
        after = _route(ga.base_url)
        assert [c["predicted_quality"] for c in after["candidates"]] != \
            [c["predicted_quality"] for c in before[0]["candidates"]]  # the new router really decides

        history = _cli("router", "history", "--json", redis_url=versions_url)
        assert history.returncode == 0, history.stderr
        listed = json.loads(history.stdout)
        assert listed["current"] == new and [e["by"] for e in listed["history"]] == ["ci"]

        rolled = _cli("router", "rollback", "--by", "ci", redis_url=versions_url)
        assert rolled.returncode == 0, rolled.stderr
        _all_serve(urls, SHIPPED, within_s=5.0)
        assert [c["predicted_quality"] for c in _route(gb_url)["candidates"]] == \
            [c["predicted_quality"] for c in before[1]["candidates"]]


def test_a_replica_started_after_a_promotion_serves_it_from_its_first_request(
        simulator: Simulator, versions_url: str, policies_dir: Path, variant_dir: Path) -> None:
    assert _cli("router", "promote", str(variant_dir), redis_url=versions_url).returncode == 0
    app = create_app(sim_config(simulator.url, versions_url), policies_dir=policies_dir, watch_policies_s=None)
    with running_gateway(app) as gw:
        assert _route(gw.base_url)["router_version"] == Artifact.read(variant_dir).version


def test_the_router_version_is_on_every_request_and_route_span(simulator: Simulator, policies_dir: Path) -> None:
    spans = InMemorySpanExporter()
    app = create_app(sim_config(simulator.url), span_exporter=spans, policies_dir=policies_dir,
                     watch_policies_s=None)
    version = app.state.services.router.version
    assert version == SHIPPED
    with running_gateway(app) as gw:
        for model in ("auto", "small"):  # routed, and pinned (no routing, still the serving version)
            resp = httpx.post(gw.base_url + "/v1/chat/completions", timeout=10,
                              json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code == 200, resp.text
    named = [s for s in spans.get_finished_spans() if s.name in ("switchyard.request", "switchyard.route")]
    assert sorted(s.name for s in named) == ["switchyard.request", "switchyard.request", "switchyard.route",
                                             "switchyard.route"]
    assert all((s.attributes or {}).get("switchyard.router.version") == version for s in named)


def test_promote_without_a_shared_store_says_it_needs_one(variant_dir: Path) -> None:
    out = _cli("router", "promote", str(variant_dir))
    assert out.returncode == 1
    assert "shared store" in out.stderr and "redis_url" in out.stderr


def test_promote_refuses_a_directory_that_is_not_a_working_router(tmp_path: Path, versions_url: str) -> None:
    (tmp_path / "router.json").write_text("{}")
    (tmp_path / "router.npz").write_bytes(b"")
    out = _cli("router", "promote", str(tmp_path), redis_url=versions_url)
    assert out.returncode == 1 and "refused" in out.stderr
    assert redis.Redis.from_url(versions_url).get("sy:router:current") is None


@pytest.mark.parametrize(("damage", "named"), [
    ("truncated router.npz", "router: BadZipFile"), ("router.json a list", "router.json: not a JSON object"),
    ("router.json of another release", "router: TypeError")])
def test_promote_refuses_a_damaged_artifact_in_one_line(tmp_path: Path, versions_url: str, variant_dir: Path,
                                                        damage: str, named: str) -> None:
    Artifact.read(variant_dir).write(tmp_path)
    if damage == "truncated router.npz":
        npz = (tmp_path / "router.npz").read_bytes()
        (tmp_path / "router.npz").write_bytes(npz[:len(npz) // 2])
    elif damage == "router.json a list":
        (tmp_path / "router.json").write_text("[1, 2]")
    else:
        meta = json.loads((tmp_path / "router.json").read_text())
        meta["hash_spec"]["salt"] = 7
        (tmp_path / "router.json").write_text(json.dumps(meta))
    out = _cli("router", "promote", str(tmp_path), redis_url=versions_url)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"switchyard router promote: refused: {tmp_path}") and named in out.stderr
    assert redis.Redis.from_url(versions_url).get("sy:router:current") is None


@pytest.mark.parametrize("damage", MISMATCHES)
def test_promote_refuses_an_artifact_whose_meta_and_arrays_disagree_and_keeps_what_is_served(
        tmp_path: Path, versions_url: str, variant_dir: Path, damage: str) -> None:
    served = _cli("router", "promote", str(variant_dir), "--by", "ci", redis_url=versions_url)
    assert served.returncode == 0, served.stderr
    store = redis.Redis.from_url(versions_url)
    pointer, history = store.get("sy:router:current"), store.lrange("sy:router:history", 0, -1)
    bad = tmp_path / "bad"
    Artifact.read(variant_dir).write(bad)
    mismatched(bad, damage)
    out = _cli("router", "promote", str(bad), redis_url=versions_url)
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"switchyard router promote: refused: {bad}"), out.stderr
    assert store.get("sy:router:current") == pointer and store.lrange("sy:router:history", 0, -1) == history
    assert store.get(f"sy:router:artifact:{Artifact.read(bad).digest}") is None


def test_evaluate_compares_a_candidate_with_the_serving_router(versions_url: str, variant_dir: Path) -> None:
    data = str(FIXTURES / "router_small.jsonl")
    out = _cli("router", "evaluate", str(variant_dir), "--data", data, "--split", "all", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["candidate"]["version"] == Artifact.read(variant_dir).version
    assert result["serving"] == {"version": SHIPPED, "source": "configured"}
    assert result["n"] == 30 and result["pairs"]
    for by_router in result["pairs"].values():
        for report in by_router.values():
            assert 0 <= report["cpt50"] <= 1 and "apgr" in report and 0 <= report["share_for_quality"] <= 1
            assert report["at_share"]["strong_share"] == pytest.approx(0.3, abs=0.04)
    # against the promoted router, as a table
    assert _cli("router", "promote", str(variant_dir), redis_url=versions_url).returncode == 0
    table = _cli("router", "evaluate", str(DEFAULT_ARTIFACT), "--data", data, "--split", "all",
                 "--weak", "Meta-Llama-3.1-8B-Instruct", "--strong", "Meta-Llama-3.1-70B-Instruct",
                 redis_url=versions_url)
    assert table.returncode == 0, table.stderr
    assert f"serving: {Artifact.read(variant_dir).version} (promoted)" in table.stdout
    assert "APGR" in table.stdout and "share to strong for 95% quality" in table.stdout


def test_history_keeps_its_columns_apart_for_a_rollback_to_a_version_and_a_long_name(
        tmp_path: Path, versions_url: str, variant_dir: Path) -> None:
    """The action and version columns were 10 and 40 wide: "rollback toart1@..." ran into one word."""
    long = copy_default(tmp_path / "adapted-on-the-traffic-of-the-last-seven-days")
    versions = [Artifact.read(long).version, Artifact.read(variant_dir).version, Artifact.read(long).version]
    for args in (["promote", str(long)], ["promote", str(variant_dir)], ["rollback", versions[0]]):
        assert _cli("router", *args, "--by", "ci", redis_url=versions_url).returncode == 0
    table = _cli("router", "history", redis_url=versions_url).stdout.splitlines()
    for line, action, version in zip(table[1:4], ["promote", "promote", "rollback to"], versions, strict=True):
        assert re.search(rf" {action}  +{re.escape(version)}  +ci$", line), line


def test_a_rollback_to_a_version_whose_bytes_are_gone_is_refused_and_keeps_what_is_served(
        tmp_path: Path, versions_url: str, variant_dir: Path) -> None:
    earlier = copy_default(tmp_path / "earlier")
    for directory in (earlier, variant_dir):
        assert _cli("router", "promote", str(directory), redis_url=versions_url).returncode == 0
    store = redis.Redis.from_url(versions_url)
    store.delete(f"sy:router:artifact:{Artifact.read(earlier).digest}")
    pointer, history = store.get("sy:router:current"), store.lrange("sy:router:history", 0, -1)
    for version in ([], [Artifact.read(earlier).version]):  # the last change undone, or the version named
        out = _cli("router", "rollback", *version, redis_url=versions_url)
        assert out.returncode == 1, out.stdout
        [line] = out.stderr.splitlines()
        assert line == f"switchyard router rollback: router {Artifact.read(earlier).version} is promoted but its " \
                       "bytes are not in the store", line
    assert store.get("sy:router:current") == pointer and store.lrange("sy:router:history", 0, -1) == history
    served = _cli("router", "history", redis_url=versions_url)
    assert served.stdout.splitlines()[-1] == f"serving now: {Artifact.read(variant_dir).version}"


def test_route_explains_with_the_router_a_gateway_of_that_store_serves(versions_url: str, variant_dir: Path) -> None:
    # it explained with the configured (here the shipped) router while every replica served the promoted one
    def explained() -> dict[str, Any]:
        out = _cli("route", HARD[0]["content"], "--json", redis_url=versions_url)
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    shipped = explained()
    assert shipped["router_version"] == SHIPPED and shipped["policy_version"]
    assert _cli("router", "promote", str(variant_dir), redis_url=versions_url).returncode == 0
    promoted = explained()
    assert promoted["router_version"] == Artifact.read(variant_dir).version
    quality = [[c["predicted_quality"] for c in e["candidates"]] for e in (shipped, promoted)]
    assert quality[0] != quality[1]  # the variant's own predictions, not the shipped router's
    down = _cli("route", "hi", redis_url="redis://127.0.0.1:9/0")
    assert down.returncode == 1 and down.stderr.startswith("switchyard route: cannot read the promoted router")
