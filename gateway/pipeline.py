"""One request's whole path through the gateway, top to bottom.

    tenant   = auth.authenticate(...)             → 401 early
    slot     = inflight.enter(tenant, cap)        → 429 at once if the tenant has its cap in flight; given
                                                    back when the answer is complete (a stream: when it ends)
                                                    and every call it gave up on has ended
    held     = auth.admit(tenant, policy, need)   → the one gate: 403, then (once allowed) `need`:
      hit      = cache.lookup(...)                    served from the store, cost 0, nothing held
      signal   = router.assess(...)                   predicted quality per deployment (no network)
      decision = policy.decide(signal, ...)           Single | Cascade | BestOfN, with reasons
                                                      (a target policy's threshold from its calibrator)
      route    = cost cap → upstream max_tokens       422 if not even the prompt fits
                                                  → then 429 for its worst case, before any upstream call
    count_traffic(...)                            → once admitted, the decision counts in its tenant's calibration
    observer.decided(...)                         → and in the routing-mix metric
    result   = executor.run(plan, ...)            → provider calls, retries, fallbacks, selection
    ledger.record(..., held); cache.save(...)     → the real cost settles the hold, exactly once
    learn(...)                                    → request record queued; maybe a shadow job (both off-path)
    observer.finish(trail, status)                → the request's metrics and log line, once, errors too

One `Deadline` (the policy's timeout_s, tightened by x-switchyard-timeout-ms) is passed by value
to every upstream call the request makes.

Streaming requests follow the same path; a single-deployment plan streams straight through, any
other plan runs to completion first (selection needs every sample) and is then replayed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from gateway import signal as routing
from gateway.auth import HOLD_MARGIN_S, NOTHING, OPEN_TENANT, Authenticator, Need, Reservation, Tenant
from gateway.cache import CachedAnswer, CacheStatus, ExactCache, is_cacheable
from gateway.config import GatewayConfig
from gateway.dashboard.stats import RequestStats
from gateway.decimals import PICO, as_decimal, rounded
from gateway.errors import ConstraintUnsatisfiable, GatewayError, InvalidRequest, NotFound, UpstreamError
from gateway.executor import Deadline, Result, Upstreams, run
from gateway.executor.drain import late_bills
from gateway.executor.hedge import NO_LOSERS, Losers, hedge_after_s, open_stream, run_hedged
from gateway.executor.result import CallRecord
from gateway.executor.resume import resumable, resuming
from gateway.executor.upstreams import OpenStream
from gateway.feedback import Completed, RequestLog
from gateway.inflight import NO_SLOT, InFlight, Slot
from gateway.keyed import Digests, tenant_salt
from gateway.ledger import CACHE, LateBills, Ledger, Spent, own_counterfactual
from gateway.log_throttle import KeyedLogThrottle
from gateway.logs import prompts_logged
from gateway.messages import count_messages, definition_tokens, prompt_bound, remember_prompt
from gateway.observer import PINNED, Observer, Trail
from gateway.plans import Plan, Single
from gateway.plans.single import for_choices
from gateway.policy import (
    BoundPolicy,
    Catalog,
    Decision,
    Overrides,
    PlansBehindOpenCircuits,
    PolicySet,
    decide,
    fit_to_cap,
    output_ceiling,
    worst_case_billed,
    worst_case_cost,
    worst_case_duration_s,
    worst_case_tokens,
)
from gateway.policy.sharing import Calibrator
from gateway.providers.base import ProviderFailure, Usage, openai_shaped
from gateway.providers.terms import PLAIN, Terms, terms_of, with_audio_input
from gateway.router.serving import ServingRouter
from gateway.shadow import ShadowEvaluator
from gateway.signal import RememberingRouter
from gateway.streaming import Accumulator, stream_body
from gateway.telemetry import Telemetry, set_attributes, trace_id_hex

AUTO = "auto"
POLICY_PREFIX = "router/"
POLICY_HEADER = "x-switchyard-policy"  # the policy `auto` means for one request

log = logging.getLogger("switchyard.pipeline")


@dataclass(slots=True)
class Services:
    """Everything a request needs, built once in `create_app` and passed in."""

    config: GatewayConfig
    auth: Authenticator
    cache: ExactCache
    router: ServingRouter  # `.current` is read once per request; `.version` names what is served
    policies: PolicySet
    catalog: Catalog
    upstreams: Upstreams
    ledger: Ledger
    telemetry: Telemetry
    calibrator: Calibrator
    observer: Observer                      # metrics and the per-request log line
    requests: RequestLog | None = None      # request records and feedback (None: not recorded)
    shadow: ShadowEvaluator | None = None   # background evaluation for policies with `shadow:`
    stats: RequestStats = field(default_factory=RequestStats)  # this replica's recent latencies and statuses
    digests: Digests = field(default_factory=Digests)  # prompt digests and tenants' cache salts (`gateway.keyed`)
    inflight: InFlight = field(default_factory=InFlight)  # each tenant's requests in flight, under its cap
    reports: InFlight = field(default_factory=InFlight)  # each caller's spend reports being read (`SPEND_REPORTS`)
    unpriced_log: KeyedLogThrottle = field(default_factory=KeyedLogThrottle)  # per (deployment, field)


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the HTTP layer read from the request headers."""

    authorization: str | None = None
    policy: str | None = None
    overrides: Overrides = field(default_factory=Overrides)
    cache: str | None = None
    timeout_s: float | None = None  # x-switchyard-timeout-ms: may only tighten the policy's timeout_s
    request_id: str = ""            # the response's x-request-id: the key of the request's record
    trace_parent: Context | None = None  # the caller's W3C trace context (read only while tracing)


@dataclass(frozen=True, slots=True)
class Entry:
    policy: BoundPolicy
    pinned: str | None = None  # a deployment the client asked for by name

    @property
    def name(self) -> str:
        return self.pinned or f"{POLICY_PREFIX}{self.policy.name}"

    @property
    def policy_name(self) -> str | None:
        """The policy that chose the plan; None for a pinned deployment (it only lends its settings)."""
        return None if self.pinned else self.policy.name


