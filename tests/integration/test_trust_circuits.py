"""Circuits one tenant cannot open for everyone, over real HTTP: whole answers longer than a
deployment's `timeout_s` that one tenant asks for do not take the deployment from another tenant,
whether it answers others meanwhile, answers nobody else (a quiet deployment) or is half-open (the
long answer takes its one trial); a hung deployment, which answers nobody, still has its circuit opened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from tests.support.processes import ROOT, GatewayServer, Simulator, running_gateway

HELLO = [{"role": "user", "content": "hi"}]
TENANTS = [{"name": "tenant-a", "api_key_sha256": hash_key("sk-tenant-a")},
           {"name": "tenant-b", "api_key_sha256": hash_key("sk-tenant-b")}]


def _config(sim_url: str) -> Any:
    def dep(name: str, model: str, tier: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "model": f"openai/{model}", "api_base": sim_url, "tier": tier,
                "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}, "max_retries": 0, **kw}

    return parse_config({"tenants": TENANTS, "deployments": [
        # sim-streamy writes 400 tokens at 200 a second: a whole answer takes 2 s, four tokens 25 ms
        dep("shared", "sim-streamy", "small", timeout_s=0.4),
        dep("quiet", "sim-streamy", "small", timeout_s=0.4),  # only one tenant's long answers call it
        dep("tried", "sim-streamy", "small", timeout_s=0.4),  # its circuit half-open for one test
        dep("stuck", "sim-slow", "large", timeout_s=0.3),  # sim-slow answers after 3 s: nothing in time
        dep("metered", "sim-metered", "small", max_retries=2),  # a 1,000 tokens-per-minute limit
    ]}, "circuit trust test config")


@pytest.fixture(scope="module")
def gateway(simulator: Simulator) -> Iterator[GatewayServer]:
    with running_gateway(create_app(_config(simulator.url), policies_dir=ROOT / "routing_policies")) as server:
        yield server


def _client(gateway: GatewayServer, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0, timeout=30)


async def _status(client: openai.AsyncOpenAI, model: str, **kw: Any) -> tuple[int, str | None]:
    """The answer's status and the deployment that served it."""
    try:
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=HELLO, **kw)
    except openai.APIStatusError as exc:
        return exc.status_code, None
    return raw.status_code, raw.headers.get("x-switchyard-model")


async def _while_b_is_served(gateway: GatewayServer, a_calls: Any) -> tuple[Any, list[tuple[int, str | None]]]:
    """Tenant B asks `shared` for short answers (one every ~50 ms) from before `a_calls()` begins
    until after it ends: what `a_calls` returned, and each of B's outcomes."""
    b = _client(gateway, "sk-tenant-b")
    served: list[tuple[int, str | None]] = []
    first, done = asyncio.Event(), asyncio.Event()

    async def tenant_b() -> None:
        while not done.is_set():
            served.append(await _status(b, "shared", max_tokens=4))
            first.set()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(tenant_b())
    await first.wait()
    try:
        out = await a_calls()
    finally:
        done.set()
        await task
    return out, served


def _circuit_open(gateway: GatewayServer, name: str) -> bool:
    ready = httpx.get(gateway.base_url + "/readyz", headers={"authorization": "Bearer sk-tenant-b"}, timeout=5)
    return bool(ready.json()["deployments"][name]["circuit_open"])


def test_long_answers_one_tenant_asks_for_do_not_open_the_circuit_for_another(gateway: GatewayServer) -> None:
    a = _client(gateway, "sk-tenant-a")

    async def tenant_a() -> list[tuple[int, str | None]]:
        outcomes: list[tuple[int, str | None]] = []
        for _ in range(3):  # bursts of ten 2 s answers against a 0.4 s timeout: ten timeouts at once
            outcomes += await asyncio.gather(*(_status(a, "shared") for _ in range(10)))
        return outcomes

    a_outcomes, b_outcomes = asyncio.run(_while_b_is_served(gateway, tenant_a))
    refused = [o for o in b_outcomes if o != (200, "shared")]
    assert not refused, f"{len(refused)} of tenant B's {len(b_outcomes)} requests failed: {refused[:3]}"
    assert len(b_outcomes) >= 8
    assert [s for s, _ in a_outcomes] == [504] * 30  # A's own answers time out, as its policy says
    assert not _circuit_open(gateway, "shared")


