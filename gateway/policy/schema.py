"""The policy file format (YAML in `routing_policies/`), validated with pydantic.

Keys are inert data: no class names, import paths or expressions. A candidate's schema is its plan
kind's (`gateway.plans.<kind>`: `BestOfSpec`, `CascadeSpec`). `routing_policies/README.md`
documents every field; keep the two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import ConfigDict, Field, create_model, model_validator

from gateway.config import MAX_TTL_S, NoBooleanNumbers
from gateway.plans import KEYS, Kind
from gateway.plans.best_of import BestOfSpec
from gateway.plans.cascade import CascadeSpec


class _Strict(NoBooleanNumbers):
    # No .inf or .nan: YAML has both, and `value_usd: .inf` would make every utility inf, a tie that the
    # cheapest candidate wins (the opposite of what it says); a limit is left out, not made infinite.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Candidate(_Strict):
    """Exactly one plan kind's key, e.g. `single: <deployment or tier>`, `best_of: {...}`, `cascade: {...}`:
    its fields are the keys of `gateway.plans.KEYS`, each typed by that kind's spec."""

    @model_validator(mode="after")
    def _exactly_one(self) -> _Candidate:
        given = [k for k in KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a candidate is exactly one of {', '.join(KEYS)}"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    def kind(self) -> tuple[Kind[Any], Any]:
        """The candidate's plan kind and its validated spec."""
        return next((k, spec) for key, k in KEYS.items() if (spec := getattr(self, key)) is not None)


if TYPE_CHECKING:
    CandidateSpec: TypeAlias = _Candidate
else:  # one optional field per registered plan kind
    CandidateSpec = create_model("CandidateSpec", __base__=_Candidate,
                                 **{key: (k.spec | None, None) for key, k in KEYS.items()})


class Objective(_Strict):
    # utility = value_usd * q - cost, i.e. q - lambda * cost with lambda = 1 / value_usd
    value_usd: float = Field(default=0.01, gt=0, description="what one good answer is worth, in USD")


TARGET_KINDS = ("strong_share", "quality", "usd_per_1k_requests")


class Target(_Strict):
    """What the operator wants, met by calibrating a threshold on live traffic (gateway.policy.calibration).

    Exactly one of: the share of requests sent to a plan other than the cheapest feasible one, the
    predicted quality as a share of always sending them to the strong choice, or a spend rate.
    """

    strong_share: float | None = Field(default=None, ge=0, le=1)
    quality: float | None = Field(default=None, gt=0, le=1)
    usd_per_1k_requests: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [k for k in TARGET_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(TARGET_KINDS)}"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def kind(self) -> str:
        return "strong_share" if self.strong_share is not None else (
            "quality" if self.quality is not None else "usd_per_1k_requests")

    @property
    def value(self) -> float:
        return float(getattr(self, self.kind))

    def describe(self) -> dict[str, float]:
        return {self.kind: self.value}


class Constraints(_Strict):
    latency_slo_ms: float | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    allowed_deployments: list[str] | None = None
    min_quality: float | None = Field(default=None, ge=0, le=1)


class CacheSettings(_Strict):
    enabled: bool = True
    ttl_s: int = Field(default=3600, gt=0, le=MAX_TTL_S)


class ShadowSpec(_Strict):
    """Background evaluation of cheap answers against a stronger deployment (or tier)."""

    rate: float = Field(gt=0, le=1, description="share of eligible requests shadowed")
    against: str = Field(min_length=1, description="the deployment or tier that also answers")
    judge: str | None = Field(default=None, description="grades answers that are not short enough to compare")


class Example(_Strict):
    """A golden case: under the embedded default deployments, this prompt takes this plan."""

    prompt: str
    expect: str


class PolicySpec(_Strict):
    name: str | None = None
    description: str = ""
    candidates: list[CandidateSpec] = Field(min_length=1)
    # A policy states a target the gateway calibrates to, or a willingness to pay (objective), not both.
    target: Target | None = None
    objective: Objective = Objective()
    constraints: Constraints = Constraints()
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    cache: CacheSettings = CacheSettings()
    # One deadline per request over every retry, fallback, cascade step and sample; clients may
    # tighten it with x-switchyard-timeout-ms. At least 0.1 s: below that no upstream call can answer,
    # and a typo such as 1e-300 would turn every request under the policy into a 504.
    timeout_s: float = Field(default=60.0, ge=0.1, le=3600)
    # Single-deployment plans with a fallback also ask the fallback when no first token came by then.
    hedge_after_ms: float | None = Field(default=None, gt=0, le=600_000)
    examples: list[Example] = Field(default_factory=list)
    shadow: ShadowSpec | None = None

    @model_validator(mode="after")
    def _target_or_value(self) -> PolicySpec:
        if self.target is not None and "objective" in self.model_fields_set:
            raise ValueError("give either target (calibrated on live traffic) or objective.value_usd, not both")
        if self.hedge_after_ms is not None and self.hedge_after_ms >= self.timeout_s * 1000:
            raise ValueError(f"hedge_after_ms ({self.hedge_after_ms:g}) must be under timeout_s "
                             f"({self.timeout_s:g} s): a hedge after the deadline never starts")
        return self


__all__ = ["BestOfSpec", "CandidateSpec", "CascadeSpec", "PolicySpec", "Target"]