@dataclass(slots=True)
class Answer:
    """A whole answer for the HTTP layer: a cache hit, or a plan that ran to its end (sent as JSON, or
    replayed as a stream)."""

    cache: CacheStatus
    plan: str
    deployment: str
    trace_id: str | None
    body: dict[str, Any]
    cost_usd: float = 0.0
    decision: Decision | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LiveAnswer:
    """A stream relayed as it arrives: its cost is known only at its end, so `settle` (run once,
    however the stream ends) does the bookkeeping."""

    cache: CacheStatus
    plan: str
    deployment: str
    trace_id: str | None
    stream: AsyncIterator[dict[str, Any]]
    settle: Callable[[], Awaitable[None]]
    decision: Decision | None = None


Outcome = Answer | LiveAnswer


def resolve_entry(svc: Services, model: str, ctx: CallContext, tenant: Tenant) -> Entry:
    """What `model` names: a deployment (pinned) or a policy. Whether the tenant may use it is the
    gate's to say (`auth.admit`, `auth.permit`)."""
    if model in svc.catalog.deployments:
        # A pinned call borrows the default policy's settings (cache, timeout): the tenant's, else (an admin
        # key's tenant may name one that is not loaded) the gateway's, which is never unloaded.
        own = svc.policies.get(tenant.default_policy) if tenant.default_policy else None
        return Entry(own or _policy(svc, svc.config.default_policy), pinned=model)
    if model == AUTO:
        name = ctx.policy or _auto_policy(svc, tenant)
        if ctx.policy and svc.policies.get(name) is None:
            # The header names a policy, not a model: the list of models (`router/balanced`, `small`)
            # offered values it does not take, and `param: model` blamed a field the client got right.
            usable = ", ".join(p for p in sorted(svc.policies.policies) if tenant.may_use(p)) or "none"
            raise NotFound(f"policy '{name[:64]}' (header {POLICY_HEADER}) does not exist: use one of {usable}",
                           param=POLICY_HEADER, code="policy_not_found")
    elif model.startswith(POLICY_PREFIX) or svc.policies.get(model) is not None:
        name = model.removeprefix(POLICY_PREFIX)
    else:
        raise NotFound(f"model '{model[:64]}' does not exist: use one of {_callable(svc, tenant)} "
                       "(GET /v1/models lists them)", param="model")
    policy = svc.policies.get(name)
    if policy is None:
        raise NotFound(f"policy '{name[:64]}' does not exist: use one of {_callable(svc, tenant)}",
                       param="model", code="policy_not_found")
    return Entry(policy)


def _auto_policy(svc: Services, tenant: Tenant) -> str:
    """What `auto` means for this tenant: its default policy, else the gateway's, the first of them it
    may use; when it may use neither but exactly one policy, that one (a key made for one policy was
    listed `auto` by `GET /v1/models` and refused it). Else its default stands, and the 403 lists what
    it may use."""
    defaults = [p for p in (tenant.default_policy, svc.config.default_policy) if p]
    usable = next((p for p in defaults if tenant.may_use(p)), None)
    if usable is not None:
        return usable
    allowed = [p for p in svc.policies.policies if tenant.may_use(p)]
    return allowed[0] if len(allowed) == 1 else defaults[0]


def _callable(svc: Services, tenant: Tenant) -> str:
    """What this key may call, for an error message: like `GET /v1/models`, never the whole gateway's
    deployments and policies (a key held to one policy is not told the others)."""
    return ", ".join(entry_points(svc, tenant)) or "none"


def entry_points(svc: Services, tenant: Tenant) -> list[str]:
    """The models this tenant may call (`GET /v1/models`): the rules of `resolve_entry`, listed."""
    policies = [p for p in sorted(svc.policies.policies) if tenant.may_use(p)]
    ids = [AUTO] if tenant.may_use(_auto_policy(svc, tenant)) else []  # what it means without a header
    ids += [f"{POLICY_PREFIX}{p}" for p in policies]
    return ids + [d for d in svc.catalog.deployments if tenant.may_pin(d)]


def _policy(svc: Services, name: str) -> BoundPolicy:
    policy = svc.policies.get(name)
    if policy is None:
        raise NotFound(f"policy '{name}' does not exist ({', '.join(sorted(svc.policies.policies))})",
                       param="model", code="policy_not_found")
    return policy


@dataclass(frozen=True, slots=True)
class Billing:
    """What decides how many calls a request's plan may be billed for beyond one run: its deadline
    (`within_s`: attempts given up on at their timeout that answer late), whether it hedges, whether
    its stream may be resumed on a fallback. Budgets hold what it may bill (`worst`); a cost cap bounds
    `worst_for_cap`, and may turn the hedge and the resumption off first (`trimmed`)."""

    within_s: float
    hedge_after_ms: float | None
    resumes: bool

    @classmethod
    def of(cls, entry: Entry, request: dict[str, Any], ctx: CallContext) -> Billing:
        return cls(deadline_s(entry.policy.spec.timeout_s, ctx.timeout_s), entry.policy.spec.hedge_after_ms,
                   bool(request.get("stream")) and resumable(request))

    def hedge_s(self, plan: Plan) -> float | None:
        return hedge_after_s(self.hedge_after_ms, plan)

    def worst(self, plan: Plan, prompt_tokens: int, catalog: Catalog, max_tokens: int | None,
              choices: int = 1) -> float:
        """`worst_case_billed` for this request: what its budget holds."""
        return worst_case_billed(plan, prompt_tokens, catalog, max_tokens, choices, within_s=self.within_s,
                                 hedged=self.hedge_s(plan) is not None, resumes=self.resumes)

    def worst_for_cap(self, plan: Plan, prompt_tokens: int, catalog: Catalog, max_tokens: int | None,
                      choices: int = 1) -> float:
        """What a cost cap bounds: the plan's calls, a hedge's second leg and a resumed stream's
        continuation. Not a call of a retry chain that failed after it had cost something (an attempt
        given up on at its timeout that answers late, a whole answer read as a stream that breaks):
        counting every attempt would halve every capped answer under the default timeouts (a 60 s
        deadline, 30 s calls) for cases that need a deployment to fail mid-answer."""
        hedged = self.hedge_s(plan) is not None
        if not (hedged or self.resumes):  # one run of the plan: what worst_case_billed works out, for less
            return worst_case_cost(plan, prompt_tokens, catalog, max_tokens, choices)
        return worst_case_billed(plan, prompt_tokens, catalog, max_tokens, choices, within_s=0.0,
                                 hedged=hedged, resumes=self.resumes)

    def trimmed(self) -> tuple[Billing, ...]:
        """What a cost cap may turn off, in order, before it shortens the answer: the hedge (a second leg
        for latency), then the resumption of a broken stream on a fallback."""
        out = []
        if self.hedge_after_ms is not None:
            out.append(replace(self, hedge_after_ms=None))
        if self.resumes:
            out.append(replace(self, hedge_after_ms=None, resumes=False))
        return tuple(out)


