"""Hedged requests: with `hedge_after_ms`, a single call whose deployment is slow to start is also
sent to its fallback; the first to produce a token answers, the other is cancelled and billed for
what it produced. Real HTTP end to end: the openai SDK, the gateway, the simulated models."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.policy.loader import parse_policy
from tests.integration.test_metrics_endpoint import scrape, total
from tests.support.lab import BUDGET_KEY, budgeted_gateway, lab_gateway, simulator_of
from tests.support.processes import Simulator, wait_until

LAG_S = 1.0  # the slow deployment's extra delay before its first token
MODELS = [
    {"name": "sim-small", "ability": 0.0, "ttft_ms": 2, "tokens_per_s": 0, "output_tokens": 20},
    {"name": "sim-large", "ability": 4.0, "ttft_ms": 2, "tokens_per_s": 0, "output_tokens": 20},
    {"name": "sim-lag", "ability": 3.0, "ttft_ms": 2, "tokens_per_s": 0, "output_tokens": 20,
     "faults": [{"kind": "slow", "rate": 1.0, "delay_ms": LAG_S * 1000}]},
    {"name": "sim-quick", "ability": 3.0, "ttft_ms": 20, "tokens_per_s": 0, "output_tokens": 20},
    # slower to start than a hedge waits (150 ms), still within the loser's grace after the winner opens
    {"name": "sim-tardy", "ability": 3.0, "ttft_ms": 200, "tokens_per_s": 0, "output_tokens": 20},
    # quick to its first token, then its stream stops half-way
    {"name": "sim-drop", "ability": 3.0, "ttft_ms": 2, "tokens_per_s": 0, "output_tokens": 20,
     "faults": [{"kind": "drop_stream", "rate": 1.0}]},
    # quick to its first token, then seconds to its last
    {"name": "sim-slowpoke", "ability": 3.0, "ttft_ms": 2, "tokens_per_s": 8, "output_tokens": 40}]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with simulator_of(MODELS, tmp_path_factory.mktemp("hedge")) as sim:
        yield sim


@pytest.fixture(scope="module")
def base_url(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies = {name: {"description": "the laggy deployment, the quick one behind it",
                       "candidates": [{"single": "lag"}], "fallbacks": {"lag": ["quick"]},
                       "cache": {"enabled": False}, **hedge}
                for name, hedge in (("hedged", {"hedge_after_ms": 150}), ("unhedged", {}))}
    policies["hedged-drop"] = {"candidates": [{"single": "drop"}], "fallbacks": {"drop": ["quick"]},
                               "cache": {"enabled": False}, "hedge_after_ms": 150}
    policies["hedged-slowpoke"] = {"candidates": [{"single": "slowpoke"}], "fallbacks": {"slowpoke": ["quick"]},
                                   "cache": {"enabled": False}, "hedge_after_ms": 150}
    deployments = {"small": ("sim-small", "small"), "large": ("sim-large", "large"), "lag": ("sim-lag", "lab"),
                   "quick": ("sim-quick", "lab"), "drop": ("sim-drop", "lab"), "slowpoke": ("sim-slowpoke", "lab")}
    with lab_gateway(sim, tmp_path_factory.mktemp("hedge-gw"), policies, deployments) as url:
        yield url


def _ask(base_url: str, policy: str, **extra: Any) -> tuple[float, Any]:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=f"router/{policy}", messages=[{"role": "user", "content": "What is 2 + 2?"}], **extra)
    if extra.get("stream"):
        chunks = list(raw.parse())
        return time.perf_counter() - started, (raw.headers, chunks)
    return time.perf_counter() - started, (raw.headers, raw.parse())


def test_without_hedging_the_slow_deployment_answers_late(base_url: str) -> None:
    took, (headers, _) = _ask(base_url, "unhedged")
    assert headers["x-switchyard-model"] == "lag"
    assert took >= LAG_S


@pytest.mark.parametrize("stream", [False, True])
def test_a_hedge_answers_from_the_fallback_when_the_first_has_no_token_in_time(
        base_url: str, sim: Simulator, stream: bool) -> None:
    took, (headers, answer) = _ask(base_url, "hedged", stream=stream)
    assert took < LAG_S * 0.7
    assert headers["x-switchyard-model"] == "quick"
    assert headers["x-switchyard-plan"] == "single:lag>hedge:quick"
    text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream \
        else answer.choices[0].message.content
    assert text.startswith("The answer is")


def test_a_beaten_leg_is_not_counted_as_its_deployments_failure(base_url: str, sim: Simulator) -> None:
    """The leg a hedge cancels did not fail (its circuit does not count it): an alert on
    switchyard_upstream_failures_total must not fire for every hedge the slow deployment loses."""
    metrics_url = base_url.removesuffix("/v1")
    before = scrape(metrics_url)
    for stream in (False, True):
        _, (headers, _) = _ask(base_url, "hedged", stream=stream)
        assert headers["x-switchyard-plan"] == "single:lag>hedge:quick"
    after = scrape(metrics_url)
    assert total(after, "switchyard_upstream_failures_total", deployment="lag") \
        == total(before, "switchyard_upstream_failures_total", deployment="lag")
    # each leg is still timed, as one upstream call that ended without an answer
    assert total(after, "gen_ai_client_operation_duration_seconds_count", switchyard_deployment="lag") \
        == total(before, "gen_ai_client_operation_duration_seconds_count", switchyard_deployment="lag") + 2


def _calls(base_url: str) -> dict[str, int]:
    rows = httpx.get(base_url + "/spend", params={"group_by": "deployment"}, timeout=10).json()["data"]
    return {r["deployment"]: int(r["calls"]) for r in rows if r["calls"]}


def test_the_losing_leg_is_billed_for_what_it_served_after_the_answer(base_url: str, sim: Simulator) -> None:
    time.sleep(LAG_S + 0.5)  # the losing legs of the tests before answer late, and are billed then
    before = _calls(base_url)
    sim.reset()
    _, (headers, answer) = _ask(base_url, "hedged")
    expected = answer.usage.prompt_tokens * 1e-6 + answer.usage.completion_tokens * 2e-6
    assert float(headers["x-switchyard-cost-usd"]) == pytest.approx(expected)  # the answer's cost: the winner's
    # The slow leg is no longer waited for, but still read: its first chunk, when it comes, is what
    # the upstream served (and a provider bills), so the ledger bills it too, after the answer.
    wait_until(lambda: sim.stats()["sim-lag"]["served"] == 1, timeout_s=LAG_S * 3, what="the losing leg")
    assert sim.stats()["sim-lag"]["abandoned"] == 0 and sim.stats()["sim-quick"]["served"] == 1

    def billed() -> dict[str, int]:
        after = _calls(base_url)
        return {d: n - before.get(d, 0) for d, n in after.items() if n != before.get(d, 0)}
    wait_until(lambda: billed() == {"lag": 1, "quick": 1}, timeout_s=5, what="both legs billed")


def test_a_whole_answer_whose_winning_leg_breaks_off_is_answered_by_the_fallback(base_url: str) -> None:
    """The first leg to produce a token won the race, then its stream stopped half-way: nothing of it had
    reached the client, yet the answer was a 502 (unhedged, the fallback answered it). Both calls are
    billed, with the answer."""
    before = _calls(base_url)
    _, (headers, answer) = _ask(base_url, "hedged-drop")
    assert headers["x-switchyard-plan"] == "single:drop>fallback:quick"
    assert headers["x-switchyard-model"] == "quick"
    assert answer.choices[0].message.content.startswith("The answer is")
    after = _calls(base_url)
    assert (after["drop"] - before.get("drop", 0), after["quick"] - before.get("quick", 0)) == (1, 1)
    expected = answer.usage.prompt_tokens * 1e-6 + answer.usage.completion_tokens * 2e-6
    assert float(headers["x-switchyard-cost-usd"]) == pytest.approx(expected)  # both calls, as in its usage


def test_the_deadline_bounds_a_hedged_whole_answer_to_its_end(base_url: str) -> None:
    """A whole answer reaches its client at its end: the leg that won with its first token was read on for
    as long as its chunks kept coming, each within the deployment's timeout_s, far past the deadline."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
    started = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="router/hedged-slowpoke", extra_headers={"x-switchyard-timeout-ms": "800"},
                                       messages=[{"role": "user", "content": "Write a long story."}])
    took = time.perf_counter() - started
    assert failed.value.status_code == 504, failed.value.message
    assert "deadline of 0.8 s" in failed.value.message
    assert took < 1.5


