"""`best_of:` n samples (from one deployment, or one each from several), then a selector picks one.

    candidates:
      - best_of: {deployment: small, n: 3, selector: vote}
      - best_of: {deployments: [a, b, c], selector: judge, judge: large}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from gateway.config import NoBooleanNumbers
from gateway.executor.sampling import judge_select, pick, result, sample
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
from gateway.plans.odds import CALIBRATION, VoteCalibration, odds, pass_at_n, sample_correlation, vote_outcomes
from gateway.plans.single import Single
from gateway.plans.single import estimate as estimate_single
from gateway.telemetry import set_attributes

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from gateway.executor.deadline import Deadline
    from gateway.executor.result import Result
    from gateway.executor.upstreams import Upstreams
    from gateway.signal import RouteSignal

Selector = Literal["vote", "judge"]


class BestOfSpec(NoBooleanNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # as policy files

    deployment: str | None = None
    deployments: list[str] | None = Field(default=None, min_length=2)
    n: int = Field(default=3, ge=2, le=16)
    selector: Selector = "vote"
    judge: str | None = None
    judge_prompt: str | None = None
    temperature: float = Field(default=0.7, ge=0, le=2)

    @model_validator(mode="after")
    def _one_source(self) -> BestOfSpec:
        if (self.deployment is None) == (self.deployments is None):
            raise ValueError("give exactly one of deployment (n samples) or deployments (one each)")
        if self.selector == "judge" and not self.judge:
            raise ValueError("selector 'judge' needs a judge deployment")
        return self


@dataclass(frozen=True, slots=True)
class BestOfN:
    """n samples (from one deployment, or one each from several), then a selector picks one."""

    kind: ClassVar[str] = "best_of"  # its key in policy files and `gateway.plans.KINDS`

    samplers: tuple[str, ...]  # one entry per sample: ("small", "small", "small") or ("a", "b", "c")
    selector: Selector = "vote"
    judge: str | None = None
    judge_prompt: str | None = None
    temperature: float = 0.7

    @property
    def n(self) -> int:
        return len(self.samplers)

    @property
    def most_choices(self) -> int | None:
        """How many choices (the client's `n`) it can answer with: one per sample."""
        return len(self.samplers)

    @property
    def label(self) -> str:
        who = self.samplers[0] if len(set(self.samplers)) == 1 else "+".join(self.samplers)
        return f"best_of:{self.n}:{who}:{self.selector}"

    @property
    def judged(self) -> bool:
        """A judge picks the answer (else a vote does, and a named judge is never called)."""
        return self.selector == "judge" and self.judge is not None

    @property
    def deployments(self) -> tuple[str, ...]:
        """What it calls: a judge only when it selects (under a vote a named judge is never called, so
        it neither removes the plan through `allowed_deployments` or an open circuit nor is held for)."""
        extra = (self.judge,) if self.judge is not None and self.judged else ()
        return tuple(dict.fromkeys(self.samplers + extra))

    @property
    def reachable(self) -> tuple[str, ...]:
        return self.deployments


def bind(spec: BestOfSpec, where: str, names: Binder) -> list[BestOfN]:
    if spec.deployments is not None:
        samplers = tuple(names.one(d, f"{where}.best_of.deployments[{j}]") for j, d in enumerate(spec.deployments))
    else:
        samplers = (names.one(str(spec.deployment), f"{where}.best_of.deployment"),) * spec.n
    judge = names.one(spec.judge, f"{where}.best_of.judge") if spec.judge else None
    return [BestOfN(samplers, spec.selector, judge, spec.judge_prompt, spec.temperature)]


def calls(plan: BestOfN, catalog: Catalog, choices: int) -> tuple[Call, ...]:
    """The samples (the client's `n` is served from them), then the judge reading every one."""
    drawn = sampling_calls(plan.samplers, catalog)
    if plan.judge is None or not plan.judged:
        return drawn
    return (*drawn, Call(plan.judge, 1, "judge", reads=plan.samplers, instructions=plan.judge_prompt))


def estimate(plan: BestOfN, s: RouteSignal, cat: Catalog, live: Live, max_tokens: int | None,
             choices: int = 1, cal: VoteCalibration = CALIBRATION) -> Estimate:
    """`choices` (the client's `n`) changes nothing: they are picked from the samples it draws anyway."""
    members = [estimate_single(Single(d), s, cat, live, max_tokens) for d in plan.samplers]
    ps = [e.quality for e in members]
    latency = max(e.latency_ms for e in members)
    cost = expected_cost(cat.calls(plan, calls), s.prompt_tokens, cat, max_tokens)
    if plan.judge is not None and plan.judged:
        # The judge keeps a share of what the best of the samples adds over an average one. Samples are
        # correlated as in a vote (one deployment's agree most): counted as independent, eight samples
        # of a small model were predicted above the large one, and the policy bought ever more of them.
        mean = sum(ps) / len(ps)
        best = pass_at_n(ps, sample_correlation(plan.samplers, cal))
        quality = mean + cal.judge_keep * (best - mean)
        latency += estimate_single(Single(plan.judge), s, cat, live, JUDGE_OUTPUT_TOKENS).latency_ms
    else:
        quality = odds(vote_outcomes(ps, sample_correlation(plan.samplers, cal), cal.distractors), 1.0).quality
    return Estimate(min(1.0, max(0.0, quality)), cost, latency)


def worst_case(plan: BestOfN, prompt_tokens: int, catalog: Catalog, max_tokens: int | None, choices: int) -> float:
    planned = catalog.calls(plan, calls) if choices == 1 else calls(plan, catalog, choices)
    return worst_cost(planned, prompt_tokens, catalog, max_tokens)


async def run(up: Upstreams, plan: BestOfN, body: dict[str, Any], span: Span | None, deadline: Deadline) -> Result:
    samples = await sample(up, plan.samplers, plan.temperature, body, span, deadline)
    done = list(samples.calls)
    answers = [t for _, t in samples.choices]
    if plan.judge is not None and plan.judged:
        selection, judge_calls = await judge_select(up, plan.judge, plan.judge_prompt, body, answers, span, deadline)
        done += judge_calls
    else:
        selection = vote(answers)
    if span is not None:
        set_attributes(span, switchyard__selector=selection.evidence.get("selector"),
                       switchyard__agreement=selection.agreement,
                       switchyard__votes=selection.evidence.get("votes", {}))
    # The answering deployment is the one whose sample was chosen (never the judge).
    chosen = selection.index
    answer = pick(samples.bodies[chosen], samples.choices, chosen, int(body.get("n") or 1))
    evidence = {**selection.evidence, "agreement": round(selection.agreement, 4), "samples": len(answers)}
    return result(answer, samples.owners[chosen], plan.label, done, evidence)


KIND = Kind(BestOfN.kind, BestOfN, BestOfSpec, bind, calls, estimate, worst_case, run)