@dataclass(slots=True)
class Route:
    """The plan for one request and the numbers its cost bounds need."""

    plan: Plan
    decision: Decision | None
    messages: list[dict[str, Any]]
    max_tokens: int | None    # what each upstream call may generate: the client's, tightened by a cost cap
    capped: bool = False      # True when a cost cap lowered (or set) max_tokens
    choices: int = 1
    router_version: str = ""  # the router that assessed the prompt (and the one serving, when pinned)
    counted: int | None = None  # prompt tokens, counted once when first needed (routing counts them anyway)
    definitions: int = 0        # of them, the tokens of tools, schemas and earlier tool calls (`definition_tokens`)
    terms: Terms = PLAIN        # what the request asks for that changes its calls' prices (`service_tier`...)
    billing: Billing = Billing(0.0, None, False)  # its hedge, resumption and deadline (`Billing.of`)
    definition_bytes: int = 0   # the definitions' bound (`definition_tokens`)
    bound: int | None = None    # `held_prompt_tokens`, once worked out

    @property
    def prompt_tokens(self) -> int:
        if self.counted is None:
            self.counted = count_messages(self.messages) + self.definitions
        return self.counted

    @property
    def held_prompt_tokens(self) -> int:
        """The prompt tokens a budget holds: a bound no upstream's count exceeds (`prompt_bound`: a UTF-8
        byte each), not the gateway's own count, which another tokenizer may exceed many times over (1,600
        "!" are 108 tokens to tiktoken and 1,600 to a server that reads punctuation a character a token):
        concurrent requests each held at the count overspent a budget about 13 times."""
        if self.bound is None:
            self.bound = prompt_bound(self.messages)[0] + self.definition_bytes
        return self.bound


def route(svc: Services, entry: Entry, request: dict[str, Any], ctx: CallContext, tenant: str,
          router: RememberingRouter | None = None) -> Route:
    """`router`: the request's reference to the served router (taken once); else the current one.
    `tenant`: whose memory of assessed prompts may answer (a tenant never reuses another's)."""
    router = router or svc.router.current
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    messages = request["messages"]
    decision: Decision | None = None
    definitions, definition_bytes = definition_tokens(request)
    terms = terms_of(request)
    if entry.pinned:
        # A pinned call is not routed, so its prompt is not counted yet: a bound that costs a byte count
        # shows most caps cannot bind, and the exact count is left to whatever needs it.
        bound, audio = prompt_bound(messages)
        bound += definition_bytes
        if audio:
            terms = with_audio_input(terms, audio)
        choices = int(request.get("n") or 1)
        if choices > 1 and not svc.catalog.deployments[entry.pinned].supports_n:
            raise InvalidRequest(f"n: deployment '{entry.pinned}' answers one choice per request (supports_n: "
                                 "false): ask for n=1, or name a policy, whose plans draw one call per choice",
                                 param="n", code="unsupported_parameter")
        r = Route(Single(entry.pinned), None, messages, max_tokens, choices=choices,
                  router_version=router.version, definitions=definitions, terms=terms,
                  definition_bytes=definition_bytes, bound=bound)
    else:
        sig = routing.assess(router.of(tenant), messages, svc.config.deployments)
        if definitions:  # the plans are priced on the whole prompt
            sig = replace(sig, prompt_tokens=sig.prompt_tokens + definitions)
        policy = entry.policy
        cutoff = svc.calibrator.cutoff(policy, tenant) if policy.spec.target is not None else None
        if sig.audio_tokens:  # the plans are priced with the prompt's audio at each deployment's audio rate
            terms = with_audio_input(terms, sig.audio_tokens)
        # ... and at the rates the request's calls are billed at: its service tier, its search fee, its audio
        # output. Chosen at standard rates, a `service_tier: priority` request under a cost cap took the large
        # plan (predicted within the cap at half its price) and had its answer cut to fit, where the small
        # plan would have answered whole.
        catalog = svc.catalog.under(terms)
        choices = int(request.get("n") or 1)
        try:
            decision = decide(policy, sig, catalog, svc.upstreams.health.view(), ctx.overrides, max_tokens, cutoff,
                              choices)
        except PlansBehindOpenCircuits as exc:
            raise svc.upstreams.unavailable(exc.deployments) from None
        plan = for_choices(decision.plan, catalog, choices) if isinstance(decision.plan, Single) else decision.plan
        r = Route(plan, decision, messages, max_tokens, choices=choices,
                  router_version=router.version, counted=sig.prompt_tokens, terms=terms,
                  definition_bytes=definition_bytes)
        bound = r.prompt_tokens
    billing = r.billing = Billing.of(entry, request, ctx)
    cap = entry.policy.spec.constraints.max_cost_usd
    if ctx.overrides.max_cost_usd is not None:
        cap = ctx.overrides.max_cost_usd if cap is None else min(cap, ctx.overrides.max_cost_usd)
    if cap is None:
        return r
    catalog = svc.catalog.under(terms)  # the worst cases of the tier, audio, search and audio prompt it asks for
    refuse_unpriced(catalog, r.plan, "the cost cap")
    # The cap bounds what the request may be billed: a hedge's second leg and a broken stream's
    # continuation too, not one run of the plan. What does not fit is turned off before the answer is
    # shortened.
    for b in (billing, *billing.trimmed()):
        if b.worst_for_cap(r.plan, bound, catalog, max_tokens, r.choices) <= cap or (
                r.prompt_tokens < bound and b.worst_for_cap(r.plan, r.prompt_tokens, catalog, max_tokens,
                                                            r.choices) <= cap):
            r.billing = b
            return r
    # A cap is a bound, not a forecast: what the calls may generate is limited so that the worst case fits.
    plan, prompt_tokens, choices = r.plan, r.prompt_tokens, r.choices
    plain = (billing.trimmed() or (billing,))[-1]  # no hedge, no resumption: one run of the plan
    fitted = fit_to_cap(plan, prompt_tokens, catalog, cap, max_tokens, choices)
    if fitted is None:
        least = worst_case_cost(Single(plan.deployment) if isinstance(plan, Single) else plan,
                                prompt_tokens, catalog, 1, choices)
        raise ConstraintUnsatisfiable(
            f"the cost cap of ${as_decimal(cap)} cannot be met by {plan.label}: its ~{prompt_tokens} prompt tokens "
            f"and one output token may cost ${as_decimal(least)}", param="max_cost_usd")
    fitted_plan, bounded = fitted
    # The same route otherwise (a copy: its definitions' bound, which budgets hold, is not dropped).
    if bounded >= output_ceiling(fitted_plan, catalog, max_tokens):  # the cap does not bind: send as is
        return replace(r, plan=fitted_plan, billing=plain)
    return replace(r, plan=fitted_plan, max_tokens=bounded, capped=True, billing=plain)


