"""Answers that arrive as the gateway gives up on them are billed: over real HTTP, a deployment whose
answers come right around its timeout, a healthy fallback, and the simulator's own count of what it
served against the spend ledger's calls.

Before, the gateway closed the connection at its timeout: an answer sent just before was counted
served by the upstream (a provider bills it) and never reached the ledger. The window is a few
milliseconds on a quiet machine and grows with the gateway's event-loop lag under load.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from gateway.ledger import read_spend, spend_table, window
from gateway.messages import prompt_bound
from tests.integration.test_metrics_endpoint import scrape, total
from tests.support.lab import BUDGET_KEY as BUDGET
from tests.support.lab import PRICE, budgeted_gateway, lab_gateway, policies_folder, simulator_of
from tests.support.processes import GatewayServer, Simulator, wait_until

TIMEOUT_S = 0.3
# Answers due from just before to just after the timeout: every one of them is sent while the
# gateway is (or was, a moment ago) waiting for it.
DELAYS_MS = (270, 285, 295, 300, 305, 315, 330)
TARDY_MS = 2500
QUICK = {"ability": 2.0, "ttft_ms": 2, "tokens_per_s": 0, "output_tokens": 10}
MODELS = [
    {"name": "sim-small", **QUICK}, {"name": "sim-large", **QUICK}, {"name": "sim-next", **QUICK},
    {"name": "sim-edge", **QUICK, "faults": [{"kind": "slow", "rate": 1 / len(DELAYS_MS), "delay_ms": d}
                                             for d in DELAYS_MS]},
    # Always late: it answers 2 × TIMEOUT_S after the gateway gave up and moved on to the fallback.
    {"name": "sim-late", **QUICK, "faults": [{"kind": "slow", "rate": 1.0, "delay_ms": 3000 * TIMEOUT_S}]},
    # Later still: its answer lands well after the request's response, while the test asks again.
    {"name": "sim-tardy", **QUICK, "faults": [{"kind": "slow", "rate": 1.0, "delay_ms": TARDY_MS}]}]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with simulator_of(MODELS, tmp_path_factory.mktemp("late")) as sim:
        yield sim


@pytest.fixture(scope="module")
def base_url(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies = {"edge": {"description": "answers around the timeout, a healthy fallback",
                         "candidates": [{"single": "edge"}], "fallbacks": {"edge": ["next"]},
                         "cache": {"enabled": False}}}
    deployments = {"small": ("sim-small", "small"), "large": ("sim-large", "large"), "edge": ("sim-edge", "lab"),
                   "next": ("sim-next", "lab")}
    with lab_gateway(sim, tmp_path_factory.mktemp("late-gw"), policies, deployments, max_retries=0,
                     timeout_s=lambda name: TIMEOUT_S if name == "edge" else 5) as url:
        yield url


def _calls(base_url: str) -> dict[str, int]:
    rows = httpx.get(base_url + "/spend", params={"group_by": "deployment"}, timeout=10).json()["data"]
    return {r["deployment"]: int(r["calls"]) for r in rows if r["calls"]}


def _cost(base_url: str) -> dict[str, float]:
    rows = httpx.get(base_url + "/spend", params={"group_by": "deployment"}, timeout=10).json()["data"]
    return {r["deployment"]: float(r["cost_usd"]) for r in rows}


@pytest.mark.parametrize("stream", [False, True])
def test_every_answer_the_upstream_served_is_billed_even_when_the_gateway_had_given_up(
        base_url: str, sim: Simulator, stream: bool) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    before = _calls(base_url)
    sim.reset()

    def ask(i: int) -> str:
        reply = client.chat.completions.create(model="router/edge", stream=stream,  # type: ignore[call-overload]
                                               messages=[{"role": "user", "content": f"What is {i} + 1?"}])
        return "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream \
            else reply.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(28)))
    assert all(a.startswith("The answer is") for a in answers)  # the fallback answered whatever was late

    def settled() -> bool:  # every call the upstream took has ended (answered, or found its client gone)
        stats = sim.stats()
        return all(s["requests"] == s["served"] + s["abandoned"] + s["errors"] for s in stats.values())
    wait_until(settled, timeout_s=10, what="the late answers")
    served = {d: sim.stats()[f"sim-{d}"]["served"] for d in ("edge", "next")}

    def billed() -> dict[str, int]:
        after = _calls(base_url)
        return {d: after.get(d, 0) - before.get(d, 0) for d in ("edge", "next")}
    try:
        wait_until(lambda: billed() == served, timeout_s=5, what="the ledger")
    finally:
        assert billed() == served
    assert sim.stats()["sim-edge"]["abandoned"] == 0  # the gateway read every answer it had asked for
    # The metrics add up to the ledger: what answers cost, plus what was billed beside them (late calls).
    metrics = scrape(base_url.removesuffix("/v1"))
    for d in ("edge", "next"):
        counted = total(metrics, "switchyard_cost_usd_total", deployment=d) + total(
            metrics, "switchyard_background_cost_usd_total", deployment=d)
        assert counted == pytest.approx(_cost(base_url)[d], rel=1e-6)
    assert total(metrics, "switchyard_background_cost_usd_total", deployment="edge", kind="late") > 0


def test_a_budget_holds_for_an_attempt_given_up_on_and_the_fallback_that_answered(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first deployment always times out and answers late, billed, on top of its fallback's answer.
    # One call's worst case here is (the prompt's 21-token bound + 10 output tokens at $2/M) ~ $0.000041:
    # a budget of $0.00005 pays for one call, not for both. Before, the request was admitted on one
    # call's hold and spent both.
    budget = 0.00005
    policy = {"candidates": [{"single": "late"}], "fallbacks": {"late": ["next"]}}
    deployments = {"late": ("sim-late", {"max_retries": 0, "timeout_s": TIMEOUT_S}),
                   "next": ("sim-next", {"max_retries": 0, "timeout_s": 5})}
    question = [{"role": "user", "content": "What is 2 + 2?"}]
    with budgeted_gateway(sim, tmp_path, monkeypatch, budget, policy, deployments) as gw:
        gw.refuses(lambda: gw.client.chat.completions.create(model="router/thrifty", messages=question,  # type: ignore[arg-type]
                                                             max_tokens=10), budget, "a request with a fallback")
        assert sim.stats()["sim-late"]["requests"] == 0
        # One deployment without retries makes one attempt: the same request fits.
        answer = gw.client.chat.completions.create(model="next", messages=question,  # type: ignore[arg-type]
                                                   max_tokens=10)
        assert answer.choices[0].message.content


# A request that falls back from `tardy` (always given up on at TIMEOUT_S, answering TARDY_MS in) to
# `next`: its response is sent long before the tardy answer lands and is billed, late.
TARDY_POLICY = {"candidates": [{"single": "tardy"}], "fallbacks": {"tardy": ["next"]}}
TARDY_DEPLOYMENTS = {"tardy": ("sim-tardy", {"max_retries": 0, "timeout_s": TIMEOUT_S}),
                     "next": ("sim-next", {"max_retries": 0, "timeout_s": 5})}
ADMIN = "sk-admin-late"
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


def _redis_url(store: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_server").url if store == "redis" else None


def _tardy_served(sim: Simulator) -> None:
    wait_until(lambda: sim.stats()["sim-tardy"]["served"] == 1, timeout_s=10, what="the tardy answer")


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_late_answer_is_billed_to_the_keys_own_budget_and_token_window(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str,
        request: pytest.FixtureRequest) -> None:
    # Before, a late call's cost went to the tenant's spend counter alone: a key with its own budget
    # (and tokens-per-minute window) never saw it, and could be billed past its budget that way.
    tenant = f"late-{uuid.uuid4().hex[:8]}"
    with budgeted_gateway(sim, tmp_path, monkeypatch, None, TARDY_POLICY, TARDY_DEPLOYMENTS, tenant=tenant,
                          redis_url=_redis_url(store, request), admin_key=ADMIN) as gw:
        made = httpx.post(gw.base_url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10,
                          json={"tenant": tenant, "budget": {"usd": 1.0}, "tokens_per_minute": 100_000})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="router/thrifty", messages=QUESTION,  # type: ignore[arg-type]
                                                               max_tokens=10)
        answered = float(raw.headers["x-switchyard-cost-usd"])
        _tardy_served(sim)

        def ledger() -> tuple[float, int]:  # the tenant's spend and tokens, every call (late ones too)
            rows = httpx.get(gw.base_url + "/v1/spend", params={"group_by": "tenant"}, timeout=10,
                             headers={"Authorization": f"Bearer {key}"}).json()["data"]
            return (sum(float(r["cost_usd"]) for r in rows),
                    sum(int(r["prompt_tokens"]) + int(r["completion_tokens"]) for r in rows))
        wait_until(lambda: ledger()[0] > 1.5 * answered, timeout_s=5, what="the late bill in the ledger")
        spent, tokens = ledger()

        def own() -> tuple[float, float, float]:
            body = httpx.get(gw.base_url + "/v1/budget", headers={"authorization": f"Bearer {key}"}, timeout=10).json()
            (row,) = body["budgets"]
            (window,) = body["rate_limits"]
            return row["spent_usd"], row["reserved_usd"], window["used"]
        try:
            wait_until(lambda: own()[0] == pytest.approx(spent), timeout_s=5, what="the key's spend")
        finally:
            key_spent, reserved, used = own()
            print(f"[{store}] answer ${answered:.8f}; ledger ${spent:.8f} ({tokens} tokens); "
                  f"key's budget: spent ${key_spent:.8f}, held ${reserved:.8f}; key's window {used:g} tokens")
        assert (key_spent, reserved, used) == (pytest.approx(spent), 0.0, tokens)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_the_hold_keeps_the_room_of_a_late_answer_until_it_lands(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str,
        request: pytest.FixtureRequest) -> None:
    # One call at max_tokens=10 may cost `call` at most; the budget pays for a little more than two.
    # The first request holds two (its tardy attempt and the fallback) and is answered by the fallback
    # while the tardy attempt is still on its way. Before, its whole hold was given back with the
    # response: a second request (one call) fitted in the room the tardy answer then spent, and the
    # budget overshot (three calls billed). Now the tardy call's worst case stays held until it lands.
    call = (prompt_bound(QUESTION)[0] * PRICE["input_per_mtok"] + 10 * PRICE["output_per_mtok"]) / 1e6
    budget = 2.1 * call
    tenant = f"late-{uuid.uuid4().hex[:8]}"
    with budgeted_gateway(sim, tmp_path, monkeypatch, budget, TARDY_POLICY, TARDY_DEPLOYMENTS, tenant=tenant,
                          redis_url=_redis_url(store, request)) as gw:
        first = gw.client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
            model="router/thrifty", messages=QUESTION, max_tokens=10)
        answered = float(first.headers["x-switchyard-cost-usd"])
        assert sim.stats()["sim-tardy"]["served"] == 0  # still on its way (TARDY_MS)
        row = httpx.get(gw.base_url + "/v1/budget", headers={"authorization": f"Bearer {BUDGET}"},
                        timeout=10).json()["budgets"][0]
        print(f"[{store}] one call's worst case ${call:.8f}, budget ${budget:.8f}; after the response: "
              f"spent ${row['spent_usd']:.8f}, held ${row['reserved_usd']:.8f}")
        assert row["spent_usd"] == pytest.approx(answered)
        assert row["reserved_usd"] == pytest.approx(call)  # the tardy call's worst case, no more
        gw.refuses(lambda: gw.client.chat.completions.create(model="next", messages=QUESTION,  # type: ignore[arg-type]
                                                             max_tokens=10), budget,
                   "a request in the room of a late answer still on its way")
        _tardy_served(sim)
        wait_until(lambda: gw.spent() > 1.5 * answered, timeout_s=5, what="the late bill")
        row = httpx.get(gw.base_url + "/v1/budget", headers={"authorization": f"Bearer {BUDGET}"},
                        timeout=10).json()["budgets"][0]
        print(f"[{store}] after the late answer: spent ${row['spent_usd']:.8f} (ledger ${gw.spent():.8f}), "
              f"held ${row['reserved_usd']:.8f}")
        assert row["spent_usd"] == pytest.approx(gw.spent()) and row["reserved_usd"] == 0.0
        assert gw.spent() <= budget


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_still_read_when_the_gateway_stops_is_billed_before_it_stops(sim: Simulator, tmp_path: Path,
                                                                          stream: bool) -> None:
    # Given up on at its timeout (a 504), the call is still read: stopping the gateway then (SIGTERM, a
    # deploy) threw it away unbilled and unlogged, though the upstream served it. Now the stop waits.
    policies = policies_folder(tmp_path, {"tardy": {"candidates": [{"single": "tardy"}],
                                                    "cache": {"enabled": False}}})
    tardy = {"name": "tardy", "model": "openai/sim-tardy", "api_base": sim.url, "tier": "lab", "price": PRICE,
             "timeout_s": TIMEOUT_S, "max_retries": 0}
    raw = {"default_policy": "tardy", "deployments": [tardy]}
    app = create_app(parse_config(raw, "stopping"), policies_dir=policies)
    sim.reset()
    server = GatewayServer(app).start()
    try:
        resp = httpx.post(server.base_url + "/v1/chat/completions", timeout=10, json={
            "model": "tardy", "stream": stream, "messages": [{"role": "user", "content": "What is 1 + 1?"}]})
        assert resp.status_code == 504, resp.text
    finally:
        server.stop()
    assert sim.stats()["sim-tardy"]["served"] == 1
    rows = spend_table(asyncio.run(read_spend(app.state.services.ledger.store, window(None, None))),
                       ("deployment",))
    assert [(r["deployment"], r["calls"]) for r in rows] == [("tardy", 1)]
    assert rows[0]["cost_usd"] > 0


def test_a_shadow_call_in_flight_when_the_gateway_stops_is_billed_before_it_stops(sim: Simulator,
                                                                                tmp_path: Path) -> None:
    # A shadow worker waiting on its strong call was cancelled after the stop had stopped waiting for
    # calls still read: the call was neither waited for nor billed, though the upstream served it.
    policies = policies_folder(tmp_path, {"shadowed": {"candidates": [{"single": "next"}],
                                                       "cache": {"enabled": False},
                                                       "shadow": {"rate": 1.0, "against": "tardy"}}})
    dearer = {"input_per_mtok": 10.0, "output_per_mtok": 20.0}
    raw = {"default_policy": "shadowed", "deployments": [
        {"name": "next", "model": "openai/sim-next", "api_base": sim.url, "tier": "lab", "price": PRICE},
        {"name": "tardy", "model": "openai/sim-tardy", "api_base": sim.url, "tier": "lab", "price": dearer,
         "timeout_s": 10, "max_retries": 0}]}
    app = create_app(parse_config(raw, "stopping"), policies_dir=policies)
    sim.reset()
    server = GatewayServer(app).start()
    try:
        resp = httpx.post(server.base_url + "/v1/chat/completions", timeout=10, json={
            "model": "router/shadowed", "messages": [{"role": "user", "content": "What is 1 + 1?"}]})
        assert resp.status_code == 200, resp.text
        wait_until(lambda: sim.stats()["sim-tardy"]["requests"] == 1, timeout_s=5, what="the shadow call")
    finally:
        server.stop()
    assert sim.stats()["sim-tardy"]["served"] == 1
    rows = spend_table(asyncio.run(read_spend(app.state.services.ledger.store, window(None, None))),
                       ("deployment", "plan_kind"))
    assert [(r["deployment"], r["plan_kind"], r["calls"]) for r in rows if r["deployment"] == "tardy"] == [
        ("tardy", "shadow", 1)]
