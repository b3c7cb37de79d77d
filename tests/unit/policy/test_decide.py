"""The decision is a pure function: signal + policy + live state + request limits → plan with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DeploymentConfig, embedded_config
from gateway.errors import ConstraintUnsatisfiable
from gateway.plans import Single
from gateway.plans.single import for_choices
from gateway.policy import Catalog, Overrides, decide, load_policy_file
from gateway.providers.health import LiveView
from gateway.providers.pricing import prices_for
from gateway.signal import RouteSignal

CONFIG = embedded_config("http://127.0.0.1:9/v1")
CATALOG = Catalog({d.name: d for d in CONFIG.deployments}, prices_for(CONFIG.deployments))


def _policy(tmp_path: Path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_policy_file(path, CONFIG.deployments)


def _signal(q_small: float, q_large: float, tokens: int = 200) -> RouteSignal:
    return RouteSignal(0.5, "test", {"small": q_small, "large": q_large}, tokens, {})


TWO_TIERS = "candidates:\n  - single: small\n  - single: large\nobjective: {value_usd: 0.002}\n"


def test_pays_for_the_large_tier_only_when_the_gain_is_worth_it(tmp_path: Path) -> None:
    policy = _policy(tmp_path, TWO_TIERS)
    assert decide(policy, _signal(0.80, 0.82), CATALOG, LiveView()).plan.label == "single:small"
    assert decide(policy, _signal(0.20, 0.90), CATALOG, LiveView()).plan.label == "single:large"


def test_higher_willingness_to_pay_buys_quality(tmp_path: Path) -> None:
    cheap = _policy(tmp_path, TWO_TIERS.replace("0.002", "0.00001"))
    assert decide(cheap, _signal(0.2, 0.9), CATALOG, LiveView()).plan.label == "single:small"


def test_max_cost_header_tightens_the_policy(tmp_path: Path) -> None:
    policy = _policy(tmp_path, TWO_TIERS)
    d = decide(policy, _signal(0.2, 0.9), CATALOG, LiveView(), Overrides(max_cost_usd=0.0001))
    assert d.plan.label == "single:small"
    rejected = {c.plan.label: c.rejected_by for c in d.candidates}
    assert rejected["single:large"].startswith("max_cost_usd")


def test_latency_header_tightens_the_policy(tmp_path: Path) -> None:
    policy = _policy(tmp_path, TWO_TIERS)
    d = decide(policy, _signal(0.2, 0.9), CATALOG, LiveView(), Overrides(latency_slo_ms=500))
    assert d.plan.label == "single:small"


def test_a_header_cannot_loosen_the_policy(tmp_path: Path) -> None:
    policy = _policy(tmp_path, TWO_TIERS + "constraints: {max_cost_usd: 0.0001}\n")
    d = decide(policy, _signal(0.2, 0.9), CATALOG, LiveView(), Overrides(max_cost_usd=10))
    assert d.plan.label == "single:small"


def test_an_impossible_constraint_is_a_clear_error(tmp_path: Path) -> None:
    policy = _policy(tmp_path, TWO_TIERS + "constraints: {latency_slo_ms: 1}\n")
    with pytest.raises(ConstraintUnsatisfiable, match="single:small: latency_slo_ms") as info:
        decide(policy, _signal(0.2, 0.9), CATALOG, LiveView())
    assert info.value.status == 422


def test_an_open_circuit_removes_a_candidate(tmp_path: Path) -> None:
    policy = _policy(tmp_path, TWO_TIERS)
    d = decide(policy, _signal(0.2, 0.9), CATALOG, LiveView(open_circuits=frozenset({"large"})))
    assert d.plan.label == "single:small"


def test_allowed_deployments_accepts_tiers(tmp_path: Path) -> None:
    policy = _policy(tmp_path, TWO_TIERS + "constraints: {allowed_deployments: [small]}\n")
    d = decide(policy, _signal(0.2, 0.9), CATALOG, LiveView())
    assert d.plan.label == "single:small"
    assert {c.plan.label: c.rejected_by for c in d.candidates}["single:large"] == "allowed_deployments"


def test_explain_lists_every_candidate_with_its_numbers(tmp_path: Path) -> None:
    explained = decide(_policy(tmp_path, TWO_TIERS), _signal(0.2, 0.9), CATALOG, LiveView()).explain()
    assert explained["plan"] == "single:large"
    assert [c["plan"] for c in explained["candidates"]] == ["single:small", "single:large"]
    for c in explained["candidates"]:
        assert {"predicted_quality", "predicted_cost_usd", "predicted_latency_ms", "utility", "rejected_by"} <= set(c)
    assert explained["reasons"]


def test_a_plan_that_answers_with_fewer_choices_than_n_is_not_a_candidate(tmp_path: Path) -> None:
    """best-of picks the client's `n` choices from its samples, and an agreement cascade from a step's
    samples: asked for more, they answered with fewer and a 200. A plan whose call is asked for `n`
    (a single; a cascade judged by log-probabilities) answers with any number."""
    policy = _policy(tmp_path, "candidates:\n  - single: small\n  - best_of: {deployment: small, n: 5}\n"
                               "  - cascade: {steps: [small, large], samples: 3}\n"
                               "  - cascade: {steps: [small, large], confidence: logprob}\n"
                               "objective: {value_usd: 1000}\n")
    signal = _signal(0.3, 0.95)
    four = [c.rejected_by for c in decide(policy, signal, CATALOG, LiveView(), choices=4).candidates]
    assert four == [None, None, "n (4 choices > the 3 it answers with)", None]
    d = decide(policy, signal, CATALOG, LiveView(), choices=8)
    why = [c.rejected_by for c in d.candidates]
    assert why.count("n (8 choices > the 5 it answers with)") == 1 and why.count(
        "n (8 choices > the 3 it answers with)") == 1
    assert d.plan.most_choices is None
    only = _policy(tmp_path, "candidates:\n  - best_of: {deployment: small, n: 5}\n")
    with pytest.raises(ConstraintUnsatisfiable, match=r"n \(6 choices > the 5") as refused:
        decide(only, signal, CATALOG, LiveView(), choices=6)
    assert refused.value.param == "n"  # the field at fault, as OpenAI's errors name it (it was null)
    capped = _policy(tmp_path, "candidates:\n  - best_of: {deployment: small, n: 5}\n  - single: large\n"
                               "constraints: {max_cost_usd: 0.0000001}\n")
    with pytest.raises(ConstraintUnsatisfiable) as refused:  # not n alone: no field is named
        decide(capped, signal, CATALOG, LiveView(), choices=6)
    assert refused.value.param is None


def test_a_plan_is_predicted_to_cost_every_choice_its_calls_generate(tmp_path: Path) -> None:
    """A single call asked for `n` choices generates (and bills) n answers; best-of picks them from the
    samples it draws anyway. Priced for one, n=8 under-predicted a single plan 8-fold: the policy weighed
    the wrong costs, and the savings reported against the dearest candidate went negative."""
    policy = _policy(tmp_path, "candidates:\n  - single: small\n  - single: large\n"
                               "  - cascade: {steps: [small, large], confidence: logprob}\n"
                               "  - best_of: {deployment: small, n: 8}\nobjective: {value_usd: 0.002}\n")
    signal = _signal(0.5, 0.9)
    one, eight = (decide(policy, signal, CATALOG, LiveView(), choices=n).candidates for n in (1, 8))
    for c1, c8 in zip(one, eight, strict=True):
        grew = c8.estimate.cost_usd / c1.estimate.cost_usd
        if c1.plan.kind == "best_of":
            assert grew == pytest.approx(1.0)
        elif c1.plan.kind == "single":
            d = CATALOG.deployments[c1.plan.deployments[0]]
            price = CATALOG.prices[d.name].base
            want = 200 * price.input + 8 * d.expected_output_tokens * price.output
            assert c8.estimate.cost_usd == pytest.approx(want)
        else:  # a logprob cascade: each step's call answers all n, its prompt is paid once
            assert 2 < grew < 8


def test_a_plan_never_asks_n_choices_of_a_deployment_that_answers_one_per_call(tmp_path: Path) -> None:
    """`supports_n: false`: a single plan's one call would ask it for `n` (refused, or one choice billed as
    n), so for n > 1 that plan is no candidate; best-of draws one call per sample and still answers."""
    solo = {**CATALOG.deployments, "small": CATALOG.deployments["small"].model_copy(update={"supports_n": False})}
    catalog = Catalog(solo, CATALOG.prices)
    policy = _policy(tmp_path, "candidates:\n  - single: small\n  - single: large\n"
                               "  - best_of: {deployment: small, n: 4}\nobjective: {value_usd: 0.000001}\n")
    signal = _signal(0.8, 0.82)
    assert decide(policy, signal, catalog, LiveView()).plan.label == "single:small"
    three = decide(policy, signal, catalog, LiveView(), choices=3)
    assert [c.rejected_by for c in three.candidates] == ["n (3 choices: 'small' answers one per call)", None, None]
    assert three.plan.label != "single:small"
    assert [c.rejected_by for c in decide(policy, signal, CATALOG, LiveView(), choices=3).candidates] == [None] * 3


def test_a_fallback_that_answers_one_choice_per_call_leaves_the_chain_of_an_n_choice_request() -> None:
    solo = {**CATALOG.deployments, "small": CATALOG.deployments["small"].model_copy(update={"supports_n": False})}
    catalog = Catalog(solo, CATALOG.prices)
    plan = Single("large", ("small",))
    assert for_choices(plan, catalog, 1) is plan
    assert for_choices(plan, catalog, 2) == Single("large", ())
    assert for_choices(plan, CATALOG, 2) is plan


def test_a_judge_a_vote_never_calls_does_not_remove_the_plan(tmp_path: Path) -> None:
    """Under `selector: vote` a named judge is never called, yet it counted as a deployment of the plan:
    `allowed_deployments: [small]` refused the file ("best_of:3:small:vote calls large"), and an open
    circuit on the judge removed the vote, here for the single call it beats."""
    vote = "  - best_of: {deployment: small, n: 3, selector: vote, judge: large}\n"
    allowed = _policy(tmp_path, "candidates:\n" + vote + "constraints: {allowed_deployments: [small]}\n")
    assert allowed.plans[0].deployments == ("small",)
    policy = _policy(tmp_path, "candidates:\n  - single: small\n" + vote + "objective: {value_usd: 1.0}\n")
    live = LiveView(frozenset({"large"}))
    d = decide(policy, _signal(0.5, 0.9), CATALOG, live)
    assert d.plan.label == "best_of:3:small:vote"
    assert [c.rejected_by for c in d.candidates] == [None, None]


def test_a_judge_a_cascade_does_not_consult_does_not_remove_it(tmp_path: Path) -> None:
    """A cascade by agreement or log-probabilities never calls the judge it names; like a vote's, it
    removed the cascade under `allowed_deployments` and while the judge's circuit was open."""
    judge = {"name": "grader", "model": "openai/grader", "api_base": "http://127.0.0.1:9/v1", "tier": "grader",
             "price": {"input_per_mtok": 5.0, "output_per_mtok": 5.0}}
    config = CONFIG.model_copy(update={"deployments": [*CONFIG.deployments, DeploymentConfig.model_validate(judge)]})
    for confidence in ("agreement", "logprob"):
        path = tmp_path / "p.yaml"
        path.write_text(f"candidates:\n  - cascade: {{steps: [small, large], confidence: {confidence}, "
                        "judge: grader}\nconstraints: {allowed_deployments: [small, large]}\n")
        policy = load_policy_file(path, config.deployments)
        assert policy.plans[0].deployments == ("small", "large")
        catalog = Catalog({d.name: d for d in config.deployments}, prices_for(config.deployments))
        d = decide(policy, _signal(0.5, 0.9), catalog, LiveView(frozenset({"grader"})))
        assert d.candidates[0].rejected_by is None
