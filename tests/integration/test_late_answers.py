"""Answers that arrive as the gateway gives up on them are billed: over real HTTP, a deployment whose
answers come right around its timeout, a healthy fallback, and the simulator's own count of what it
served against the spend ledger's calls.

Before, the gateway closed the connection at its timeout: an answer sent just before was counted
served by the upstream (a provider bills it) and never reached the ledger. The window is a few
milliseconds on a quiet machine and grows with the gateway's event-loop lag under load.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.lab import budgeted_gateway, lab_gateway, simulator_of
from tests.support.processes import Simulator, wait_until

TIMEOUT_S = 0.3
# Answers due from just before to just after the timeout: every one of them is sent while the
# gateway is (or was, a moment ago) waiting for it.
DELAYS_MS = (270, 285, 295, 300, 305, 315, 330)
QUICK = {"ability": 2.0, "ttft_ms": 2, "tokens_per_s": 0, "output_tokens": 10}
MODELS = [
    {"name": "sim-small", **QUICK}, {"name": "sim-large", **QUICK}, {"name": "sim-next", **QUICK},
    {"name": "sim-edge", **QUICK, "faults": [{"kind": "slow", "rate": 1 / len(DELAYS_MS), "delay_ms": d}
                                             for d in DELAYS_MS]},
    # Always late: it answers 2 × TIMEOUT_S after the gateway gave up and moved on to the fallback.
    {"name": "sim-late", **QUICK, "faults": [{"kind": "slow", "rate": 1.0, "delay_ms": 3000 * TIMEOUT_S}]}]


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


def test_a_budget_holds_for_an_attempt_given_up_on_and_the_fallback_that_answered(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first deployment always times out and answers late, billed, on top of its fallback's answer.
    # One call's worst case here is (prompt + 10 output tokens at $2/M) ~ $0.00003: a budget of
    # $0.00004 pays for one call, not for both. Before, the request was admitted on one call's hold
    # and spent both (~$0.00005).
    budget = 0.00004
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
