"""`cascade:` answer with the first step; escalate to the next when confidence is under the threshold.

    candidates:
      - cascade: {steps: [small, large], confidence: agreement, threshold: 0.6, samples: 3}

Estimate: a step is accepted when its confidence clears the threshold. Prompts that reach the next
step are the harder ones: with reach probability e, a model's P(right | reached) mixes independence
(p) with the worst case (max(0, p+e-1)/e) by `escalation_correlation` (gateway.plans.odds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from gateway.config import NoBooleanNumbers
from gateway.errors import GatewayError
from gateway.executor.result import CallRecord
from gateway.executor.sampling import billing, choice_text, judge_score, pick, result, sample, upstream_fault
from gateway.executor.selectors import vote
from gateway.plans.base import (
    JUDGE_OUTPUT_TOKENS,
    Binder,
    Call,
    Catalog,
    Estimate,
    Kind,
    Live,
    expected_cost,
    sampling_calls,
    worst_cost,
)
from gateway.plans.odds import (
    CALIBRATION,
    VoteCalibration,
    VoteOdds,
    escalated_quality,
    odds,
    sample_correlation,
    vote_outcomes,
)
from gateway.plans.single import Single
from gateway.plans.single import estimate as estimate_single

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from gateway.executor.deadline import Deadline
    from gateway.executor.result import Result
    from gateway.executor.upstreams import Upstreams
    from gateway.signal import RouteSignal

Confidence = Literal["agreement", "logprob", "judge"]
# Measured over-prediction of cascades on validation (benchmarks/results/test_time_compute.md).
CASCADE_SHORTFALL = 0.02


class CascadeSpec(NoBooleanNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # as policy files

    steps: list[str] = Field(min_length=2)
    confidence: Confidence = "agreement"
    threshold: float = Field(default=0.6, ge=0, le=1)
    samples: int = Field(default=3, ge=1, le=16)
    judge: str | None = None

    @model_validator(mode="after")
    def _judge_named(self) -> CascadeSpec:
        if self.confidence == "judge" and not self.judge:
            raise ValueError("confidence 'judge' needs a judge deployment")
        if self.confidence == "agreement" and self.samples < 2:
            raise ValueError(f"samples must be at least 2 for confidence 'agreement' (agreement "
                             f"compares samples), got samples: {self.samples}")
        return self


@dataclass(frozen=True, slots=True)
class Cascade:
    """Answer with the first step; escalate to the next when confidence is under the threshold."""

    kind: ClassVar[str] = "cascade"  # its key in policy files and `gateway.plans.KINDS`

    steps: tuple[str, ...]
    confidence: Confidence = "agreement"
    threshold: float = 0.6
    samples: int = 3  # for agreement: cheap samples drawn at each step but the last
    judge: str | None = None

    @property
    def label(self) -> str:
        return "cascade:" + ">".join(self.steps)

    @property
    def deployments(self) -> tuple[str, ...]:
        """What it calls: a judge only when it is the confidence signal (else it is never called)."""
        extra = (self.judge,) if self.judge is not None and self.confidence == "judge" else ()
        return tuple(dict.fromkeys(self.steps + extra))

    @property
    def reachable(self) -> tuple[str, ...]:
        return self.deployments

    @property
    def most_choices(self) -> int | None:
        """How many choices (the client's `n`) it can answer with: a step accepted by agreement answers
        from its samples; every other answer is one call asked for `n` (None: any)."""
        return self.samples if self.confidence == "agreement" else None

    @property
    def stages(self) -> list[tuple[str, ...]]:
        """Who answers at each step: `samples` draws of a step judged by agreement, else one answer."""
        k = self.samples if self.confidence == "agreement" else 1
        return [(step,) * k for step in self.steps[:-1]] + [self.steps[-1:]]


def bind(spec: CascadeSpec, where: str, names: Binder) -> list[Cascade]:
    steps = tuple(names.one(s, f"{where}.cascade.steps[{j}]") for j, s in enumerate(spec.steps))
    judge = names.one(spec.judge, f"{where}.cascade.judge") if spec.judge else None
    return [Cascade(steps, spec.confidence, spec.threshold, spec.samples, judge)]


def stage_calls(members: Sequence[str], stage: int, last: bool, confidence: str, judge: str | None,
                catalog: Catalog, choices: int) -> tuple[Call, ...]:
    """The calls of one cascade stage: its members' answers, and the judge scoring a judged step."""
    if last:
        if len(members) == 1:
            return (Call(members[0], choices, "escalation", stage),)
        return sampling_calls(members, catalog, "escalation", stage)
    if confidence == "agreement":
        return sampling_calls(members, catalog, "sample", stage)
    answer = Call(members[0], choices, "sample", stage)
    if confidence == "judge" and judge is not None:
        return answer, Call(judge, 1, "judge", stage, reads=(members[0],) * choices, grades=True)
    return (answer,)


def _stage_calls_of(members: Sequence[str], stage: int, last: bool, confidence: str, judge: str | None,
                    catalog: Catalog) -> tuple[Call, ...]:
    """`stage_calls` for one answer, worked out once per catalog: estimates price every stage of every
    cascade candidate on every request, and a stage's calls depend on nothing the request brings."""
    key = ("cascade stage", tuple(members), stage, last, confidence, judge)
    return catalog.calls(key, lambda _key, cat, _n: stage_calls(members, stage, last, confidence, judge, cat, 1))


def calls(plan: Cascade, catalog: Catalog, choices: int) -> tuple[Call, ...]:
    """Every step's calls, as when every step escalates."""
    stages = plan.stages
    return tuple(c for i, members in enumerate(stages)
                 for c in stage_calls(members, i, i == len(stages) - 1, plan.confidence, plan.judge, catalog,
                                      choices))


def _step_odds(members: Sequence[str], ps: list[float], confidence: str, threshold: float,
               cal: VoteCalibration) -> VoteOdds:
    if confidence == "agreement" and len(members) > 1:
        return odds(vote_outcomes(ps, sample_correlation(members, cal), cal.distractors), threshold)
    # logprob / judge scores: not in the recorded data, so a prior: P(accept) grows as the threshold
    # falls, and accepted answers lean right (the same mixture as escalation, in the other direction).
    q = ps[0]
    accept = min(1.0, q + 0.5 * (1 - threshold))
    rho = cal.escalation_correlation
    return VoteOdds(q, accept, (1 - rho) * accept * q + rho * min(accept, q))


def estimate_cascade(stages: Sequence[Sequence[str]], threshold: float, signal: RouteSignal,
                     catalog: Catalog, live_latency_s: Live, max_tokens: int | None = None,
                     confidence: str = "agreement", judge: str | None = None,
                     cal: VoteCalibration = CALIBRATION, choices: int = 1) -> Estimate:
    """A cascade whose stages are member sets: every stage but the last answers by vote and is
    accepted when its agreement share ≥ threshold; the last stage always answers.

    Latency is the worst case (all stages, and the judge of each judged step), which is what an SLO must
    allow for.
    """
    quality, cost, latency, reach = 0.0, 0.0, 0.0, 1.0
    for i, members in enumerate(stages):
        last = i == len(stages) - 1
        singles = [estimate_single(Single(d), signal, catalog, live_latency_s, max_tokens) for d in members]
        ps = [escalated_quality(e.quality, reach, cal.escalation_correlation) for e in singles]
        stage = (_stage_calls_of(members, i, last, confidence, judge, catalog) if choices == 1
                 else stage_calls(members, i, last, confidence, judge, catalog, choices))
        cost += reach * expected_cost(stage, signal.prompt_tokens, catalog, max_tokens)
        latency += max(e.latency_ms for e in singles)
        if not last and confidence == "judge" and judge is not None:  # the step waits for the judge's verdict
            latency += estimate_single(Single(judge), signal, catalog, live_latency_s, JUDGE_OUTPUT_TOKENS).latency_ms
        if last:
            quality += reach * odds(vote_outcomes(ps, sample_correlation(members, cal), cal.distractors), 1.0).quality
            break
        step = _step_odds(members, ps, confidence, threshold, cal)
        quality += reach * step.accept_correct
        reach *= 1 - step.accept
    # Never predict a cascade above its last stage answering alone: on recorded outcomes
    # (benchmarks/results/test_time_compute.md) no cascade beat its final model, and the uncapped
    # model over-predicted unanimous cascades by 2 points, which made the policy overpay for them.
    # So a cascade must be predicted to cost less for the same quality, less that measured shortfall.
    final = signal.quality[stages[-1][0]] - CASCADE_SHORTFALL if len(stages[-1]) == 1 else quality
    return Estimate(min(1.0, max(0.0, min(quality, final))), cost, latency)


def estimate(plan: Cascade, s: RouteSignal, cat: Catalog, live: Live, max_tokens: int | None,
             choices: int = 1) -> Estimate:
    return estimate_cascade(plan.stages, plan.threshold, s, cat, live, max_tokens, plan.confidence, plan.judge,
                            choices=choices)


def worst_case(plan: Cascade, prompt_tokens: int, catalog: Catalog, max_tokens: int | None, choices: int) -> float:
    planned = catalog.calls(plan, calls) if choices == 1 else calls(plan, catalog, choices)
    return worst_cost(planned, prompt_tokens, catalog, max_tokens)


async def _confidence(up: Upstreams, plan: Cascade, members: tuple[str, ...], body: dict[str, Any],
                      span: Span | None,
                      deadline: Deadline) -> tuple[dict[str, Any], float, list[CallRecord], dict[str, Any]]:
    step = members[0]
    if plan.confidence == "agreement":
        samples = await sample(up, members, 0.7, body, span, deadline)
        sel = vote([t for _, t in samples.choices])
        answer = pick(samples.bodies[sel.index], samples.choices, sel.index, int(body.get("n") or 1))
        return answer, sel.agreement, samples.calls, sel.evidence
    ask = {**body, "stream": False, "logprobs": True} if plan.confidence == "logprob" else {**body, "stream": False}
    ask.pop("stream_options", None)
    done, rec = await up.call((step,), ask, span, deadline=deadline, role="sample")
    if plan.confidence == "logprob" or plan.judge is None:
        tokens = ((done.body["choices"][0].get("logprobs") or {}).get("content")) or []
        conf = math.exp(sum(t["logprob"] for t in tokens) / len(tokens)) if tokens else 0.0
        # The log-probabilities were the gateway's to read: a client that did not ask for them gets none, as
        # from OpenAI (`logprobs: null`), and the answer it is served from the cache has none either.
        answer = done.body if body.get("logprobs") else \
            {**done.body, "choices": [{**c, "logprobs": None} for c in done.body.get("choices") or ()]}
        return answer, conf, [rec], {"signal": "logprob", "tokens_scored": len(tokens)}
    # What the answer says as a vote reads it: its tool calls, then its text. Read as its text alone, a tool
    # call was an empty answer to the judge, graded unsure, and every tool-calling step escalated.
    text = choice_text(done.body["choices"][0])
    score, judge_calls = await judge_score(up, plan.judge, body, text, span, deadline)
    return done.body, score, [rec, *judge_calls], {"signal": "judge", "score": score}


async def run(up: Upstreams, plan: Cascade, body: dict[str, Any], span: Span | None, deadline: Deadline) -> Result:
    made: list[CallRecord] = []
    try:
        return await _run(up, plan, body, span, deadline, made)
    except GatewayError as exc:
        billing(exc, made)
        raise


async def _run(up: Upstreams, plan: Cascade, body: dict[str, Any], span: Span | None,
               deadline: Deadline, made: list[CallRecord]) -> Result:
    trail: list[dict[str, Any]] = []
    stages = plan.stages
    for i, members in enumerate(stages[:-1]):
        step = members[0]
        try:
            answer, conf, step_calls, evidence = await _confidence(up, plan, members, body, span, deadline)
        except GatewayError as exc:
            if not upstream_fault(exc):
                raise
            made += exc.billed  # a step that failed upstream escalates, as a step without confidence would
            trail.append({"step": step, "failed": exc.message, "escalated": "step failed"})
            continue
        made += step_calls
        trail.append({"step": step, "confidence": round(conf, 4), "threshold": plan.threshold, **evidence})
        if conf >= plan.threshold:
            return result(answer, step, f"{plan.label}:accepted" if i == 0 else f"{plan.label}:escalated",
                          made, {"cascade": trail})
        trail[-1]["escalated"] = f"confidence {conf:.2f} < threshold {plan.threshold:g}"
    done, rec = await up.call(stages[-1], {**body, "stream": False}, span, deadline=deadline, role="escalation")
    return result(done.body, rec.deployment, f"{plan.label}:escalated", [*made, rec], {"cascade": trail})


KIND = Kind(Cascade.kind, Cascade, CascadeSpec, bind, calls, estimate, worst_case, run)
