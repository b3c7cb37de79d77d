"""What every plan kind shares: the catalog it is estimated against, the calls it may make, and the
`Kind` record that registers it (its policy-file key, schema, binding, estimator and runner).

A plan kind states its calls once (`Kind.calls`): the estimator prices them with expected output
lengths, the worst case (budgets, cost caps) with the most each may generate, and the runner makes
them. tests/unit/plans/test_agreement.py holds the three to the same calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from gateway.config import DeploymentConfig
from gateway.executor.sampling import JUDGE_MAX_TOKENS
from gateway.executor.selectors import judge_messages, score_messages
from gateway.messages import count_messages, count_text, count_texts
from gateway.providers.health import configured_latency_ms
from gateway.providers.pricing import DeploymentPrice
from gateway.providers.terms import PLAIN, Terms

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from gateway.executor.deadline import Deadline
    from gateway.executor.result import Result
    from gateway.executor.upstreams import Upstreams
    from gateway.signal import RouteSignal

Role = Literal["answer", "sample", "judge", "escalation"]

# A judge's reply: what the runners ask for (JUDGE_MAX_TOKENS), what the estimator expects, and
# (generously) what its instructions and candidate labels add to its prompt: worst cases must not be
# under-estimated. The labels grow with the answers read ("\n\nCandidate 16:\n" is 6 tokens in
# o200k_base; at 16 candidates a fixed allowance fell 27 tokens short).
JUDGE_OUTPUT_TOKENS = 16
JUDGE_FRAMING_TOKENS = 96
JUDGE_LABEL_TOKENS = 8  # per answer a judge reads


def judge_framing(c: Call) -> int:
    """What a judge's prompt adds to the request's and the answers it reads, at most."""
    return JUDGE_FRAMING_TOKENS + JUDGE_LABEL_TOKENS * len(c.reads) + (_instruction_tokens(c.instructions)
                                                                         if c.instructions else 0)


@lru_cache(maxsize=256)
def expected_framing(answers: int, instructions: str | None, grades: bool) -> int:
    """What a judge's prompt adds to the question and the answers it reads, as the runners build it (its
    instructions, the candidates' labels, the messages' framing beyond the request's own): 51 tokens for one
    answer, 111 for sixteen. Left out, a judged plan was predicted up to a fifth cheaper than it is billed.
    `grades`: a judge scoring one answer (a cascade's confidence) rather than picking among them."""
    skeleton = score_messages("", "") if grades else judge_messages("", [""] * answers, instructions)
    return count_messages(skeleton) - count_texts([])


@lru_cache(maxsize=64)
def _instruction_tokens(instructions: str) -> int:
    """A policy's judge instructions: the same few texts on every request, from the policy files (never
    a client's text, whose counts are not remembered: `gateway.messages`)."""
    return count_text(instructions)


@dataclass(frozen=True, slots=True)
class Estimate:
    quality: float
    cost_usd: float
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the policy needs to know about each deployment, fixed at start-up."""

    deployments: Mapping[str, DeploymentConfig]
    prices: Mapping[str, DeploymentPrice]
    # Each plan's calls for one answer, worked out once: estimates run per request for every candidate,
    # and a policy's plans are few and fixed.
    planned: dict[Any, tuple[Call, ...]] = field(default_factory=dict, compare=False, repr=False)
    # The catalog priced under each request terms seen (`under`): a handful at most (`Terms` are few;
    # those with audio prompt tokens are not kept).
    priced: dict[Terms, Catalog] = field(default_factory=dict, compare=False, repr=False)
    # Priced for one request alone (`under` with audio prompt tokens): what is worked out per catalog
    # and kept (`gateway.policy.prepared`) is not kept for it.
    transient: bool = field(default=False, compare=False)

    def under(self, terms: Terms) -> Catalog:
        """This catalog with every deployment priced as a call under `terms` is held
        (`DeploymentPrice.under`): what the worst cases and cost caps of such a request use."""
        if terms is PLAIN or terms == PLAIN:
            return self
        if terms.audio_input:  # a count that varies by request: priced for this request alone, not remembered
            return Catalog(self.deployments, {n: p.under(terms) for n, p in self.prices.items()}, transient=True)
        found = self.priced.get(terms)
        if found is None:
            found = self.priced[terms] = Catalog(self.deployments, {n: p.under(terms) for n, p in self.prices.items()})
        return found

    def unpriced(self, plan: Any) -> tuple[str, str] | None:
        """(a deployment the plan may call, the request field its price cannot account for), if any."""
        for name in plan.reachable:
            if (field_ := self.prices[name].unpriced) is not None:
                return name, field_
        return None

    def calls(self, plan: Any, of: Callable[[Any, Catalog, int], tuple[Call, ...]]) -> tuple[Call, ...]:
        """`of(plan, self, 1)`, remembered."""
        found = self.planned.get(plan)
        if found is None:
            found = self.planned[plan] = of(plan, self, 1)
        return found


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream call a plan may make. `outputs` answers come back from it (a call with `n`);
    a judge's prompt carries the answers of `reads` (one entry per answer) and its `instructions`.
    `stage` orders a cascade's steps: a later stage is only reached when an earlier one escalates."""

    deployment: str
    outputs: int = 1
    role: Role = "answer"
    stage: int = 0
    reads: tuple[str, ...] = ()
    instructions: str | None = None
    grades: bool = False  # a judge scoring one answer (`score_messages`), not picking among `reads`


def output_tokens(d: DeploymentConfig, max_tokens: int | None) -> int:
    """What an answer of `d` is expected to generate."""
    return min(d.expected_output_tokens, max_tokens) if max_tokens else d.expected_output_tokens


def single_latency_ms(d: DeploymentConfig, out_tokens: int, pace: float | None) -> float:
    """The configured latency of an answer `out_tokens` long, times the deployment's observed pace."""
    configured = configured_latency_ms(d, out_tokens)
    return configured if pace is None else configured * pace


def sampling_calls(samplers: Sequence[str], catalog: Catalog, role: Role = "sample",
                   stage: int = 0) -> tuple[Call, ...]:
    """One sample from each sampler: a single call with `n` when they are all one deployment that
    takes `n` (the prompt is billed once), else one call each."""
    if len(set(samplers)) == 1 and catalog.deployments[samplers[0]].supports_n:
        return (Call(samplers[0], len(samplers), role, stage),)
    return tuple(Call(d, 1, role, stage) for d in samplers)


def expected_cost(calls: Sequence[Call], prompt_tokens: int, catalog: Catalog, max_tokens: int | None) -> float:
    """The calls' cost with every answer of its expected length (a judge: a short verdict)."""
    cost = 0.0
    for c in calls:
        price = catalog.prices[c.deployment]
        if c.role == "judge":
            read = sum(output_tokens(catalog.deployments[r], max_tokens) for r in c.reads)
            framing = expected_framing(len(c.reads), c.instructions, c.grades)
            cost += price.estimate(prompt_tokens + framing + read, JUDGE_OUTPUT_TOKENS)
        else:
            cost += price.estimate(prompt_tokens, output_tokens(catalog.deployments[c.deployment], max_tokens)
                                   * c.outputs)
    return cost


def worst_cost(calls: Sequence[Call], prompt_tokens: int, catalog: Catalog, max_tokens: int | None) -> float:
    """The calls' cost with every answer generating up to `max_tokens` (else its deployment's
    `max_output_tokens`), and every judge reading all of them."""

    def limit(name: str) -> int:
        return max_tokens or catalog.deployments[name].max_output_tokens

    cost = 0.0
    for c in calls:
        price = catalog.prices[c.deployment]
        if c.role == "judge":
            cost += price.bound(prompt_tokens + judge_framing(c) + sum(limit(r) for r in c.reads),
                                JUDGE_MAX_TOKENS)
        else:
            cost += price.bound(prompt_tokens, limit(c.deployment) * c.outputs)
    return cost


def worst_tokens(calls: Sequence[Call], prompt_tokens: int, catalog: Catalog, max_tokens: int | None) -> int:
    """The tokens (prompt and output) the calls may use at most, counted as `worst_cost` prices them:
    what a deployment's tokens-per-minute window holds for the request."""
    total = 0
    for c in calls:
        if c.role == "judge":
            read = sum(max_tokens or catalog.deployments[r].max_output_tokens for r in c.reads)
            total += prompt_tokens + judge_framing(c) + read + JUDGE_MAX_TOKENS
        else:
            total += prompt_tokens + (max_tokens or catalog.deployments[c.deployment].max_output_tokens) * c.outputs
    return total


class Binder(Protocol):
    """Resolves the names a policy file uses to configured deployments, naming the culprit on failure."""

    def resolve(self, name: str, where: str) -> list[str]: ...
    def one(self, name: str, where: str) -> str: ...
    def fallbacks(self, deployment: str) -> tuple[str, ...]: ...


P = TypeVar("P")
Live = Mapping[str, float]  # observed pace per deployment (`gateway.providers.health`)


@dataclass(frozen=True, slots=True)
class Kind(Generic[P]):
    """One plan kind, registered in `gateway.plans.KINDS`.

    key:        its key in a policy file's candidate (`single:`, `best_of:`, `cascade:`)
    spec:       the type of that key's value (validated by pydantic)
    bind:       a validated spec, where it sits in the file and the names → the plans it stands for
    calls:      every call a plan may make, for the client's `n` (the worst case: a cascade escalating)
    estimate:   q̂, ĉ and l̂ for one request, for the client's `n`
    worst_case: the most a plan can cost for one request (budgets reserve it, cost caps bound it)
    run:        the runner
    """

    key: str
    plan: type[P]
    spec: Any
    bind: Callable[[Any, str, Binder], list[P]]
    calls: Callable[[P, Catalog, int], tuple[Call, ...]]
    estimate: Callable[[P, RouteSignal, Catalog, Live, int | None, int], Estimate]
    worst_case: Callable[[P, int, Catalog, int | None, int], float]
    run: Callable[[Upstreams, P, dict[str, Any], Span | None, Deadline], Awaitable[Result]]
