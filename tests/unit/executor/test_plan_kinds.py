"""What each plan kind's runner answers and reports, against the fake backend (no sockets)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from gateway.config import DeploymentConfig
from gateway.executor import Deadline, Result, run
from gateway.plans import BestOfN, Cascade, Plan, Single
from gateway.providers.base import ProviderFailure
from tests.support.fake_backend import answer, deployment, fake_upstreams

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "Which option? Reply with a letter."}]}
DEPLOYMENTS = (deployment("small"), deployment("large"), deployment("judge"))


def _run(plan: Plan, handler: Any) -> tuple[Result, Any]:
    up, backend = fake_upstreams(handler, *DEPLOYMENTS)
    return asyncio.run(run(up, plan, dict(BODY), None, Deadline.after(10))), backend


def _letters(*letters: str) -> Any:
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        if d.name == "large":
            return answer("The answer is D.", model="large")
        return answer(*[f"The answer is {x}." for x in letters[: body.get("n") or 1]], model=d.name)
    return handler


def test_single_answers_from_its_deployment_and_labels_a_fallback() -> None:
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        return ProviderFailure("down", status=503, retryable=False) if d.name == "small" else answer(model=d.name)
    result, _ = _run(Single("small", ("large",)), handler)
    assert (result.deployment, result.plan_label) == ("large", "single:small>fallback:large")


def test_best_of_returns_the_majority_answer_with_its_agreement() -> None:
    result, backend = _run(BestOfN(("small",) * 3), _letters("B", "C", "B"))
    assert result.body["choices"][0]["message"]["content"] == "The answer is B."
    assert result.evidence["agreement"] == round(2 / 3, 4) and result.evidence["samples"] == 3
    assert backend.called("small") == 1  # one call with n=3


def test_best_of_sums_the_usage_of_every_call_into_the_answer() -> None:
    result, _ = _run(BestOfN(("small",) * 3, "judge", "judge"), _letters("B", "C", "B"))
    assert [c.role for c in result.calls] == ["sample", "judge"]
    assert result.body["usage"]["completion_tokens"] == sum(c.usage.completion_tokens for c in result.calls)
    assert result.cost_usd == sum(c.cost_usd for c in result.calls)


def test_a_cascade_accepts_its_first_step_when_the_samples_agree() -> None:
    result, backend = _run(Cascade(("small", "large"), threshold=0.6), _letters("A", "A", "B"))
    assert (result.deployment, result.plan_label) == ("small", "cascade:small>large:accepted")
    assert backend.called("large") == 0


def test_a_cascade_escalates_when_agreement_is_under_the_threshold() -> None:
    result, backend = _run(Cascade(("small", "large"), threshold=0.9), _letters("A", "A", "B"))
    assert (result.deployment, result.plan_label) == ("large", "cascade:small>large:escalated")
    assert (backend.called("small"), backend.called("large")) == (1, 1)
    assert result.body["choices"][0]["message"]["content"] == "The answer is D."
    step = result.evidence["cascade"][0]
    assert step["confidence"] == round(2 / 3, 4) and "escalated" in step
    assert [c.role for c in result.calls] == ["sample", "escalation"]


def test_a_logprob_cascade_accepts_a_confident_answer_and_escalates_an_unsure_one() -> None:
    def handler(logprob: float) -> Any:
        def reply(d: DeploymentConfig, body: dict[str, Any]) -> Any:
            out = answer("The answer is A.", model=d.name)
            out["choices"][0]["logprobs"] = {"content": [{"token": "A", "logprob": logprob}]}
            return out
        return reply
    sure, _ = _run(Cascade(("small", "large"), "logprob", 0.5), handler(-0.1))
    unsure, _ = _run(Cascade(("small", "large"), "logprob", 0.5), handler(-2.0))
    assert sure.plan_label.endswith(":accepted") and unsure.plan_label.endswith(":escalated")
    # the evidence says the confidence it compared with the threshold (the signal's name took its place)
    assert sure.evidence["cascade"][0]["confidence"] == round(math.exp(-0.1), 4)
    assert unsure.evidence["cascade"][0]["confidence"] == round(math.exp(-2.0), 4)
    assert sure.evidence["cascade"][0]["signal"] == "logprob"


def test_a_judged_cascade_escalates_on_a_low_score_and_a_failed_judge() -> None:
    def handler(score: str | None) -> Any:
        def reply(d: DeploymentConfig, body: dict[str, Any]) -> Any:
            if d.name == "judge":
                return answer(score) if score is not None else ProviderFailure("down", status=503, retryable=False)
            return answer("The answer is A.", model=d.name)
        return reply
    plan = Cascade(("small", "large"), "judge", 0.7, judge="judge")
    high, _ = _run(plan, handler("9"))
    low, _ = _run(plan, handler("2"))
    gone, _ = _run(plan, handler(None))
    assert high.plan_label.endswith(":accepted") and high.evidence["cascade"][0]["score"] == 0.9
    assert high.evidence["cascade"][0]["confidence"] == 0.9 and low.evidence["cascade"][0]["confidence"] == 0.2
    assert low.plan_label.endswith(":escalated") and gone.plan_label.endswith(":escalated")


def test_a_judged_cascade_shows_its_judge_the_tool_calls_it_grades() -> None:
    """A step that answers with a tool call has no text: the judge was shown an empty answer, graded it
    unsure, and every tool call escalated, whatever the step had called."""
    graded: list[str] = []

    def reply(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        if d.name == "judge":
            graded.append(body["messages"][-1]["content"])
            return answer("9" if '"name": "lookup"' in graded[-1] or '"name":"lookup"' in graded[-1] else "1")
        out = answer("", model=d.name)
        out["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "A"}'}}]}
        out["choices"][0]["finish_reason"] = "tool_calls"
        return out

    result, backend = _run(Cascade(("small", "large"), "judge", 0.7, judge="judge"), reply)
    assert "lookup" in graded[0]
    assert result.plan_label.endswith(":accepted") and backend.called("large") == 0


def test_a_logprob_cascade_answers_log_probabilities_only_to_a_client_that_asked_for_them() -> None:
    def reply(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        out = answer("The answer is A.", model=d.name)
        if body.get("logprobs"):
            out["choices"][0]["logprobs"] = {"content": [{"token": "A", "logprob": -0.1}]}
        return out

    plan = Cascade(("small", "large"), "logprob", 0.5)
    up, _ = fake_upstreams(reply, *DEPLOYMENTS)
    unasked = asyncio.run(run(up, plan, dict(BODY), None, Deadline.after(10)))
    asked = asyncio.run(run(up, plan, {**BODY, "logprobs": True}, None, Deadline.after(10)))
    assert unasked.plan_label.endswith(":accepted") and asked.plan_label.endswith(":accepted")
    assert unasked.body["choices"][0]["logprobs"] is None
    assert asked.body["choices"][0]["logprobs"]["content"][0]["token"] == "A"