def refuse_unpriced(catalog: Catalog, plan: Plan, bound_by: str) -> None:
    """A request field the price of a deployment the plan may call cannot account for (a web search
    where no per-query price is known) is refused when a bound on spend applies: its worst case
    would understate what the call may be billed."""
    found = catalog.unpriced(plan)
    if found is not None:
        name, field_ = found
        raise InvalidRequest(f"deployment '{name}' has no known price for `{field_}`, so {bound_by} cannot "
                             f"bound what the request may cost; send it without `{field_}`", param=field_)


def count_traffic(svc: Services, entry: Entry, r: Route, tenant: str) -> None:
    """Count an admitted request's decision as traffic in its tenant's calibration of the policy
    (explained requests too). Only once admitted: a request refused by its rate limit or budget must
    not move the threshold its tenant's next requests are routed by."""
    if r.decision is not None and r.decision.routing is not None:
        svc.calibrator.observe(entry.policy, tenant, r.decision.routing)


def bounded_body(request: dict[str, Any], r: Route) -> dict[str, Any]:
    """The request as sent upstream: with the cap's max_tokens, under the name the client used."""
    if not r.capped:
        return request
    name = "max_completion_tokens" if "max_completion_tokens" in request else "max_tokens"
    body: dict[str, Any] = {**request, name: r.max_tokens}
    if name == "max_completion_tokens" and request.get("max_tokens") is not None:
        body["max_tokens"] = r.max_tokens
    return body


async def explain(svc: Services, request: dict[str, Any], ctx: CallContext,
                  tenant: Tenant | None = None) -> dict[str, Any]:
    """POST /v1/route: the decision for this request, without calling any model. `tenant`: the
    caller, when the HTTP layer already authenticated it."""
    if tenant is None:
        tenant = await svc.auth.authenticate(ctx.authorization)
    entry = resolve_entry(svc, request["model"], ctx, tenant)
    # Admitted like a cache hit (counted in the rate windows, nothing held): its decision counts as
    # traffic, and explaining must not be a way around the rate limit to move the calibration.
    await svc.auth.admit(tenant, entry.policy_name, NOTHING, pinned=entry.pinned)
    r = route(svc, entry, request, ctx, tenant.name)
    count_traffic(svc, entry, r, tenant.name)
    explained: dict[str, Any]
    if r.decision is None:
        explained = {"policy": None, "plan": r.plan.label,
                     "reasons": [f"deployment '{entry.pinned}' pinned by the client"]}
    else:
        explained = r.decision.explain()
    if r.capped:
        explained["max_tokens"] = r.max_tokens
    explained["router_version"] = r.router_version
    explained["policy_version"] = None if entry.pinned else entry.policy.version
    return explained


async def handle(svc: Services, request: dict[str, Any], ctx: CallContext, trail: Trail | None = None,
                 tenant: Tenant | None = None) -> Outcome:
    """`trail`: the request's account, started when it arrived; `svc.observer.finish`es it, however it ends.
    `tenant`: the caller, when the HTTP layer already authenticated it (before reading the body)."""
    router = svc.router.current  # this request's router, whatever is promoted meanwhile
    span = svc.telemetry.start("switchyard.request", ctx.trace_parent, kind=SpanKind.SERVER,
                               gen_ai__operation__name="chat", gen_ai__request__model=request["model"],
                               switchyard__router__version=router.version)
    if trail is None:
        trail = Trail(ctx.request_id, time.perf_counter())
    trail.trace_id, trail.router_version, trail.messages = trace_id_hex(span), router.version, request["messages"]
    # what the client asked for, however it is answered: a live relay, the cache, a plan's answer rebuilt as a
    # stream, or an error
    trail.stream = request.get("stream") is True
    slot = NO_SLOT
    try:
        if tenant is None:
            tenant = await svc.auth.authenticate(ctx.authorization)
        trail.tenant = tenant
        slot = svc.inflight.enter(tenant.name, in_flight_cap(svc, tenant))  # given back once answered
        outcome = await _handle(svc, request, ctx, span, router, trail, tenant, slot)
    except BaseException as exc:
        slot.release()
        _end_failed(span, exc)
        if isinstance(exc, GatewayError):
            svc.observer.finish(trail, exc.status, exc.code)
        elif isinstance(exc, Exception):
            svc.observer.finish(trail, 500, "internal_error")
        raise
    if isinstance(outcome, Answer):
        slot.release()
        span.end()
        svc.observer.finish(trail, 200)
    elif slot is not NO_SLOT:  # a stream holds its slot until it ends, however it ends
        outcome.settle = _releasing(outcome.settle, slot)
    return outcome


