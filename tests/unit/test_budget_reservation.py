"""Budgets hold each request's worst-case cost before it runs and settle the real cost after it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth import Authenticator, Need, hash_key
from gateway.config import TenantConfig, parse_config
from gateway.errors import BudgetExceeded, RateLimited
from gateway.plans import BestOfN, Cascade, Single
from gateway.policy import Catalog, worst_case_billed, worst_case_cost
from gateway.providers.pricing import prices_for
from gateway.state import MemoryStore, holds_key, spend_key


def _auth(**tenant: object) -> Authenticator:
    config = TenantConfig.model_validate({"name": "t", "api_key_sha256": hash_key("sk-1"), **tenant})
    return Authenticator([config], MemoryStore())


def _catalog() -> Catalog:
    def dep(name: str, price: float, **kw: object) -> dict[str, object]:
        return {"name": name, "model": f"openai/{name}", "api_base": "http://127.0.0.1:9/v1",
                "price": {"input_per_mtok": price, "output_per_mtok": 2 * price}, **kw}

    config = parse_config({"deployments": [dep("small", 1.0, max_output_tokens=100),
                                           dep("large", 10.0, max_output_tokens=200, supports_n=False)]}, "test")
    deployments = {d.name: d for d in config.deployments}
    return Catalog(deployments, prices_for(config.deployments))


def test_concurrent_requests_cannot_reserve_more_than_the_budget() -> None:
    async def scenario() -> list[bool]:
        auth = _auth(budget_usd=0.01)
        tenant = auth.identify("Bearer sk-1")

        async def one() -> bool:
            try:
                await auth.admit(tenant, None, Need(0.0025))
            except BudgetExceeded:
                return False
            return True

        return await asyncio.gather(*(one() for _ in range(50)))

    assert sum(asyncio.run(scenario())) == 4


def test_a_request_whose_own_worst_case_exceeds_what_is_left_is_refused() -> None:
    async def scenario() -> None:
        auth = _auth(budget_usd=0.01)
        tenant = auth.identify("Bearer sk-1")
        held = await auth.admit(tenant, None, Need(0.008))
        with pytest.raises(BudgetExceeded, match="may cost up to"):
            await auth.admit(tenant, None, Need(0.003))
        await held.settle(0.001)  # the real cost frees the rest of the hold
        await auth.admit(tenant, None, Need(0.003))

    asyncio.run(scenario())


def test_settling_replaces_the_hold_with_the_real_cost_exactly_once() -> None:
    async def scenario() -> None:
        auth = _auth(budget_usd=1.0)
        tenant = auth.identify("Bearer sk-1")
        held = await auth.admit(tenant, None, Need(0.5))
        await held.settle(0.2)
        await held.settle(0.2)
        await held.release()
        assert await auth.store.get_float(spend_key("t")) == pytest.approx(0.2)
        store = auth.store
        assert isinstance(store, MemoryStore) and not store._holds[holds_key("t")]

    asyncio.run(scenario())


def test_a_failed_request_releases_its_hold_without_spending() -> None:
    async def scenario() -> None:
        auth = _auth(budget_usd=0.01)
        tenant = auth.identify("Bearer sk-1")
        held = await auth.admit(tenant, None, Need(0.01))
        with pytest.raises(BudgetExceeded):
            await auth.admit(tenant, None, Need(0.001))
        await held.release()
        await auth.admit(tenant, None, Need(0.01))
        assert await auth.store.get_float(spend_key("t")) == 0.0

    asyncio.run(scenario())


def test_a_crashed_requests_hold_expires() -> None:
    async def scenario() -> None:
        auth = _auth(budget_usd=0.01)
        tenant = auth.identify("Bearer sk-1")
        await auth.admit(tenant, None, Need(0.01, ttl_s=0.05))  # never settled, as if its replica died
        with pytest.raises(BudgetExceeded):
            await auth.admit(tenant, None, Need(0.001))
        await asyncio.sleep(0.06)
        await auth.admit(tenant, None, Need(0.001))

    asyncio.run(scenario())


def test_the_rate_window_is_counted_with_the_reservation_and_refusal_holds_nothing() -> None:
    async def scenario() -> None:
        auth = _auth(budget_usd=1.0, requests_per_minute=1)
        tenant = auth.identify("Bearer sk-1")
        await auth.admit(tenant, None, Need(0.1))
        with pytest.raises(RateLimited):
            await auth.admit(tenant, None, Need(0.1))
        store = auth.store
        assert isinstance(store, MemoryStore) and len(store._holds[holds_key("t")]) == 1

    asyncio.run(scenario())


def test_a_spent_budget_refuses_even_a_request_that_costs_nothing() -> None:
    async def scenario() -> None:
        auth = _auth(budget_usd=0.01)
        tenant = auth.identify("Bearer sk-1")
        await (await auth.admit(tenant, None, Need(0.01))).settle(0.01)
        with pytest.raises(BudgetExceeded):
            await auth.admit(tenant, None, Need(0.0))

    asyncio.run(scenario())


def test_worst_case_cost_counts_every_call_a_plan_may_make() -> None:
    cat = _catalog()
    small, large = cat.prices["small"], cat.prices["large"]
    # single: the dearest of the fallback chain, at the client's max_tokens or the deployment's limit
    assert worst_case_cost(Single("small", ("large",)), 10, cat, 50) == pytest.approx(large.estimate(10, 50))
    assert worst_case_cost(Single("small"), 10, cat, None) == pytest.approx(small.estimate(10, 100))
    assert worst_case_cost(Single("small"), 10, cat, None, choices=3) == pytest.approx(small.estimate(10, 300))
    # best-of on one deployment with n: one prompt, n outputs; the judge reads every sample, each
    # under a label of its own
    judged = BestOfN(("small",) * 3, selector="judge", judge="large")
    expected = small.estimate(10, 150) + large.estimate(10 + 96 + 3 * 8 + 150, 8)
    assert worst_case_cost(judged, 10, cat, 50) == pytest.approx(expected)
    # without n support: one call per sample
    assert worst_case_cost(BestOfN(("large",) * 2), 10, cat, 50) == pytest.approx(2 * large.estimate(10, 50))
    # cascade: every step's samples and the final step
    cascade = Cascade(("small", "large"), samples=3)
    assert worst_case_cost(cascade, 10, cat, 50) == pytest.approx(small.estimate(10, 150) + large.estimate(10, 50))


def test_what_a_budget_holds_covers_every_call_that_may_be_billed() -> None:
    cat = _catalog()  # both deployments: 2 retries (the default), timeout_s 30
    small, large = cat.prices["small"], cat.prices["large"]
    one, chain = Single("small"), Single("small", ("large",))
    # A deadline within the timeout: no attempt can time out and be followed by another, so what
    # one run of the plan costs (a single: its dearest deployment).
    assert worst_case_billed(one, 10, cat, 50, within_s=30) == pytest.approx(worst_case_cost(one, 10, cat, 50))
    assert worst_case_billed(chain, 10, cat, 50, within_s=20) == pytest.approx(large.estimate(10, 50))
    # A deadline of 60 s: one attempt may time out (billed when it answers late) before another
    # answers: the two dearest attempts of the chain (large's first try and its retry).
    assert worst_case_billed(chain, 10, cat, 50, within_s=60) == pytest.approx(2 * large.estimate(10, 50))
    # Without retries one deployment makes one attempt, whatever the deadline.
    lone = Catalog({"small": cat.deployments["small"].model_copy(update={"max_retries": 0})}, cat.prices)
    assert worst_case_billed(one, 10, lone, 50, within_s=600) == pytest.approx(small.estimate(10, 50))
    # Hedged: both legs may be billed.
    assert worst_case_billed(chain, 10, cat, 50, within_s=20, hedged=True) == pytest.approx(2 * large.estimate(10, 50))
    # A resumable stream: the cut call, and a continuation on a fallback sent the prompt plus up to
    # the whole output; only with a fallback to resume on.
    assert worst_case_billed(chain, 10, cat, 50, within_s=20, resumes=True) == pytest.approx(
        large.estimate(60, 50) + large.estimate(60, 50))
    assert worst_case_billed(one, 10, cat, 50, within_s=20, resumes=True) == pytest.approx(small.estimate(10, 50))
    # Other plans: each call may be billed once per attempt that fits the deadline.
    cascade = Cascade(("small", "large"), samples=3)
    once = worst_case_cost(cascade, 10, cat, 50)
    assert worst_case_billed(cascade, 10, cat, 50, within_s=60) == pytest.approx(2 * once)
    assert worst_case_billed(cascade, 10, cat, 50, within_s=30) == pytest.approx(once)


def test_a_refusal_only_requests_in_flight_cause_says_to_retry_soon() -> None:
    """Refused for what requests in flight hold, a request fits once they settle (they usually cost less
    than their worst case): its 429 said `x-should-retry: false` and a Retry-After at the end of the
    budget's period, as if the budget were spent. Only a refusal by what is spent is final."""
    from gateway.api.errors import error_response

    async def scenario() -> None:
        auth = _auth(budget={"usd": 0.01, "period": "day"})
        tenant = auth.identify("Bearer sk-1")
        held = await auth.admit(tenant, None, Need(0.008))
        with pytest.raises(BudgetExceeded, match="in flight") as busy:
            await auth.admit(tenant, None, Need(0.003))
        answer = error_response(busy.value)
        assert "x-should-retry" not in answer.headers and answer.headers["retry-after"] == "1"
        assert busy.value.code == "budget_exceeded"
        await held.settle(0.009)
        with pytest.raises(BudgetExceeded) as spent:
            await auth.admit(tenant, None, Need(0.003))
        answer = error_response(spent.value)
        assert answer.headers["x-should-retry"] == "false" and int(answer.headers["retry-after"]) > 1

    asyncio.run(scenario())
