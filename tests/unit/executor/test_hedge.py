"""Hedging at the provider seam: who answers, and which legs are billed."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.executor import Deadline
from gateway.executor.hedge import HEDGE, run_hedged
from gateway.plans import Single
from tests.support.fake_backend import Delay, answer, deployment, fake_upstreams

BODY = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}
PLAN = Single("slow", ("quick",))


def _upstreams(slow_s: float, quick_s: float) -> Any:
    def handler(d: Any, body: dict[str, Any]) -> Delay:
        return Delay(slow_s if d.name == "slow" else quick_s, answer("The answer is 42.", model=d.name))
    return fake_upstreams(handler, deployment("slow"), deployment("quick"))


def test_a_first_leg_that_answers_in_time_is_never_hedged() -> None:
    up, backend = _upstreams(0.01, 0.01)
    result = asyncio.run(run_hedged(up, PLAN, BODY, None, Deadline.after(5), 0.2))
    assert result.deployment == "slow" and backend.called("quick") == 0
    assert [c.deployment for c in result.calls] == ["slow"]


def test_the_hedge_wins_and_the_cut_first_leg_costs_nothing() -> None:
    up, backend = _upstreams(2.0, 0.01)
    result = asyncio.run(run_hedged(up, PLAN, BODY, None, Deadline.after(5), 0.05))
    assert result.deployment == "quick" and result.plan_label == "single:slow>hedge:quick"
    assert backend.called("slow") == 1
    assert [c.deployment for c in result.calls] == ["quick"]  # cancelled before its first token


def test_a_losing_leg_that_opened_within_the_grace_is_billed_as_a_hedge() -> None:
    # slow opens at 0.20 s and wins; quick, sent at 0.05 s, opens at 0.30 s: inside the grace period.
    up, _ = _upstreams(0.20, 0.25)
    result = asyncio.run(run_hedged(up, PLAN, BODY, None, Deadline.after(5), 0.05))
    assert result.deployment == "slow"
    assert [(c.deployment, c.role) for c in result.calls] == [("slow", "answer"), ("quick", HEDGE)]
    assert result.calls[1].cost_usd > 0 and result.evidence == {"hedged": ["quick"]}