def refused(svc: Services, trace_parent: Context | None, trail: Trail, exc: GatewayError) -> None:
    """A request refused before `handle` (its key, its body) is still one `switchyard.request` span, a child of
    the caller's, as its metric and log line count it: a trace query for a caller's failed requests found
    none of these, and their log line named no trace."""
    version = svc.router.current.version
    span = svc.telemetry.start("switchyard.request", trace_parent, kind=SpanKind.SERVER,
                               gen_ai__operation__name="chat", switchyard__router__version=version,
                               switchyard__tenant=trail.tenant.name if trail.tenant is not None else None)
    trail.trace_id, trail.router_version = trace_id_hex(span), version  # its log line said "", its span this
    _end_failed(span, exc)


def _end_failed(span: Span, exc: BaseException) -> None:
    """End a failed request's SERVER span: its error's type, and ERROR status for a server error."""
    set_attributes(span, error__type=type(exc).__name__)
    if _server_error(exc):
        span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
    span.end()


def _server_error(exc: BaseException) -> bool:
    """Whether a request's failure marks its SERVER span as an error: a 5xx, the gateway's or its
    upstreams' failure, as the HTTP conventions say; a 4xx is the caller's and leaves it unset, and so
    does a request cancelled because its client left."""
    if isinstance(exc, GatewayError):
        return exc.status >= 500
    return isinstance(exc, Exception)


def in_flight_cap(svc: Services, tenant: Tenant) -> int | None:
    """How many requests `tenant` may have in flight in this process: its own cap, else the gateway's;
    none for the caller of a gateway without keys (one caller: nobody to crowd out)."""
    if tenant is OPEN_TENANT:
        return None
    return tenant.max_concurrent_requests or svc.config.max_concurrent_requests_per_tenant


def _releasing(settle: Callable[[], Awaitable[None]], slot: Slot) -> Callable[[], Awaitable[None]]:
    async def settled() -> None:
        try:
            await settle()
        finally:
            slot.release()
    return settled


def _need(svc: Services, tenant: Tenant, r: Route) -> Need:
    """What the route may use at most: what its calls may be billed (`worst_case_billed`: attempts given
    up on that answer late, both legs of a hedge, a broken stream's continuation) and its worst-case
    tokens, held for its longest duration."""
    catalog = svc.catalog if r.terms is PLAIN else svc.catalog.under(r.terms)
    if r.terms is not PLAIN:
        if tenant.holds_budget:
            refuse_unpriced(catalog, r.plan, "its budget")
        elif (found := catalog.unpriced(r.plan)) is not None and (held := svc.unpriced_log.due(found)) is not None:
            # a client can send the field with every request: one line per deployment and field a while
            log.warning("deployment '%s' has no known price for `%s`: the call is billed without it (%d more "
                        "such requests since the last line)", *found, held,
                        extra={"event": "unpriced_field", "deployment": found[0], "field": found[1],
                               "suppressed": held})
    if not tenant.holds_budget and not tenant.counts_tokens:  # skip the worst-case arithmetic
        return NOTHING
    ttl = worst_case_duration_s(r.plan, svc.catalog) + HOLD_MARGIN_S
    reserve = r.billing.worst(r.plan, r.held_prompt_tokens, catalog, r.max_tokens, r.choices) \
        if tenant.holds_budget else 0.0
    legs = [r.plan]
    if r.billing.hedge_s(r.plan) is not None and isinstance(r.plan, Single):  # both legs' calls are made
        legs.append(Single(r.plan.fallbacks[0], r.plan.fallbacks[1:]))
    counted = sum(worst_case_tokens(leg, r.prompt_tokens, svc.catalog, r.max_tokens, r.choices)
                  for leg in legs) if tenant.counts_tokens else 0
    return Need(reserve, counted, ttl)


@dataclass(slots=True)
class _Ahead:
    """What a request needs, worked out inside the gate once the tenant may use its entry: a cached
    answer (nothing to hold, the request is still counted), or its route and that route's worst case."""

    svc: Services
    request: dict[str, Any]
    ctx: CallContext
    span: Span
    router: RememberingRouter
    trail: Trail
    tenant: Tenant
    entry: Entry
    deadline: Deadline
    key: str | None = None
    hit: CachedAnswer | None = None
    route: Route | None = None

    async def need(self) -> Need:
        svc, entry, trail, tenant = self.svc, self.entry, self.trail, self.tenant
        if entry.policy.spec.cache.enabled and is_cacheable(self.request, self.ctx.cache):
            self.key = svc.cache.key(entry.name, entry.pinned, entry.policy.version, tenant.name, self.request,
                                     self.ctx.overrides)
            self.hit = await svc.cache.lookup(self.key)
            svc.observer.looked_up(trail.policy, hit=self.hit is not None)
            if self.hit is not None:
                return NOTHING
        with svc.telemetry.span("switchyard.route", self.span,
                                switchyard__router__version=self.router.version) as route_span:
            r = self.route = route(svc, entry, self.request, self.ctx, tenant.name, self.router)
            trail.plan = r.plan
            set_attributes(route_span, switchyard__plan=r.plan.label,
                           switchyard__difficulty=r.decision.signal.difficulty if r.decision else None)
        return _need(svc, tenant, r)


