"""Specs for the plan estimators: votes, cascades and the calibration constants behind them."""

from __future__ import annotations

import pytest

from gateway.config import DeploymentConfig
from gateway.plans import BestOfN, Cascade, Plan, Single
from gateway.plans.cascade import estimate_cascade
from gateway.plans.odds import (
    CALIBRATION,
    _vote_table,
    escalated_quality,
    independent_outcomes,
    majority_vote_quality,
    odds,
    vote_outcomes,
)
from gateway.policy.estimate import Catalog, estimate
from gateway.providers.pricing import prices_for
from gateway.signal import RouteSignal


def _deployment(name: str, price: float, tokens: int = 100) -> DeploymentConfig:
    return DeploymentConfig(name=name, model=f"openai/{name}", expected_output_tokens=tokens, supports_n=False,
                            price={"input_per_mtok": price, "output_per_mtok": price})


DEPLOYMENTS = [_deployment("a", 0.2), _deployment("b", 0.2), _deployment("c", 0.1), _deployment("large", 0.9)]
CATALOG = Catalog({d.name: d for d in DEPLOYMENTS}, prices_for(DEPLOYMENTS))


def _signal(pa: float = 0.45, pb: float = 0.42, pc: float = 0.40, pl: float = 0.65) -> RouteSignal:
    return RouteSignal(0.5, "test", {"a": pa, "b": pb, "c": pc, "large": pl}, 200, {})


def _vote(ps: list[float]) -> float:
    return odds(vote_outcomes(ps, CALIBRATION.member_correlation, CALIBRATION.distractors), 1.0).quality


def test_calibration_constants_are_in_range() -> None:
    c = CALIBRATION
    assert 0.0 <= c.member_correlation <= 1.0
    assert c.member_correlation <= c.same_deployment_correlation <= 1.0  # one model's samples agree more
    assert 1 <= c.distractors <= 9  # MMLU-Pro has 10 options: at most 9 wrong ones
    assert 0.0 <= c.escalation_correlation <= 1.0
    assert 0.0 <= c.judge_keep <= 1.0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_outcome_probabilities_sum_to_one(n: int) -> None:
    ps = [0.3, 0.55, 0.7, 0.2, 0.9][:n]
    assert sum(independent_outcomes(ps, 4).values()) == pytest.approx(1.0)
    assert sum(vote_outcomes(ps, 0.5, 4).values()) == pytest.approx(1.0)


