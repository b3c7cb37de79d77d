"""The durable spend ledger over real HTTP: two gateway processes on one Redis report the same spend,
it survives a restart, a tenant sees its own and the admin key everyone's, `switchyard spend` prints
the same rows, and bad questions are 400s."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.api.app import create_app
from tests.integration.conftest import sim_config
from tests.support.processes import (
    ROOT,
    RedisServer,
    Simulator,
    free_port,
    running_gateway,
    start_redis,
    terminate,
    wait_until,
)

ADMIN_KEY = "sk-spend-admin"
KEYS = {"alice": "sk-spend-alice", "bob": "sk-spend-bob"}
GROUPS = "tenant,deployment,policy,plan_kind"


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def redis_db() -> Iterator[RedisServer]:
    server = start_redis()  # a Redis of its own: the totals below are this module's traffic alone
    yield server
    server.stop()


@pytest.fixture(scope="module")
def config_file(simulator: Simulator, redis_db: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = sim_config(simulator.url, redis_db.url).model_dump(mode="json", exclude_none=True)
    raw["tenants"] = [{"name": name, "api_key_sha256": _sha(key)} for name, key in KEYS.items()]
    raw["admin_api_key_sha256"] = _sha(ADMIN_KEY)
    folder = tmp_path_factory.mktemp("spend")
    policies = folder / "policies"
    shutil.copytree(ROOT / "routing_policies", policies)
    (policies / "doomed.yaml").write_text(yaml.safe_dump({  # its escalation always fails
        "description": "small, then a deployment that always fails",
        "candidates": [{"cascade": {"steps": ["small", "broken"], "confidence": "judge", "judge": "broken",
                                    "threshold": 0.5}}],
        "cache": {"enabled": False}}))
    raw["policies_dir"] = str(policies)
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _serve(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200, timeout_s=60, what="gateway replica")
    return process, url


def _client(url: str, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEYS[tenant], max_retries=0)


def _ask(url: str, tenant: str, model: str, content: str) -> float:
    raw = _client(url, tenant).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], temperature=0)
    assert raw.parse().choices[0].message.content
    return float(raw.headers["x-switchyard-cost-usd"])


def _stream(url: str, tenant: str) -> float:
    """A pinned stream: its cost arrives with the usage chunk."""
    stream = _client(url, tenant).chat.completions.create(
        model="small", messages=[{"role": "user", "content": "Count to five."}], stream=True,
        stream_options={"include_usage": True})
    costs = [c.model_extra["switchyard"]["cost_usd"] for c in stream
             if c.model_extra and c.model_extra.get("switchyard")]
    assert len(costs) == 1
    return float(costs[0])


def _spend(url: str, key: str, **params: Any) -> httpx.Response:
    return httpx.get(url + "/v1/spend", params=params, headers={"authorization": f"Bearer {key}"}, timeout=10)


def _window() -> dict[str, Any]:
    now = int(time.time())
    return {"from": now - 3600, "to": now + 3600}


def test_spend_is_the_same_on_two_replicas_and_after_a_restart(config_file: Path) -> None:
    a, b = _serve(config_file), _serve(config_file)
    try:
        cost = {"alice": 0.0, "bob": 0.0}
        for content in ("What is 17 + 25?", "Prove that sqrt(2) is irrational, step by step.", "Name a colour."):
            cost["alice"] += _ask(a[1], "alice", "auto", content)
        cost["alice"] += _ask(b[1], "alice", "large", "What is the capital of France?")  # pinned
        cost["alice"] += _stream(b[1], "alice")
        cost["bob"] += _ask(b[1], "bob", "auto", "Write a haiku about routers.")
        window = {**_window(), "group_by": GROUPS}

        def both() -> tuple[dict[str, Any], dict[str, Any]]:
            return _spend(a[1], ADMIN_KEY, **window).json(), _spend(b[1], ADMIN_KEY, **window).json()

        def settled() -> bool:
            first, second = both()
            totals = {t: sum(r["cost_usd"] for r in first["data"] if r["tenant"] == t) for t in cost}
            return first == second and all(totals[t] == pytest.approx(cost[t], rel=1e-6) for t in cost)

        wait_until(settled, timeout_s=10, what="the same spend on both replicas")
        seen, _ = both()
        assert sum(r["requests"] for r in seen["data"]) == 6
        alice = [r for r in seen["data"] if r["tenant"] == "alice"]
        routed = [r for r in alice if r["policy"] == "balanced"]
        pinned = [r for r in alice if r["policy"] is None]
        assert sum(r["requests"] for r in routed) == 3 and sum(r["requests"] for r in pinned) == 2
        # savings: a routed request is compared with the policy's dearest candidate, a pinned one with itself
        assert all(r["counterfactual_usd"] > 0 and r["predicted_quality_counterfactual"] is not None
                   for r in routed if r["requests"])
        assert all(r["savings_usd"] == pytest.approx(0.0, abs=1e-12) and r["predicted_quality_chosen"] is None
                   for r in pinned)

        terminate(a[0])
        a = _serve(config_file)  # a fresh process: nothing of the spend is in its memory
        after, other = both()
        assert after == other == seen
    finally:
        terminate(a[0])
        terminate(b[0])

    # the CLI reads the same Redis and prints the same rows
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "spend", "--config", str(config_file),
                          "--group-by", GROUPS, "--since", "1h", "--csv"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["tenant"], r["deployment"], r["plan_kind"], float(r["cost_usd"])) for r in rows] == \
        [(r["tenant"], r["deployment"], r["plan_kind"], r["cost_usd"]) for r in seen["data"]]


@pytest.fixture(scope="module")
def gateway_url(config_file: Path) -> Iterator[str]:
    from gateway.config import load_config

    with running_gateway(create_app(load_config(config_file))) as gw:
        yield gw.base_url


def test_a_tenant_sees_its_own_spend_and_the_admin_key_sees_everyones(gateway_url: str) -> None:
    _ask(gateway_url, "alice", "small", "Say hi.")
    _ask(gateway_url, "bob", "small", "Say hello.")
    assert {r["tenant"] for r in _spend(gateway_url, KEYS["alice"], group_by="tenant").json()["data"]} == {"alice"}
    assert {r["tenant"] for r in _spend(gateway_url, KEYS["bob"], group_by="tenant").json()["data"]} == {"bob"}
    assert {r["tenant"] for r in _spend(gateway_url, ADMIN_KEY, group_by="tenant").json()["data"]} >= {"alice", "bob"}
    assert _spend(gateway_url, "sk-nobody").status_code == 401


def test_spend_is_grouped_by_hour_between_iso_times(gateway_url: str) -> None:
    _ask(gateway_url, "alice", "small", "Say hi again.")
    now = time.time()
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 7200))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60))
    body = _spend(gateway_url, KEYS["alice"], group_by="hour", **{"from": start, "to": end}).json()
    assert body["group_by"] == ["hour"] and body["data"]
    assert body["data"][-1]["hour"] == time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now))
    assert body["total"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in body["data"]))
    # the default: the last 24 hours, by tenant
    assert _spend(gateway_url, KEYS["alice"]).json()["group_by"] == ["tenant"]


def test_a_failed_request_still_bills_the_calls_that_answered(gateway_url: str) -> None:
    def doomed() -> list[dict[str, Any]]:
        rows = _spend(gateway_url, KEYS["bob"], group_by="policy,deployment").json()["data"]
        return [r for r in rows if r["policy"] == "doomed"]

    assert doomed() == []
    with pytest.raises(openai.APIStatusError) as failed:
        _ask(gateway_url, "bob", "router/doomed", "What is 2 + 2?")
    assert failed.value.status_code == 502
    [row] = doomed()  # the first step answered and cost money; the request answered nothing
    assert row["deployment"] == "small" and row["cost_usd"] > 0 and row["requests"] == 0


@pytest.mark.parametrize(("params", "param"), [
    ({"group_by": "colour"}, "group_by"),
    ({"from": "yesterday"}, "from"),
    ({"to": "nan"}, "to"),
    ({"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, "from"),
    ({"from": "0"}, "from"),  # longer than the ledger keeps
    ({"to": "1e12"}, "to"),  # past year 9999: was a 500 (year 33658 is out of range)
    ({"to": "1e17"}, "to"),
    ({"to": "0001-01-01T10:00:00Z"}, "to"),  # before 1970: was a 500 (an OS error)
    ({"from": "1969-12-31T00:00:00Z", "to": "1970-01-01T10:00:00Z"}, "from"),
    ({"group-by": "tenant"}, "group-by"),
    # what float() takes and no client means as a time: digit separators, other scripts' digits, infinity
    ({"from": f"{int(time.time()) - 3600:_}"}, "from"),
    ({"from": "".join(chr(0x0660 + int(d)) for d in str(int(time.time()) - 3600))}, "from"),
    ({"to": "infinity"}, "to"),
    ({"from": [str(int(time.time()) - 7200), str(int(time.time()) - 3600)]}, "from"),  # given twice: which?
])
def test_bad_spend_parameters_are_400(gateway_url: str, params: dict[str, Any], param: str) -> None:
    resp = _spend(gateway_url, KEYS["alice"], **params)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def _switchyard_spend(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "spend", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)


def test_switchyard_spend_since_reaches_back_as_far_as_the_ledger_keeps_and_no_further(config_file: Path) -> None:
    longest = _switchyard_spend("--config", str(config_file), "--since", "400d")  # was refused as over 400 days
    assert longest.returncode == 0 and longest.stderr == "", longest.stderr
    for since, says in [("401d", "the window may span at most 400 days (what the ledger keeps)"),
                        ("0h", "--since must be longer than 0, got '0h'")]:  # was the current hour
        out = _switchyard_spend("--config", str(config_file), "--since", since)
        assert out.returncode == 2 and out.stderr.splitlines() == [f"switchyard spend: {says}"], out.stderr


def test_switchyard_spend_help_explains_the_table() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "spend", "--help"], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for words in ("--group-by", "--since", "--csv", "--config", "savings_usd", "counterfactual", "in-memory"):
        assert words in out.stdout


def test_group_by_given_twice_groups_by_both(gateway_url: str) -> None:
    """`group_by=policy&group_by=deployment` was read as its last value alone: grouped by deployment, and said so."""
    both = _spend(gateway_url, KEYS["alice"], group_by=["policy", "deployment"], **_window()).json()
    assert both["group_by"] == ["policy", "deployment"]
    assert all({"policy", "deployment"} <= set(row) for row in both["data"])
