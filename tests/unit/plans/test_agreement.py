"""Every plan kind's estimator, worst case and runner agree on the calls it makes.

Each registered kind lists example plans below (a new kind without examples fails
`test_every_registered_kind_has_examples`). Each example runs against a fake backend in the world
where it makes every call it can (samples disagree, confidence is low, so cascades escalate to
their last step), and the deployments called, how often and with what `n` must be the kind's
`calls()` exactly. The same runs bound the prices: with the upstream generating `max_tokens`, the
run never costs more than `worst_case_cost` (what budgets reserve) nor uses more tokens than
`worst_case_tokens` (what tokens-per-minute windows hold); with it generating the expected
lengths, single calls and best-of cost what `estimate` predicted, and a cascade's estimate lies
between the run that accepts its first step and the run that escalates every step.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from gateway.config import DeploymentConfig
from gateway.executor import Deadline, Result, run
from gateway.executor.selectors import DEFAULT_JUDGE_PROMPT
from gateway.messages import count_messages
from gateway.plans import KINDS, BestOfN, Cascade, Catalog, Plan, Single
from gateway.plans.base import JUDGE_OUTPUT_TOKENS, expected_framing, output_tokens
from gateway.policy.estimate import estimate, worst_case_cost, worst_case_tokens
from gateway.providers.pricing import price_for
from gateway.signal import RouteSignal
from tests.support.fake_backend import answer, deployment, fake_upstreams

DEPLOYMENTS = [
    deployment("small", price={"input_per_mtok": 1.0, "output_per_mtok": 2.0}, expected_output_tokens=100,
               max_output_tokens=400),
    deployment("solo", price={"input_per_mtok": 3.0, "output_per_mtok": 5.0}, supports_n=False,
               expected_output_tokens=120, max_output_tokens=500),
    deployment("large", price={"input_per_mtok": 10.0, "output_per_mtok": 30.0}, expected_output_tokens=200,
               max_output_tokens=800),
    deployment("judge", price={"input_per_mtok": 7.0, "output_per_mtok": 11.0}, expected_output_tokens=50,
               max_output_tokens=300),
]
CATALOG = Catalog({d.name: d for d in DEPLOYMENTS}, {d.name: price_for(d, None) for d in DEPLOYMENTS})
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "Which planet is largest? Answer with a letter."}]}
PROMPT = 40  # what the signal says the prompt costs, in the world where the fake bills expected lengths
SIGNAL = RouteSignal(0.5, "qa", {d.name: 0.6 for d in DEPLOYMENTS}, PROMPT, {})

EXAMPLES: dict[type, list[Plan]] = {
    Single: [Single("small"), Single("large", ("small",))],
    BestOfN: [BestOfN(("small",) * 3), BestOfN(("solo",) * 3), BestOfN(("small", "solo", "large")),
              BestOfN(("small",) * 3, "judge", "judge"), BestOfN(("solo", "large"), "judge", "judge", "Be strict."),
              BestOfN(("small",) * 2, "vote", "judge")],  # a judge named but a vote selects: never called
    Cascade: [Cascade(("small", "large")), Cascade(("solo", "small", "large"), samples=2),
              Cascade(("small", "large"), "logprob", 0.9), Cascade(("small", "large"), "judge", 0.8, judge="judge")],
}
CASES = [pytest.param(plan, id=plan.label + (f":{plan.judge}" if getattr(plan, "judge", None) else ""))
         for plans in EXAMPLES.values() for plan in plans]


def _handler(unsure: bool, length: str) -> Callable[[DeploymentConfig, dict[str, Any]], dict[str, Any]]:
    """The upstream: unsure (every sample a different letter, low logprobs, a judge scoring 0) or sure,
    generating `length` tokens per answer: "max" (max_tokens, else the deployment's max_output_tokens,
    on the real prompt) or "expected" (the estimator's lengths, on the signal's prompt; a judge's prompt
    also carries the answers it reads, inside its instructions and labels)."""
    letters = itertools.cycle("ABCDEFGHIJ")

    def reply(d: DeploymentConfig, body: dict[str, Any]) -> dict[str, Any]:
        n = body.get("n") or 1
        shown = str(body["messages"])
        if d.name == "judge":
            out = answer(("0" if unsure else "10") if "Score" in shown else "1", model="judge")
        else:
            out = answer(*[f"The answer is {next(letters) if unsure else 'C'} (from {d.name})." for _ in range(n)],
                         model=d.name)
            if body.get("logprobs"):
                for choice in out["choices"]:
                    choice["logprobs"] = {"content": [{"token": "C", "logprob": -3.0 if unsure else 0.0}]}
        if length == "max":
            usage = (count_messages(body["messages"]), (body.get("max_tokens") or d.max_output_tokens) * n)
        elif d.name == "judge":
            answers = [shown.count(f"(from {e.name})") for e in DEPLOYMENTS]
            read = sum(output_tokens(e, None) * k for e, k in zip(DEPLOYMENTS, answers, strict=True))
            system = body["messages"][0]["content"]
            grades = "Score" in shown
            framing = expected_framing(sum(answers), None if grades or system == DEFAULT_JUDGE_PROMPT else system,
                                       grades)
            usage = (PROMPT + framing + read, JUDGE_OUTPUT_TOKENS)
        else:
            usage = (PROMPT, output_tokens(d, None) * n)
        out["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        return out
    return reply


def _run(plan: Plan, unsure: bool, length: str, choices: int = 1) -> tuple[Result, list[tuple[str, int]]]:
    up, backend = fake_upstreams(_handler(unsure, length), *DEPLOYMENTS)
    body = {**BODY, "n": choices} if choices > 1 else dict(BODY)
    result = asyncio.run(run(up, plan, body, None, Deadline.after(30)))
    return result, [(name, body.get("n") or 1) for name, body in backend.calls]


def test_every_registered_kind_has_examples() -> None:
    assert set(EXAMPLES) == set(KINDS)


@pytest.mark.parametrize("choices", [1, 2])
@pytest.mark.parametrize("plan", CASES)
def test_the_runner_makes_exactly_the_calls_the_kind_declares(plan: Plan, choices: int) -> None:
    """`choices`: the client's `n`, which calls that answer directly ask for."""
    result, made = _run(plan, unsure=True, length="max", choices=choices)
    declared = KINDS[type(plan)].calls(plan, CATALOG, choices)
    assert Counter(made) == Counter((c.deployment, c.outputs) for c in declared)
    assert Counter((c.deployment, c.role) for c in result.calls) == Counter((c.deployment, c.role) for c in declared)