async def _handle(svc: Services, request: dict[str, Any], ctx: CallContext, span: Span,
                  router: RememberingRouter, trail: Trail, tenant: Tenant, slot: Slot) -> Outcome:
    set_attributes(span, switchyard__tenant=tenant.name)  # before the model is resolved: a 404 is the tenant's too
    entry = resolve_entry(svc, request["model"], ctx, tenant)
    trail.policy = PINNED if entry.pinned else entry.policy.name
    # A pinned call borrows the default policy's settings, but no policy decided it: its line names no
    # version, as its span and its request record do not
    trail.policy_version = "" if entry.pinned else entry.policy.version
    deadline = request_deadline(entry.policy.spec.timeout_s, ctx.timeout_s)  # bounds every upstream call below
    set_attributes(span, switchyard__entry=entry.name,
                   switchyard__policy__version=None if entry.pinned else entry.policy.version)
    trace_id = trail.trace_id

    ahead = _Ahead(svc, request, ctx, span, router, trail, tenant, entry, deadline)
    held = await svc.auth.admit(tenant, entry.policy_name, ahead.need, pinned=entry.pinned)
    if ahead.route is not None:  # routed inside the gate, counted once through it
        count_traffic(svc, entry, ahead.route, tenant.name)
        if ahead.route.decision is not None:
            svc.observer.decided(trail.policy, ahead.route.plan)
    key, hit = ahead.key, ahead.hit
    if hit is not None:
        trail.cache, trail.plan_label, trail.deployment = "hit", hit.plan, hit.deployment
        await svc.ledger.record(Spent(time.time(), tenant.name, entry.policy_name, CACHE, hit.deployment, ()),
                                reservation=held)
        # the plan the answer came from, as its x-switchyard-plan says (a trace query by plan finds it)
        set_attributes(span, switchyard__cache="hit", switchyard__cost_usd=0.0, switchyard__plan=hit.plan)
        return Answer("hit", hit.plan, hit.deployment, trace_id, hit.body)
    r = ahead.route
    assert r is not None  # no cached answer: the gate routed the request
    plan, decision = r.plan, r.decision
    remember_prompt(r.messages, r.counted)  # calls without usage are billed on this count
    if r.capped and ctx.overrides.max_cost_usd is not None:
        key = None  # an answer cut short by this request's own cap must not be served to others
    cache_status: CacheStatus = "miss" if key else "bypass"
    trail.cache = cache_status
    ttl = entry.policy.spec.cache.ttl_s
    body = bounded_body(request, r)

    hedge_s = r.billing.hedge_s(plan)  # the policy's, unless a cost cap turned it off
    # calls given up on: billed if they answer late, and counted in flight until they end
    late_bills.set(LateBills(svc.ledger, held, tenant.name, entry.policy_name, plan.label, slot,
                             own_counterfactual(decision)))
    if svc.upstreams.isolating:  # what a deployment with isolate_prefix_cache is sent as cache_salt
        tenant_salt.set(svc.digests.cache_salt(tenant.name))
    prompts_logged.set(tenant.log_prompts)  # what the calls' failures may log of what they were sent
    waited = time.perf_counter()
    try:
        if request.get("stream") and isinstance(plan, Single):
            names, streamed = plan.deployments + plan.fallbacks, stream_body(body)
            live, losers = await open_stream(svc.upstreams, names, streamed, span, deadline, hedge_s)
            if r.billing.resumes:  # unless a cost cap turned it off
                live = resuming(svc.upstreams, live, names, streamed, span, deadline)  # if it breaks mid-way
            trail.upstream_s += time.perf_counter() - waited
            how = "fallback" if hedge_s is None else "hedge"
            label = plan.label if live.deployment == plan.deployment else f"{plan.label}>{how}:{live.deployment}"
            trail.plan_label, trail.deployment = label, live.deployment
            trail.ready_s = time.perf_counter() - trail.started  # its first chunk is in: the response begins
            relay = _LiveStream(svc, live, tenant.name, key, ttl, label, span, held, r, streamed,
                                Learning(ctx.request_id, tenant, entry, decision, request, r), trail, losers)
            return LiveAnswer(cache_status, label, live.deployment, trace_id, relay.chunks(), relay.settle, decision)
        whole = whole_body(body)
        result: Result = await (run(svc.upstreams, plan, whole, span, deadline) if hedge_s is None
                                else run_hedged(svc.upstreams, plan, whole, span, deadline, hedge_s, held.keep))
        trail.upstream_s += time.perf_counter() - waited
    except GatewayError as exc:
        # the attempts, back-offs and timeouts before the failure were waits on upstreams too: counted as the
        # gateway's own, one upstream timing out put its whole deadline into overhead_ms and the overhead metric
        trail.upstream_s += time.perf_counter() - waited
        if exc.billed:  # calls answered before the plan failed: they cost money, the request answered nothing
            await svc.ledger.record(Spent(time.time(), tenant.name, entry.policy_name, plan.label, "", exc.billed,
                                          decision, requests=0), reservation=held)
        else:
            await held.release()
        raise
    except BaseException:
        await held.release()
        raise
    trail.plan_label, trail.deployment = result.plan_label, result.deployment
    svc.observer.billed(trail, result.calls)
    await svc.ledger.record(Spent(time.time(), tenant.name, entry.policy_name, result.plan_label, result.deployment,
                                  result.calls, decision), reservation=held)
    set_attributes(span, switchyard__plan=result.plan_label, switchyard__cost_usd=result.cost_usd,
                   gen_ai__usage__input_tokens=result.usage.prompt_tokens,
                   gen_ai__usage__output_tokens=result.usage.completion_tokens, switchyard__cache=cache_status,
                   switchyard__evidence=result.evidence or None)  # JSON only if the span is recorded
    if key is not None:
        await svc.cache.save(key, result.body, result.deployment, result.plan_label, ttl)
    learn(svc, Learning(ctx.request_id, tenant, entry, decision, request, r),
          result.plan_label, result.deployment, result.calls, result.body)
    return Answer(cache_status, result.plan_label, result.deployment, trace_id, result.body, result.cost_usd,
                  decision, dict(result.evidence))


