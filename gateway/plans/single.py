"""`single:` one deployment answers, with the policy's fallbacks for it when it fails.

    candidates:
      - single: small        # a deployment, or a tier: one candidate per deployment of the tier
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from gateway.executor.sampling import result
from gateway.plans.base import Binder, Call, Catalog, Estimate, Kind, Live, output_tokens, single_latency_ms

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from gateway.executor.deadline import Deadline
    from gateway.executor.result import Result
    from gateway.executor.upstreams import Upstreams
    from gateway.signal import RouteSignal


@dataclass(frozen=True, slots=True)
class Single:
    kind: ClassVar[str] = "single"  # its key in policy files and `gateway.plans.KINDS`
    deployment: str
    fallbacks: tuple[str, ...] = ()

    # How many choices (the client's `n`) it can answer with: its call is asked for `n` (None: any).
    most_choices: ClassVar[None] = None

    @property
    def label(self) -> str:
        return f"single:{self.deployment}"

    @property
    def deployments(self) -> tuple[str, ...]:
        return (self.deployment,)

    @property
    def reachable(self) -> tuple[str, ...]:
        """Every deployment the plan may call: the chosen one, then its fallbacks."""
        return (self.deployment, *self.fallbacks)


def bind(spec: str, where: str, names: Binder) -> list[Single]:
    return [Single(d, names.fallbacks(d)) for d in names.resolve(spec, f"{where}.single")]


def calls(plan: Single, catalog: Catalog, choices: int) -> tuple[Call, ...]:
    """One answering call; a fallback only replaces it (see `worst_case`: the dearest of the chain)."""
    return (Call(plan.deployment, choices),)


def estimate(plan: Single, s: RouteSignal, cat: Catalog, live: Live, max_tokens: int | None) -> Estimate:
    d = cat.deployments[plan.deployment]
    out = output_tokens(d, max_tokens)
    cost = cat.prices[d.name].estimate(s.prompt_tokens, out)
    return Estimate(s.quality[d.name], cost, single_latency_ms(d, out, live.get(d.name)))


def worst_case(plan: Single, prompt_tokens: int, catalog: Catalog, max_tokens: int | None, choices: int) -> float:
    """The dearest deployment of the fallback chain: one of them answers. On every capped or
    budgeted request, so no Call values; priced as every call is (a long prompt at its tier's rates)."""
    worst = 0.0
    for name in plan.reachable:
        out = (max_tokens or catalog.deployments[name].max_output_tokens) * choices
        worst = max(worst, catalog.prices[name].bound(prompt_tokens, out))
    return worst


async def run(up: Upstreams, plan: Single, body: dict[str, Any], span: Span | None, deadline: Deadline) -> Result:
    done, record = await up.call(plan.reachable, body, span, deadline=deadline)
    label = plan.label if record.deployment == plan.deployment else f"{plan.label}>fallback:{record.deployment}"
    return result(done.body, record.deployment, label, [record])


KIND = Kind(Single.kind, Single, str, bind, calls, estimate, worst_case, run)
