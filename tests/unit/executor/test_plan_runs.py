"""Best-of-n reports the deployment whose sample was chosen."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.executor import Deadline, run
from gateway.plans import BestOfN
from tests.support.fake_backend import answer, deployment, fake_upstreams

BODY = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}


def _upstreams_with_judge(pick: str) -> Any:
    def handler(d: Any, body: dict[str, Any]) -> dict[str, Any]:
        if d.name == "judge":
            return answer(pick, model="judge")
        if d.name == "other":
            return answer("The answer is 41.", model="other")
        return answer(*["The answer is 42.", "The answer is 40.", "The answer is 43."][: body.get("n") or 1],
                      model=d.name)
    return fake_upstreams(handler, deployment("small"), deployment("other"), deployment("judge"))


def test_best_of_with_a_judge_over_one_deployment_reports_the_sampler_not_the_judge() -> None:
    up, backend = _upstreams_with_judge("2")
    plan = BestOfN(samplers=("small",) * 3, selector="judge", judge="judge")
    result = asyncio.run(run(up, plan, BODY, None, Deadline.after(10)))
    assert backend.called("small") == 1  # one call with n=3
    assert result.deployment == "small"
    assert result.body["choices"][0]["message"]["content"] == "The answer is 40."
    assert [c.role for c in result.calls] == ["sample", "judge"]


def test_best_of_with_a_judge_over_several_deployments_reports_the_chosen_sampler() -> None:
    up, _ = _upstreams_with_judge("2")
    plan = BestOfN(samplers=("small", "other"), selector="judge", judge="judge")
    result = asyncio.run(run(up, plan, BODY, None, Deadline.after(10)))
    assert result.deployment == "other"
    assert result.body["model"] == "other"


def test_a_vote_over_prose_names_the_answers_by_digest_never_by_their_text() -> None:
    """The evidence goes to the x-switchyard-evidence header and to the request's span (a trace backend),
    whatever the tenant's log_prompts says: an answer no extractor reads used to be there in full."""
    prose = ["Dear team, the layoffs planned for March will affect the Berlin office first, then Lyon.",
             "Dear team, the layoffs planned for March will affect the Berlin office first, then Lyon.",
             "I cannot help with drafting that memo without more details about the restructuring plan."]

    def handler(d: Any, body: dict[str, Any]) -> dict[str, Any]:
        return answer(*prose[: body.get("n") or 1], model=d.name)

    up, _ = fake_upstreams(handler, deployment("small"))
    result = asyncio.run(run(up, BestOfN(samplers=("small",) * 3, selector="vote"), BODY, None, Deadline.after(10)))
    assert result.body["choices"][0]["message"]["content"] == prose[0]  # the majority answer is still chosen
    evidence = orjson.dumps(result.evidence).decode()
    assert "layoffs" not in evidence and "restructuring" not in evidence
    assert sorted(result.evidence["votes"].values()) == [1, 2]  # two groups, told apart by digest


def test_a_judges_reply_is_named_by_digest_in_the_evidence_never_by_its_text() -> None:
    """A judge's reply may quote the answers it judged: the evidence held its first 80 characters, in the header
    and on the span, while a vote's answers there are named by digest."""
    for pick in ("Candidate 2 is best: the layoffs planned for March hit Berlin first.",
                 "Both drafts mention the layoffs planned for March; neither is better."):
        up, _ = _upstreams_with_judge(pick)
        plan = BestOfN(samplers=("small",) * 3, selector="judge", judge="judge")
        result = asyncio.run(run(up, plan, BODY, None, Deadline.after(10)))
        evidence = orjson.dumps(result.evidence).decode()
        assert "layoffs" not in evidence and "Berlin" not in evidence, evidence