@dataclass(slots=True)
class Learning:
    """What a completed request's record (and its shadow evaluation) needs to know about it.
    Not frozen, though never changed: built on every request, where a frozen one costs ~1 µs more."""

    request_id: str
    tenant: Tenant
    entry: Entry
    decision: Decision | None
    request: dict[str, Any]
    route: Route


def learn(svc: Services, it: Learning, plan: str, deployment: str, calls: tuple[CallRecord, ...],
          body: dict[str, Any], recorded: bool = True) -> None:
    """Queue the request's record (unless `recorded` is False: it is written later, `keep_record`), and
    maybe a shadow job: no await, nothing on the response path."""
    record = keep_record(svc, it, plan, deployment, calls) if recorded else None
    shadow = it.entry.policy.shadow
    # A shadow label lands on the record it is about, so only a request whose record is written now is
    # offered (a stream read on after its client left is not: its client got part of an answer).
    if shadow is not None and svc.shadow is not None and record is not None and not it.entry.pinned:
        svc.shadow.offer(shadow, it.tenant, record, it.request, body, deployment, it.route.held_prompt_tokens,
                         it.entry.policy.spec.timeout_s, it.entry.policy.name)


def keep_record(svc: Services, it: Learning, plan: str, deployment: str,
                calls: tuple[CallRecord, ...]) -> Completed | None:
    """Queue the request's record, and return it (None when requests are not logged, or the request log's
    queue is full): no await."""
    # The record bills what `calls` were billed; beside it, the prompt as routing counted it (a pinned
    # request was not counted, and is not counted here: no tokenizer pass for it).
    if svc.requests is None or not it.request_id:
        return None
    record = Completed(
        it.request_id, time.time(), it.tenant, it.entry.name,
        None if it.entry.pinned else it.entry.policy.name, plan, deployment, it.request["messages"],
        it.decision.signal if it.decision else None, calls, it.route.counted, it.route.router_version,
        it.decision, None if it.entry.pinned else it.entry.policy.version)
    # A dropped record takes no label: a shadow of its request was billed to the tenant and then not stored.
    return record if svc.requests.add(record) else None


def deadline_s(policy_timeout_s: float, header_timeout_s: float | None) -> float:
    """How long the request may take: the policy's timeout_s, tightened (never loosened) by the client."""
    if header_timeout_s is not None and header_timeout_s < policy_timeout_s:
        return header_timeout_s
    return policy_timeout_s


def request_deadline(policy_timeout_s: float, header_timeout_s: float | None) -> Deadline:
    """The request's one deadline (`deadline_s`)."""
    return Deadline.after(deadline_s(policy_timeout_s, header_timeout_s))


def whole_body(request: dict[str, Any]) -> dict[str, Any]:
    """A whole answer's request, for a plan that answers whole even when the client streams: without
    `stream_options`, which OpenAI and vLLM refuse when `stream` is false."""
    body = {**request, "stream": False}
    body.pop("stream_options", None)
    return body


