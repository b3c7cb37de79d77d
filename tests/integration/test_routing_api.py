"""Routing through the HTTP API: explain, per-request headers, impossible constraints, hot reload, tenants."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from tests.integration.conftest import sim_config
from tests.support.processes import Simulator, running_gateway

HARD = ("Prove that the integral of x^2 * sin(x) from 0 to pi equals pi^2 - 4, step by step, then derive "
        "the general formula and explain why the recursion terminates. Analyse the algorithm's complexity.")


def test_route_explains_without_calling_a_model(base_url: str, simulator: Simulator) -> None:
    simulator.reset()
    resp = httpx.post(base_url + "/route", json={"messages": [{"role": "user", "content": HARD}]})
    assert resp.status_code == 200
    explained = resp.json()
    assert explained["policy"] == "balanced"
    assert explained["plan"] in {c["plan"] for c in explained["candidates"]}
    assert 0 <= explained["signal"]["difficulty"] <= 1
    for c in explained["candidates"]:
        assert 0 <= c["predicted_quality"] <= 1 and c["predicted_cost_usd"] > 0
    assert all(v["requests"] == 0 for v in simulator.stats().values())


def test_headers_tighten_the_policy_per_request(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    messages = [{"role": "user", "content": HARD}]
    free = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
    capped = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, extra_headers={"x-switchyard-max-cost-usd": "0.00005"})
    assert free.headers["x-switchyard-plan"] == "single:large"
    assert capped.headers["x-switchyard-plan"] == "single:small"
    explained = httpx.post(base_url + "/route", headers={"x-switchyard-policy": "cost-saver"},
                           json={"model": "auto", "messages": messages}).json()
    chosen = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, extra_headers={"x-switchyard-policy": "cost-saver"})
    assert explained["policy"] == "cost-saver"
    assert [c["plan"] for c in explained["candidates"]] == ["single:small", "single:large"]
    assert chosen.headers["x-switchyard-plan"] == explained["plan"]


def test_a_constraint_no_plan_can_meet_is_a_422(base_url: str) -> None:
    resp = httpx.post(base_url + "/chat/completions", headers={"x-switchyard-latency-slo-ms": "1"},
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "constraint_unsatisfiable"
    assert "latency_slo_ms" in resp.json()["error"]["message"]


def test_bad_override_header_is_a_400(base_url: str) -> None:
    resp = httpx.post(base_url + "/chat/completions", headers={"x-switchyard-max-cost-usd": "cheap"},
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-switchyard-max-cost-usd"


def test_policy_edit_is_picked_up_under_traffic_without_dropping_requests(
        simulator: Simulator, tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parents[2] / "routing_policies", folder)
    app = create_app(sim_config(simulator.url), policies_dir=folder, watch_policies_s=0.1)
    with running_gateway(app) as gw:
        statuses: list[int] = []
        plans: list[str] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=gw.base_url, timeout=10) as c:
                while not stop.is_set():
                    r = c.post("/v1/chat/completions", json={"model": "router/balanced",
                                                             "messages": [{"role": "user", "content": "hi"}]})
                    statuses.append(r.status_code)
                    plans.append(r.headers.get("x-switchyard-plan", ""))

        worker = threading.Thread(target=traffic)
        worker.start()
        time.sleep(0.5)
        path = folder / "balanced.yaml"
        path.write_text("candidates:\n  - single: large\n")
        os.utime(path, (time.time() + 2, time.time() + 2))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not plans or plans[-1] != "single:large"):
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        worker.join(timeout=10)
    assert statuses and set(statuses) == {200}
    assert plans[0] == "single:small" and plans[-1] == "single:large"


@pytest.fixture
def tenant_gateway(simulator: Simulator, policies_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SY_TEST_KEY_B", "sk-team-b")
    tenants = [
        {"name": "team-a", "api_key_sha256": hash_key("sk-team-a"), "policies": ["cost-saver"],
         "default_policy": "cost-saver"},
        {"name": "team-b", "api_key_env": "SY_TEST_KEY_B", "budget_usd": 0.0000001},
    ]
    app = create_app(sim_config(simulator.url, tenants=tenants), policies_dir=policies_dir)
    with running_gateway(app) as gw:
        yield gw.base_url + "/v1"


def test_tenants_authenticate_and_are_pinned_to_their_policies(tenant_gateway: str) -> None:
    anonymous = openai.OpenAI(base_url=tenant_gateway, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    team_a = openai.OpenAI(base_url=tenant_gateway, api_key="sk-team-a", max_retries=0)
    assert team_a.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]).choices
    with pytest.raises(openai.PermissionDeniedError):
        team_a.chat.completions.create(model="router/quality-first", messages=[{"role": "user", "content": "hi"}])


def test_a_tenant_over_budget_gets_429_insufficient_quota(tenant_gateway: str) -> None:
    team_b = openai.OpenAI(base_url=tenant_gateway, api_key="sk-team-b", max_retries=0)
    # The request's worst case is over the whole budget: refused before it is sent upstream.
    with pytest.raises(openai.RateLimitError) as info:
        team_b.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "budget_exceeded"



def test_an_answer_chosen_under_a_tightening_header_is_not_served_without_it(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    messages = [{"role": "user", "content": f"{HARD} Twice."}]  # a question no other test caches
    # with max_tokens 40 the cap rules out large (~$0.00014 at worst) and leaves small (~$0.00003) uncut,
    # so the cheaper answer is cacheable
    cheap = {"x-switchyard-max-cost-usd": "0.0001"}
    tightened = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, temperature=0, max_tokens=40, extra_headers=cheap)
    plain = client.chat.completions.with_raw_response.create(model="auto", messages=messages, temperature=0,
                                                             max_tokens=40)
    again = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, temperature=0, max_tokens=40, extra_headers=cheap)
    assert (tightened.headers["x-switchyard-plan"], tightened.headers["x-switchyard-cache"]) == ("single:small", "miss")
    assert (plain.headers["x-switchyard-plan"], plain.headers["x-switchyard-cache"]) == ("single:large", "miss")
    assert (again.headers["x-switchyard-plan"], again.headers["x-switchyard-cache"]) == ("single:small", "hit")
