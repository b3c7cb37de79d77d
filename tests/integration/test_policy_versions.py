"""Policy versions over real HTTP and a real Redis: an edit shows in `switchyard policy history` with its
diff, and `switchyard policy rollback` brings the old decisions back on two replicas that do not share
a policy folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.api.app import create_app
from tests.integration.conftest import sim_config
from tests.support.processes import ROOT, RedisServer, Simulator, running_gateway, wait_until

CLI = [sys.executable, "-m", "gateway.cli"]
SMALL = "candidates:\n  - single: small\n"
LARGE = "candidates:\n  - single: large\n"


@pytest.fixture
def versions_url(redis_server: RedisServer) -> Iterator[str]:
    """A Redis database of its own, so that these versions never reach the other tests' gateways."""
    url = f"redis://127.0.0.1:{redis_server.port}/6"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SWITCHYARD_REDIS_URL", "SWITCHYARD_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def _route(base_url: str) -> tuple[str, str]:
    r = httpx.post(base_url + "/v1/route", json={"model": "router/pv", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    return r.json()["plan"], r.json()["policy_version"]


def _all_decide(urls: list[str], plan: str, within_s: float) -> str:
    deadline = time.monotonic() + within_s
    seen: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        seen = [_route(u) for u in urls]
        if all(p == plan for p, _ in seen) and len({v for _, v in seen}) == 1:
            return seen[0][1]
        time.sleep(0.1)
    raise AssertionError(f"replicas did not all decide {plan} within {within_s} s: {seen}")


def _edit(path: Path, text: str) -> None:
    path.write_text(text)
    later = time.time() + 2  # a new mtime even within the file system's time resolution
    os.utime(path, (later, later))


def test_a_policy_edit_appears_in_history_and_a_rollback_restores_the_previous_decisions_on_every_replica(
        simulator: Simulator, versions_url: str, tmp_path: Path) -> None:
    folders = [tmp_path / "replica-a", tmp_path / "replica-b"]  # replicas that do not share a folder
    for folder in folders:
        folder.mkdir()
        (folder / "pv.yaml").write_text(SMALL)
    config = sim_config(simulator.url, versions_url, policies_dir=str(folders[0]))
    gw_yaml = tmp_path / "gw.yaml"
    gw_yaml.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    spans = InMemorySpanExporter()
    apps = [create_app(config, policies_dir=folders[0], watch_policies_s=0.5, span_exporter=spans),
            create_app(config, policies_dir=folders[1], watch_policies_s=0.5)]
    with running_gateway(apps[0]) as a, running_gateway(apps[1]) as b:
        urls = [a.base_url, b.base_url]
        old = _all_decide(urls, "single:small", within_s=1)

        _edit(folders[0] / "pv.yaml", LARGE)  # edited on replica A only
        new = _all_decide(urls, "single:large", within_s=5)
        assert new != old

        shown = _cli("policy", "history", "pv", "--config", str(gw_yaml), cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        assert old in out and new in out and "start-up" in out and "file reload" in out
        assert "-- single: small" in out and "+- single: large" in out  # the spec's unified diff, as YAML
        assert f"--- pv@{old}" in out and f"+++ pv@{new}" in out

        rolled = _cli("policy", "rollback", "pv", old, "--config", str(gw_yaml), "--by", "ops@test", cwd=tmp_path)
        assert rolled.returncode == 0, rolled.stderr
        assert _all_decide(urls, "single:small", within_s=5) == old
        assert yaml.safe_load((folders[0] / "pv.yaml").read_text()) == {"candidates": [{"single": "small"}]}

        httpx.post(a.base_url + "/v1/chat/completions",
                   json={"model": "router/pv", "messages": [{"role": "user", "content": "hi"}]}).raise_for_status()
        versions = [s.attributes.get("switchyard.policy.version") for s in spans.get_finished_spans()
                    if s.name == "switchyard.request" and s.attributes]
        assert versions and versions[-1] == old

    listed = _cli("policy", "history", "pv", "--config", str(gw_yaml), "--json", cwd=tmp_path)
    entries = yaml.safe_load(listed.stdout)
    # One entry per change, not per replica: two start-ups, one edit (followed by B), one rollback.
    assert [(e["version"], e["source"]) for e in entries] == [(old, "start-up"), (new, "file reload"),
                                                               (old, "cli rollback")]
    assert entries[-1]["by"] == "ops@test"


def test_a_deleted_policy_shows_in_history_as_unloaded_not_in_force_and_a_rollback_brings_it_back(
        simulator: Simulator, versions_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "pv.yaml").write_text(SMALL)
    config = sim_config(simulator.url, versions_url, policies_dir=str(folder))
    gw_yaml = tmp_path / "gw.yaml"
    gw_yaml.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    with running_gateway(create_app(config, policies_dir=folder, watch_policies_s=0.2)) as gw:
        _, old = _route(gw.base_url)
        (folder / "pv.yaml").unlink()

        def history() -> list[dict[str, object]]:
            listed = _cli("policy", "history", "pv", "--config", str(gw_yaml), "--json", cwd=tmp_path)
            assert listed.returncode == 0, listed.stderr
            return list(yaml.safe_load(listed.stdout))

        wait_until(lambda: len(history()) == 2, timeout_s=10, what="the unload in the audit")
        assert [(e["version"], e["source"]) for e in history()] == [(old, "start-up"), ("unloaded", "file deleted")]
        shown = _cli("policy", "history", "pv", "--config", str(gw_yaml), cwd=tmp_path).stdout
        assert "(in force)" not in shown, shown  # it said so of the deleted version
        assert shown.splitlines()[-1].startswith("unloaded  "), shown
        assert shown.splitlines()[-1].endswith(f"file deleted  by {history()[-1]['by']}  {folder / 'pv.yaml'}")

        rolled = _cli("policy", "rollback", "pv", old, "--config", str(gw_yaml), cwd=tmp_path)
        assert rolled.returncode == 0 and rolled.stdout.startswith(f"policy pv: version {old} in force (was none)"), \
            rolled.stdout + rolled.stderr  # not "in force already"
        wait_until(lambda: httpx.post(gw.base_url + "/v1/route", json={
            "model": "router/pv", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200,
            timeout_s=5, what="the rolled-back policy")
        assert "(in force)" in _cli("policy", "history", "pv", "--config", str(gw_yaml), cwd=tmp_path).stdout


def test_policy_history_without_a_shared_store_says_what_it_needs(tmp_path: Path) -> None:
    shown = _cli("policy", "history", "pv", cwd=tmp_path)
    assert shown.returncode == 1
    assert "redis_url" in shown.stderr and "in-memory store" in shown.stderr