@pytest.mark.parametrize("choices", [1, 2])
@pytest.mark.parametrize("plan", CASES)
def test_a_run_never_costs_more_than_its_worst_case(plan: Plan, choices: int) -> None:
    result, _ = _run(plan, unsure=True, length="max", choices=choices)
    prompt = count_messages(BODY["messages"])
    assert 0 < result.cost_usd <= worst_case_cost(plan, prompt, CATALOG, None, choices)
    assert 0 < result.usage.total_tokens <= worst_case_tokens(plan, prompt, CATALOG, None, choices)


@pytest.mark.parametrize("plan", [c for c in CASES if not isinstance(c.values[0], Cascade)])
def test_single_calls_and_best_of_cost_what_the_estimate_predicts(plan: Plan) -> None:
    result, _ = _run(plan, unsure=True, length="expected")
    assert result.cost_usd == pytest.approx(estimate(plan, SIGNAL, CATALOG, {}).cost_usd, rel=1e-12)


@pytest.mark.parametrize("plan", [c for c in CASES if isinstance(c.values[0], Cascade)])
def test_a_cascade_estimate_lies_between_accepting_its_first_step_and_escalating_every_step(plan: Plan) -> None:
    accepted, _ = _run(plan, unsure=False, length="expected")
    escalated, _ = _run(plan, unsure=True, length="expected")
    assert accepted.plan_label.endswith(":accepted") and escalated.plan_label.endswith(":escalated")
    predicted = estimate(plan, SIGNAL, CATALOG, {}).cost_usd
    assert accepted.cost_usd < predicted < escalated.cost_usd
