"""What a policy's candidates owe to the policy and the catalog alone, worked out once rather than per request.

`decide()` runs on every routed request and estimates every candidate plan, yet most of a single
deployment's estimate does not depend on the request: which deployment it is, its prices, how long
its answer is expected to be for a given `max_tokens`, how long it takes when nothing has been
observed, whether the policy allows it at all, and the policy's limits when no header tightens them.
A `Prepared` holds those for one (policy, catalog) pair, so that a request pays only for its own
numbers: its q̂ per deployment and its prompt tokens (a multiply and an add per candidate).

It is never stale: a policy that changes (a reload, an adopted version) is a new `BoundPolicy` and
a new deployment set is a new `Catalog`, so each gets its own `Prepared` (looked up by identity,
holding both, so an identity cannot be reused while its entry lives). Live state (open circuits,
observed pace) is not prepared: it is read from the `LiveView` of each request, as before.
Plans other than single calls, and deployments with long-context price tiers (their rates follow the
prompt's length), are estimated by their kind on every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.plans import Single
from gateway.plans.base import Catalog, output_tokens
from gateway.policy.loader import BoundPolicy
from gateway.providers.health import configured_latency_ms

if TYPE_CHECKING:
    from gateway.policy.decide import Limits

# Distinct `max_tokens` values remembered per policy (clients send few; a flood of odd ones is forgotten
# wholesale rather than grown without bound), and (policy, catalog) pairs remembered in all.
MAX_TOKEN_SETTINGS = 64
MAX_PREPARED = 64


@dataclass(frozen=True, slots=True)
class FixedSingle:
    """A single-deployment candidate's request-independent numbers at one `max_tokens`; its estimate is
    q̂ = signal.quality[name], ĉ = prompt_tokens · input_rate + output_cost, l̂ = `expected_latency_ms`
    times the deployment's observed pace, if any (the arithmetic of `gateway.plans.single.estimate`)."""

    name: str
    input_rate: float
    output_cost: float  # expected output tokens × the output rate
    expected_latency_ms: float


class Prepared:
    """One policy against one catalog: `limits` are the policy's own (no header tightening them),
    `value` its value_usd, `target_words` how the reason of a decision under its target begins;
    `allowed[i]` is "allowed_deployments" when the policy's allowed list removes plan i (else None);
    `fixed(max_tokens)[i]` is plan i's `FixedSingle`, or None to estimate it by its kind."""

    __slots__ = ("_fixed", "allowed", "catalog", "limits", "policy", "target_words", "value")

    def __init__(self, policy: BoundPolicy, catalog: Catalog) -> None:
        from gateway.policy.decide import Limits, Overrides  # decide imports this module

        self.policy = policy
        self.catalog = catalog
        self.limits: Limits = Limits.of(policy, Overrides())
        self.value = policy.spec.objective.value_usd
        target = policy.spec.target
        # how a target decision's reason begins ("target strong_share 0.4"), formatted once
        self.target_words = "" if target is None else f"target {target.kind} {target.value:g}"
        allowed = policy.allowed
        self.allowed: tuple[str | None, ...] = tuple(
            "allowed_deployments" if allowed is not None and any(d not in allowed for d in p.deployments) else None
            for p in policy.plans)
        self._fixed: dict[int | None, tuple[FixedSingle | None, ...]] = {}

    def fixed(self, max_tokens: int | None) -> tuple[FixedSingle | None, ...]:
        found = self._fixed.get(max_tokens)
        if found is None:
            if len(self._fixed) >= MAX_TOKEN_SETTINGS:
                self._fixed.clear()
            found = self._fixed[max_tokens] = tuple(self._single(p, max_tokens) for p in self.policy.plans)
        return found

    def _single(self, plan: object, max_tokens: int | None) -> FixedSingle | None:
        if type(plan) is not Single:
            return None
        d = self.catalog.deployments[plan.deployment]
        price = self.catalog.prices[d.name]
        if price.tiers or price.per_call:  # priced by the prompt's length, or with a fee per call
            return None
        out = output_tokens(d, max_tokens)
        return FixedSingle(d.name, price.base.input, out * price.base.output, configured_latency_ms(d, out))


_PREPARED: dict[tuple[int, int], Prepared] = {}


def prepared(policy: BoundPolicy, catalog: Catalog) -> Prepared:
    """The `Prepared` of this policy object against this catalog object, made on first use (every
    time for a catalog priced for one request: it is not used again)."""
    if catalog.transient:
        return Prepared(policy, catalog)
    key = (id(policy), id(catalog))
    found = _PREPARED.get(key)
    if found is None:
        if len(_PREPARED) >= MAX_PREPARED:  # replaced policies and catalogs of tests and reloads
            _PREPARED.clear()
        found = _PREPARED[key] = Prepared(policy, catalog)
    return found