def test_a_hedged_request_holds_the_budget_both_legs_may_spend(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both legs of a hedge may be billed (the test above), so a budget must hold for both. One leg's
    # worst case here is (prompt + 20 output tokens at $2/M) ~ $0.00005: a budget of $0.00008 pays for
    # one leg, not two. Before, the request was admitted on one leg's hold and could spend both.
    # No retries: a timed-out attempt and its retry may both be billed (`executor.drain`), which a
    # budget holds for as well; here only the hedge may bill a second call.
    policy = {"candidates": [{"single": "lag"}], "fallbacks": {"lag": ["quick"]}, "hedge_after_ms": 150}
    deployments = {"lag": ("sim-lag", {"max_retries": 0}), "quick": ("sim-quick", {"max_retries": 0})}
    with budgeted_gateway(sim, tmp_path, monkeypatch, 0.00008, policy, deployments) as gw:
        with pytest.raises(openai.RateLimitError) as refused:
            gw.client.chat.completions.create(model="router/thrifty", max_tokens=20,
                                              messages=[{"role": "user", "content": "What is 2 + 2?"}])
        assert refused.value.code == "budget_exceeded"
        assert sim.stats()["sim-lag"]["requests"] == sim.stats()["sim-quick"]["requests"] == 0
        # Pinned to one deployment, nothing hedges: the same request fits the same budget.
        answer = gw.client.chat.completions.create(model="quick", max_tokens=20,
                                                   messages=[{"role": "user", "content": "What is 2 + 2?"}])
        assert answer.choices[0].message.content


def test_a_cost_cap_bounds_both_legs_of_a_hedge(sim: Simulator, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Both legs of a hedge may be billed, so a cost cap bounds them together, as a budget holds them.
    # Under a cap that pays for one leg at max_tokens 20 the request used to hedge anyway and was
    # billed ~1.9 times its cap; now the hedge is turned off, and the answer keeps its max_tokens.
    # A cap that pays for both legs keeps the hedge.
    policy = {"candidates": [{"single": "lag"}], "fallbacks": {"lag": ["quick"]}, "hedge_after_ms": 150}
    deployments = {"lag": ("sim-lag", {"max_retries": 0}), "quick": ("sim-quick", {"max_retries": 0})}
    question = [{"role": "user", "content": "What is 2 + 2?"}]
    with budgeted_gateway(sim, tmp_path, monkeypatch, None, policy, deployments) as gw:
        explained = httpx.post(gw.base_url + "/v1/route", json={"model": "router/thrifty", "messages": question},
                               headers={"Authorization": f"Bearer {BUDGET_KEY}"}, timeout=10).json()
        one_leg = (explained["signal"]["prompt_tokens_estimate"] * 1 + 20 * 2) * 1e-6  # $1/M in, $2/M out
        for cap, plan, calls in ((one_leg * 1.01, "single:lag", 1), (one_leg * 2.02, "single:lag>hedge:quick", 2)):
            before = gw.spent()
            answer = gw.client.chat.completions.with_raw_response.create(
                model="router/thrifty", messages=question, max_tokens=20,  # type: ignore[arg-type]
                extra_headers={"x-switchyard-max-cost-usd": f"{cap:.10f}"})
            assert answer.headers["x-switchyard-plan"] == plan
            assert answer.parse().usage.completion_tokens == 20  # not shortened
            wait_until(lambda c=calls: sim.stats()["sim-lag"]["served"] == c, timeout_s=LAG_S * 3, what="the slow leg")
            wait_until(lambda c=calls: gw.calls() == c * (c + 1) // 2, timeout_s=5, what="every leg billed")
            assert gw.spent() - before <= cap


def test_a_hedged_answer_says_what_both_legs_cost_streamed_or_whole(sim: Simulator, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The leg that lost had opened (its first token came within the grace), so the request is billed for
    # both. A whole answer's usage and cost header said so; a stream's usage chunk left the loser out.
    policy = {"candidates": [{"single": "tardy"}], "fallbacks": {"tardy": ["quick"]}, "hedge_after_ms": 150}
    deployments = {"tardy": ("sim-tardy", {"max_retries": 0}), "quick": ("sim-quick", {"max_retries": 0})}
    question = [{"role": "user", "content": "What is 2 + 2?"}]
    with budgeted_gateway(sim, tmp_path, monkeypatch, None, policy, deployments) as gw:
        one = gw.client.chat.completions.create(model="quick", messages=question).usage
        assert one is not None
        prompts = []
        for stream in (False, True):
            before, calls = gw.spent(), gw.calls()
            raw = gw.client.chat.completions.with_raw_response.create(
                model="router/thrifty", messages=question, stream=stream,  # type: ignore[call-overload]
                **({"stream_options": {"include_usage": True}} if stream else {}))
            assert raw.headers["x-switchyard-plan"] == "single:tardy>hedge:quick"
            if stream:
                last = list(raw.parse())[-1]
                usage, cost = last.usage, float(last.model_extra["switchyard"]["cost_usd"])
            else:
                usage, cost = raw.parse().usage, float(raw.headers["x-switchyard-cost-usd"])
            wait_until(lambda c=calls: gw.calls() == c + 2, timeout_s=5, what="both legs billed")
            prompts.append(usage.prompt_tokens)  # both prompts (the loser's counted here: it sent no usage)
            assert cost == pytest.approx(gw.spent() - before)
        assert prompts[0] == prompts[1] > one.prompt_tokens


def test_hedge_after_ms_is_validated(tmp_path: Path) -> None:
    base = {"candidates": [{"single": "small"}], "fallbacks": {"small": ["large"]}}
    for bad, message in (({"hedge_after_ms": 0}, "greater than 0"),
                         ({"hedge_after_ms": 5000, "timeout_s": 2}, "under timeout_s")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**base, **bad}))
        with pytest.raises(Exception, match=message):
            parse_policy(path)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**base, "hedge_after_ms": 250}))
    assert parse_policy(good).hedge_after_ms == 250


def test_the_gateway_is_reachable(base_url: str) -> None:
    assert httpx.get(base_url.removesuffix("/v1") + "/healthz", timeout=5).status_code == 200