@dataclass(slots=True)
class _LiveStream:
    """One relayed stream and what its bookkeeping needs; `settle` runs exactly once, however it ends."""

    svc: Services
    live: OpenStream
    tenant: str
    key: str | None
    ttl: float
    label: str
    span: Span
    held: Reservation
    route: Route  # its prompt tokens bill a stream cut short
    body: dict[str, Any]  # what the upstream was asked (a stream read on after its client left holds its worst case)
    learning: Learning
    trail: Trail
    hedged: Losers = NO_LOSERS  # the legs a hedged stream's winner beat, billed with it
    acc: Accumulator = field(default_factory=Accumulator)
    relayed: bool = False  # its first chunk was read into `acc` (`chunks` ran)
    ended: bool = False    # the upstream stream was read to its end
    settled: bool = False
    # When the stream's first chunk was in (the wait for it is counted where it was opened): from then to its
    # settling, the relay waits on its upstreams, a resumed stream's broken call and continuation included.
    opened: float = field(default_factory=time.perf_counter)
    # Read on after its client left (`Upstreams.read_on`): the request's record waits for both the calls
    # billed when it settled and the read-on call's bill, whichever comes last.
    billed_at_settle: tuple[CallRecord, ...] | None = None
    read_on_bill: CallRecord | None = None

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """Pass chunks through; when the stream ends, however it ends, record its cost and cache it."""
        error: ProviderFailure | None = None
        live = self.live
        try:
            self.acc.add(live.first)
            self.relayed = True
            yield live.first
            usage_sent = False
            async for chunk in live.rest:
                self.acc.add(chunk)
                await self.held.keep()  # a stream may outlast its hold's time to live
                if chunk.get("usage"):  # headers are long gone: the usage chunk carries the cost
                    usage_sent = True
                    # The upstream's usage as it sent it, with both details objects, as every answer has them;
                    # a hedged stream's is the request's, its losing legs' included, as a whole answer's is.
                    losers = await self.hedged.records()
                    shaped = openai_shaped(chunk["usage"]) if not losers else \
                        sum((c.usage for c in losers), Usage.from_dict(chunk["usage"])).as_dict()
                    chunk = {**chunk, "usage": shaped, "switchyard": self._priced(losers)}
                yield chunk
            self.ended = True
            if not usage_sent and self.acc.finished:
                # An upstream that sends no usage (llama.cpp, some proxies) is billed on counted tokens; the
                # client that asked for a usage chunk gets those, as it would from OpenAI (the relay drops
                # this chunk for a client that did not ask). A resumed stream's continuation was counted
                # where it was spliced; its usage is summed over the calls, as a reported one is there.
                if not live.stats.usage.total_tokens:
                    live.stats.usage = self._counted()
                losers = await self.hedged.records()
                usage = sum((c.usage for c in (*live.earlier, *losers)), live.stats.usage)
                yield {**self.acc.meta, "object": "chat.completion.chunk", "choices": [],
                       "usage": usage.as_dict(), "switchyard": self._priced(losers)}
        except ProviderFailure as exc:
            error = exc  # the detail stays in the span and the log; the client learns what failed
            raise UpstreamError(f"deployment '{live.deployment}' failed mid-stream: {exc.reason}",
                                code="upstream_stream_failed") from exc
        finally:
            await self.settle(error)

    def _counted(self) -> Usage:
        """The stream's usage counted here, for an upstream that reported none: its routed prompt and what
        was relayed."""
        return Usage(self.route.prompt_tokens, self.acc.completion_tokens_estimate(),
                     prompt_audio_tokens=self.route.terms.audio_input)

    def _priced(self, losers: tuple[CallRecord, ...] = ()) -> dict[str, Any]:
        """What the usage chunk says beside the usage: the stream's cost so far (with the hedge legs it
        beat, `losers`), where and how it ran."""
        live = self.live
        cost = (self.svc.upstreams.prices[live.deployment].cost(live.stats.usage, live.terms)
                + sum(c.cost_usd for c in (*live.earlier, *losers)))
        # to the picodollar, as the cost header and the request's log line write it: a product of floats
        # carries noise (0.000014760000000000001)
        return {"cost_usd": rounded(cost, PICO), "deployment": live.deployment, "plan": self.label}

    async def settle(self, error: ProviderFailure | None = None) -> None:
        """Bill, trace and cache the stream. Also called after the response, for a client that left
        before the first chunk was relayed (then `chunks` never ran)."""
        if self.settled:
            return
        self.settled = True
        live, acc = self.live, self.acc
        if not self.relayed:  # the client left before it: the first chunk is still part of the call
            acc.add(live.first)
        upstream: tuple[CallRecord, ...] = ()
        if error is None and not self.ended:
            # The client left; the upstream has not stopped (a reasoning model's thinking, reported only in
            # its final usage chunk, is billed whether read or not): it is read on and billed when it ends.
            # Before any await: the response's cancellation must not stop the hand-over.
            self.svc.upstreams.read_on(live, acc, self.body, self._counted, self._read_on_ended)
        else:
            await live.rest.aclose()  # type: ignore[attr-defined]  # releases the upstream connection
            upstream = (await self.svc.upstreams.end_counted(live, self._counted, error),)
        # Not the live call's latency alone: that of a resumed stream's continuation starts at its first chunk,
        # and one handed over has none yet, so their broken start, the continuation's wait for its first
        # chunk and the relay until the client left were taken for the gateway's own overhead.
        self.trail.upstream_s += time.perf_counter() - self.opened
        # The usage a finished answer is cached with: all of it when it ended here; handed over (billed as a
        # late call when it ends, `Upstreams.read_on`), what was reported (else counted) up to now.
        usage = upstream[0].usage if upstream else live.stats.usage if live.stats.usage.total_tokens \
            else self._counted()
        losers = await self.hedged.records()
        calls = (*live.earlier, *upstream, *losers)
        # The request's span has every call billed with it (a resumed stream's broken start, the hedge legs it
        # beat), as its usage chunk, log line and ledger do: the live call's alone left them out. A call read on
        # after its client left is billed when it ends, on its own span (this one's child) and in the
        # `stream_read_on` line: its count so far, priced here, was a cost billed nowhere.
        spent, spent_usd = Usage(0, 0), 0.0
        for c in calls:
            spent, spent_usd = spent + c.usage, spent_usd + c.cost_usd
        self.svc.observer.billed(self.trail, calls)
        cut = "upstream_stream_failed" if error else None if acc.finished else "client_closed"
        # A stream its upstream broke is a failed request, counted and logged with the status of the error
        # it ended with, as the same failure of a whole answer is, though the response began as a 200.
        self.svc.observer.finish(self.trail, UpstreamError.status if error else 200, cut)
        it = self.learning
        await self.svc.ledger.record(Spent(time.time(), self.tenant, it.entry.policy_name, self.label,
                                           live.deployment, calls, it.decision),
                                     reservation=self.held)
        set_attributes(self.span, switchyard__plan=self.label, switchyard__cost_usd=spent_usd,
                       gen_ai__usage__input_tokens=spent.prompt_tokens,
                       gen_ai__usage__output_tokens=spent.completion_tokens,
                       switchyard__cache=self.trail.cache,  # as a whole answer's span has it
                       switchyard__stream_completed=acc.finished and error is None)
        if error is not None:  # the upstream's failure, told to the client as an error event: a failed request
            _end_failed(self.span, error)
        else:
            self.span.end()
        if acc.finished and error is None:
            body = acc.body(usage)
            if self.key is not None:
                await self.svc.cache.save(self.key, body, live.deployment, self.label, self.ttl)
            # hedge losers too; a stream read on is recorded when that call's bill is in (`_keep_record`)
            learn(self.svc, self.learning, self.label, live.deployment, calls, body, recorded=bool(upstream))
        if not upstream:
            self.billed_at_settle = calls
            self._keep_record()

    def _read_on_ended(self, record: CallRecord) -> None:
        self.read_on_bill = record
        self.svc.observer.billed(self.trail, (record,))  # its cost and tokens in the metrics, as it ended
        self._keep_record()

    def _keep_record(self) -> None:
        """A stream read on after its client left: its request's record, with every call's bill, once
        both are in (before, it had none, or one billed only what came before the client left)."""
        if self.billed_at_settle is not None and self.read_on_bill is not None:
            calls, read_on = (*self.billed_at_settle, self.read_on_bill), self.read_on_bill
            keep_record(self.svc, self.learning, self.label, self.live.deployment, calls)
            # The request's line was written as its client left: this one has the whole bill.
            log.info("a stream its client left was read to its end: billed $%.6f", read_on.cost_usd,
                     extra={"event": "stream_read_on", "request_id": self.trail.request_id,
                            "deployment": read_on.deployment, "input_tokens": read_on.usage.prompt_tokens,
                            "output_tokens": read_on.usage.completion_tokens, "cost_usd": read_on.cost_usd,
                            "request_cost_usd": sum(c.cost_usd for c in calls)})