def test_a_hung_deployment_still_opens_its_circuit(gateway: GatewayServer, simulator: Simulator) -> None:
    a = _client(gateway, "sk-tenant-a")

    async def hung_calls() -> list[tuple[int, str | None]]:
        # Five whole answers at once: their timeouts, which nothing explains, are held; the next call is
        # asked for as a stream and sends no first token either, which counts it and the five.
        whole = list(await asyncio.gather(*(_status(a, "stuck") for _ in range(5))))
        return [*whole, await _status(a, "stuck")]

    # Other deployments answering meanwhile do not excuse this one: it answers nobody.
    timed_out, b_outcomes = asyncio.run(_while_b_is_served(gateway, hung_calls))
    assert [s for s, _ in timed_out] == [504] * 6
    assert all(o == (200, "shared") for o in b_outcomes)
    assert _circuit_open(gateway, "stuck")
    before = int(simulator.stats()["sim-slow"]["requests"])
    refused = asyncio.run(_status(_client(gateway, "sk-tenant-a"), "stuck"))
    assert refused == (503, None)
    assert int(simulator.stats()["sim-slow"]["requests"]) == before  # the open circuit was not called


def test_long_answers_on_a_quiet_deployment_do_not_open_its_circuit_for_another(gateway: GatewayServer) -> None:
    """Nobody else calls `quiet`, so no other answer excuses A's timeouts: the first token of each, in
    time whatever the answer's length, shows the deployment answering."""
    a = _client(gateway, "sk-tenant-a")

    async def tenant_a() -> list[tuple[int, str | None]]:
        outcomes: list[tuple[int, str | None]] = []
        for _ in range(3):  # bursts of five 2 s answers against a 0.4 s timeout, nothing else in between
            outcomes += await asyncio.gather(*(_status(a, "quiet") for _ in range(5)))
        return outcomes

    assert [s for s, _ in asyncio.run(tenant_a())] == [504] * 15
    assert not _circuit_open(gateway, "quiet")
    assert asyncio.run(_status(_client(gateway, "sk-tenant-b"), "quiet", max_tokens=4)) == (200, "quiet")


def test_a_long_answer_that_takes_the_half_open_trial_does_not_keep_the_circuit_open(gateway: GatewayServer) -> None:
    health = gateway.app.state.services.upstreams.health["tried"]
    health.consecutive_failures = health.failure_threshold  # as after five failures, cooled down
    health.opened_at = time.monotonic() - health.cooldown_s - 0.01
    assert asyncio.run(_status(_client(gateway, "sk-tenant-a"), "tried")) == (504, None)  # the trial: too long
    assert asyncio.run(_status(_client(gateway, "sk-tenant-b"), "tried", max_tokens=4)) == (200, "tried")
    assert not _circuit_open(gateway, "tried")


def test_a_request_over_a_tokens_per_minute_limit_on_its_own_does_not_open_the_circuit(
        gateway: GatewayServer, simulator: Simulator) -> None:
    # OpenAI's 429 "Request too large ... on tokens per min": the request's doing, like a context-length
    # 400. Counted as a throttle, one tenant's oversized prompts opened the circuit for every tenant.
    async def scenario() -> tuple[list[tuple[int, str | None]], tuple[int, str | None]]:
        a, b = _client(gateway, "sk-tenant-a"), _client(gateway, "sk-tenant-b")
        before = simulator.stats()["sim-metered"]["requests"]
        huge = [{"role": "user", "content": "word " * 1500}]
        outcomes = []
        for _ in range(6):
            try:
                await a.chat.completions.create(model="metered", messages=huge)
                outcomes.append((200, None))
            except openai.APIStatusError as exc:
                outcomes.append((exc.status_code, exc.message))
        assert simulator.stats()["sim-metered"]["requests"] - before == 6  # not retried: no wait makes it fit
        return outcomes, await _status(b, "metered", max_tokens=4)

    outcomes, b_served = asyncio.run(scenario())
    assert all(status == 502 and "tokens-per-minute" in (message or "") for status, message in outcomes)
    assert b_served == (200, "metered")
    assert not _circuit_open(gateway, "metered")