def test_vote_quality_grows_with_member_quality() -> None:
    qs = [_vote([p] * 3) for p in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert qs == sorted(qs)


@pytest.mark.parametrize("p", [0.3, 0.5, 0.7])
def test_more_voters_do_not_hurt(p: float) -> None:
    assert _vote([p] * 5) >= _vote([p] * 3) - 1e-9 >= p - 1e-9


def test_independent_plurality_with_many_distractors_matches_the_closed_form() -> None:
    # p = 0.5, three voters, wrong answers never coincide: right when ≥ 2 right (0.5), or when exactly one
    # is right and it is the first member (the three-way tie goes to the earliest): 0.375 / 3.
    got = odds(vote_outcomes([0.5] * 3, 0.0, 10**6), 1.0).quality
    assert got == pytest.approx(0.5 + 0.375 / 3, abs=1e-5)
    assert majority_vote_quality(0.5, 3) == pytest.approx(0.5)


def test_fully_correlated_identical_voters_gain_nothing() -> None:
    assert odds(vote_outcomes([0.6] * 3, 1.0, 5), 1.0).quality == pytest.approx(0.6)


def test_stricter_agreement_accepts_less_but_more_precisely() -> None:
    o = vote_outcomes([0.5, 0.45, 0.4], CALIBRATION.member_correlation, CALIBRATION.distractors)
    loose, strict = odds(o, 0.6), odds(o, 1.0)
    assert strict.accept < loose.accept
    assert strict.accept_correct / strict.accept > loose.accept_correct / loose.accept


def test_escalated_prompts_are_harder_for_the_next_step() -> None:
    assert escalated_quality(0.6, 1.0, 0.5) == pytest.approx(0.6)
    assert 0.0 <= escalated_quality(0.6, 0.7, 0.5) < 0.6
    assert escalated_quality(0.6, 0.7, 0.0) == pytest.approx(0.6)


def test_cascade_cost_lies_between_its_first_step_and_every_step() -> None:
    s = _signal()
    first = estimate(BestOfN(("a", "b", "c")), s, CATALOG, {}).cost_usd
    large = estimate(Single("large"), s, CATALOG, {}).cost_usd
    e = estimate_cascade([("a", "b", "c"), ("large",)], 0.6, s, CATALOG, {})
    assert first < e.cost_usd < first + large


def test_unanimity_escalates_more_than_a_majority() -> None:
    s = _signal()
    loose = estimate_cascade([("a", "b", "c"), ("large",)], 0.6, s, CATALOG, {})
    strict = estimate_cascade([("a", "b", "c"), ("large",)], 1.0, s, CATALOG, {})
    assert strict.cost_usd > loose.cost_usd
    assert strict.quality > loose.quality  # the large step is better than a 2-of-3 vote here


def test_vote_of_different_models_beats_the_mean_member() -> None:
    s = _signal()
    e = estimate(BestOfN(("a", "b", "c")), s, CATALOG, {})
    assert (0.45 + 0.42 + 0.40) / 3 < e.quality < 1.0
    assert e.cost_usd == pytest.approx(sum(estimate(Single(d), s, CATALOG, {}).cost_usd for d in "abc"))


def test_samples_of_one_deployment_gain_less_than_different_models() -> None:
    s = _signal(0.45, 0.45, 0.45)
    same = estimate(BestOfN(("a", "a", "a")), s, CATALOG, {}).quality
    mixed = estimate(BestOfN(("a", "b", "c")), s, CATALOG, {}).quality
    assert 0.45 <= same < mixed


def test_cascade_plan_samples_its_first_step() -> None:
    e = estimate(Cascade(("a", "large"), threshold=0.6, samples=3), _signal(), CATALOG, {})
    one = estimate(Single("a"), _signal(), CATALOG, {}).cost_usd
    assert e.cost_usd > 3 * one
    assert 0.0 < e.quality < 1.0


def test_estimates_build_the_vote_table_once_not_per_request() -> None:
    """The table behind a vote (Bell(n+1) rows) is the expensive part: counted, not timed."""
    plan, s = BestOfN(("a", "b", "c", "a", "b")), _signal()
    first = estimate(plan, s, CATALOG, {})  # builds the table for five members
    built = _vote_table.cache_info().misses
    again = [estimate(plan, s, CATALOG, {}) for _ in range(100)]
    assert _vote_table.cache_info().misses == built
    assert all(e == first for e in again)


def test_a_cascades_stage_calls_are_worked_out_once_per_catalog_and_estimate_alike(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.plans import cascade

    catalog = Catalog({d.name: d for d in DEPLOYMENTS}, prices_for(DEPLOYMENTS))
    built: list[int] = []
    real = cascade.stage_calls
    monkeypatch.setattr(cascade, "stage_calls", lambda *a: built.append(a[1]) or real(*a))
    plan = Cascade(("c", "large"))
    first = estimate(plan, _signal(), catalog, {})
    again = [estimate(plan, _signal(pl=0.5 + i / 100), catalog, {}) for i in range(3)]
    assert built == [0, 1]  # each stage once, not once per request
    fresh = Catalog({d.name: d for d in DEPLOYMENTS}, prices_for(DEPLOYMENTS))
    assert estimate(plan, _signal(pl=0.52), fresh, {}) == again[2] and first == estimate(plan, _signal(), fresh, {})


def test_a_judged_cascade_is_predicted_to_wait_for_its_judge() -> None:
    """A cascade's latency is its worst case, every step: a step judged by a judge waits for the judge's
    verdict before it accepts or escalates, so the judge's call is part of it, as it is of a best-of
    judged by one. Left out, a latency_slo_ms kept a judged cascade that runs past it when it escalates."""
    signal = _signal()
    live: dict[str, float] = {}
    judged = estimate(Cascade(("c", "a"), "judge", judge="large"), signal, CATALOG, live)
    unjudged = estimate(Cascade(("c", "a"), "logprob"), signal, CATALOG, live)
    verdict = estimate(BestOfN(("c", "c"), "judge", "large"), signal, CATALOG, live).latency_ms \
        - estimate(BestOfN(("c", "c")), signal, CATALOG, live).latency_ms
    assert verdict > 0
    assert judged.latency_ms == pytest.approx(unjudged.latency_ms + verdict)


def test_a_judge_picks_from_samples_as_correlated_as_a_votes() -> None:
    """A judge keeps a share of what the best sample adds, and samples of one deployment mostly fail
    together, as the vote's model says (ρ = 0.8). Counted as independent, sixteen judged samples of a
    0.40 model were predicted at 0.70, above the 0.65 large model, and a policy with a high value_usd
    bought more and more samples for a gain they do not bring."""
    s = _signal(pc=0.40, pl=0.65)
    judged = {n: estimate(BestOfN(("c",) * n, "judge", "large"), s, CATALOG, {}).quality for n in (2, 4, 8, 16)}
    rho = CALIBRATION.same_deployment_correlation
    ceiling = 0.40 + CALIBRATION.judge_keep * (1 - rho) * (1 - 0.40)  # any number of samples
    assert all(0.40 < q < ceiling for q in judged.values())
    assert judged[16] < 0.65
    at_two = (1 - rho) * (1 - 0.6**2) + rho * 0.40
    assert judged[2] == pytest.approx(0.40 + CALIBRATION.judge_keep * (at_two - 0.40))
    # different models still add what independent draws do, in the vote's cross-model mixture
    mixed = estimate(BestOfN(("a", "b", "c"), "judge", "large"), s, CATALOG, {}).quality
    assert mixed > estimate(BestOfN(("c", "c", "c"), "judge", "large"), s, CATALOG, {}).quality


@pytest.mark.parametrize("grades", [False, True])
def test_a_judges_expected_prompt_is_the_one_it_is_sent(grades: bool) -> None:
    """A judge reads the question and the answers inside instructions and labels (51 tokens for one
    answer, 111 for sixteen); the estimate priced the question and the answers alone, so a judged plan
    was predicted up to a fifth cheaper than it is billed. Counted here on the messages the runners send."""
    from gateway.executor.selectors import judge_messages, score_messages
    from gateway.messages import count_messages, count_text
    from gateway.plans.base import JUDGE_OUTPUT_TOKENS

    question, answer = "Which prime follows 89? " * 8, "The answer is 97. " * 20  # the answer: ~100 tokens
    prompt = count_messages([{"role": "user", "content": question}])
    s = RouteSignal(0.5, "test", {"a": 0.45, "b": 0.42, "c": 0.40, "large": 0.65}, prompt, {})
    judged: Plan
    plain: Plan
    if grades:
        sent = score_messages(question, answer)
        judged, plain = Cascade(("c", "large"), "judge", judge="large"), Cascade(("c", "large"), "logprob")
    else:
        sent = judge_messages(question, [answer, answer], None)
        judged, plain = BestOfN(("c", "c"), "judge", "large"), BestOfN(("c", "c"))
    judge_cost = estimate(judged, s, CATALOG, {}).cost_usd - estimate(plain, s, CATALOG, {}).cost_usd
    rate = 0.9e-6
    read = judge_cost / rate - JUDGE_OUTPUT_TOKENS
    # as sent, with each answer at the 100 tokens the estimate expects of deployment c
    expected_read = count_messages(sent) + (100 - count_text(answer)) * (1 if grades else 2)
    assert read == pytest.approx(expected_read, abs=5)  # the question's own message framing, counted twice
