"""Plans: what the gateway will do for one request. Frozen values made by the policy, run by the executor.

A new kind of plan is a new dataclass here, a label, a quality/cost/latency estimate in
`gateway.policy.estimate`, and a runner registered in `gateway.executor.RUNNERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Selector = Literal["vote", "judge"]
Confidence = Literal["agreement", "logprob", "judge"]


@dataclass(frozen=True, slots=True)
class Single:
    deployment: str
    fallbacks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"single:{self.deployment}"

    @property
    def deployments(self) -> tuple[str, ...]:
        return (self.deployment,)


@dataclass(frozen=True, slots=True)
class BestOfN:
    """n samples (from one deployment, or one each from several), then a selector picks one."""

    samplers: tuple[str, ...]  # one entry per sample: ("small", "small", "small") or ("a", "b", "c")
    selector: Selector = "vote"
    judge: str | None = None
    judge_prompt: str | None = None
    temperature: float = 0.7

    @property
    def n(self) -> int:
        return len(self.samplers)

    @property
    def label(self) -> str:
        who = self.samplers[0] if len(set(self.samplers)) == 1 else "+".join(self.samplers)
        return f"best_of:{self.n}:{who}:{self.selector}"

    @property
    def deployments(self) -> tuple[str, ...]:
        extra = (self.judge,) if self.judge else ()
        return tuple(dict.fromkeys(self.samplers + extra))


@dataclass(frozen=True, slots=True)
class Cascade:
    """Answer with the first step; escalate to the next when confidence is under the threshold."""

    steps: tuple[str, ...]
    confidence: Confidence = "agreement"
    threshold: float = 0.6
    samples: int = 3  # for agreement: cheap samples drawn at the first step
    judge: str | None = None

    @property
    def label(self) -> str:
        return "cascade:" + ">".join(self.steps)

    @property
    def deployments(self) -> tuple[str, ...]:
        extra = (self.judge,) if self.judge else ()
        return tuple(dict.fromkeys(self.steps + extra))


Plan = Single | BestOfN | Cascade


@dataclass(frozen=True, slots=True)
class Shadow:
    """A policy's shadow evaluation: for a `rate` sample of requests answered by a cheaper deployment,
    `against` answers too, in the background, and the cheap answer is labelled against it (by
    exact agreement of short answers, else by `judge` when there is one)."""

    rate: float
    against: str
    judge: str | None = None
