"""What each chat request leaves behind for operators: its metrics and its one log line.

The pipeline fills a `Trail` as the request goes (tenant, policy, plan, deployment, cache, tokens,
cost, time spent waiting on upstreams) and hands it to `Observer.finish` exactly once: when the
answer is ready, when the request fails (with the error's status and code), or, for a relayed
stream, when the stream settles. `finish` counts it and writes the `switchyard.request` line:

    {"time": "...", "level": "INFO", "logger": "switchyard.request", "message": "POST /v1/chat/completions 200",
     "event": "request", "request_id": "req_...", "trace_id": null, "tenant": "default", "policy": "balanced",
     "plan": "single:small", "deployment": "small", "status": 200, "cache": "miss", "stream": false,
     "input_tokens": 14, "output_tokens": 30, "cost_usd": 6.2e-06, "overhead_ms": 0.61,
     "upstream_ms": 4.1, "duration_ms": 4.71, ...}

`overhead_ms` is what the gateway added: the total minus the time spent waiting on upstream calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.auth import Tenant
from gateway.dashboard.stats import RequestStats
from gateway.decimals import MS, PICO, rounded
from gateway.executor.result import CallRecord
from gateway.logs import direct_handler
from gateway.messages import routing_prompt
from gateway.metrics import Cell, Metrics, Series, plan_kind
from gateway.plans import Plan

log = logging.getLogger("switchyard.request")
UNKNOWN = "none"   # a label not known when the request ended (401 before a tenant, 404 before a policy)
PINNED = "pinned"  # the policy label of a call that named a deployment (it was not routed)


@dataclass(slots=True)
class Trail:
    """One request's account, filled in by the pipeline. Not frozen: it is built up step by step."""

    request_id: str
    started: float  # time.perf_counter() when the request arrived
    trace_id: str | None = None
    tenant: Tenant | None = None
    policy: str = UNKNOWN
    policy_version: str = ""
    router_version: str = ""
    plan: Plan | None = None
    plan_label: str = ""
    deployment: str = UNKNOWN
    cache: str = "bypass"
    stream: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    upstream_s: float = 0.0
    ready_s: float | None = None  # a relayed stream: its time to its first chunk, the dashboard's latency of it
    messages: Sequence[Mapping[str, Any]] = ()
    finished: bool = False

    @property
    def planned(self) -> str:
        """The plan chosen, before any call answered: what a failed request's line names (as its metric's
        plan kind does); `plan_label` once one did (it names a fallback or an escalation too)."""
        return self.plan.label if self.plan is not None else ""


@dataclass(slots=True)
class _Outcome:
    """The instruments of one kind of ending (tenant, policy, plan kind, deployment, status), bound."""

    requests: Cell
    overhead: Series
    duration: Series


@dataclass(slots=True)
class _Bill:
    """The instruments of one (tenant, deployment, policy)'s calls, bound."""

    cost: Cell
    input_tokens: Cell
    output_tokens: Cell


class Observer:
    """Every measurement goes to an instrument bound to its label set the first time that set is seen
    (`Cell`, `Series`): a request's metrics are a few additions, not a label tuple and a look-up
    per instrument. Label sets are as bounded as the labels (configured names, statuses)."""

    def __init__(self, metrics: Metrics, tiers: Mapping[str, str], stats: RequestStats | None = None) -> None:
        self.metrics = metrics
        self.tiers = dict(tiers)  # deployment → tier, for the routing-mix counter
        self.stats = stats if stats is not None else RequestStats()  # this replica's recent requests (dashboard)
        self._decisions: dict[tuple[str, str], Cell] = {}
        self._bills: dict[tuple[str, str, str], _Bill] = {}
        self._outcomes: dict[tuple[str, str, str, str, int], _Outcome] = {}

    def decided(self, policy: str, plan: Plan) -> None:
        key = (policy, plan.deployments[0])
        cell = self._decisions.get(key)
        if cell is None:
            cell = self._decisions[key] = self.metrics.decisions.cell((policy, self.tiers.get(key[1], UNKNOWN)))
        cell.value += 1

    def looked_up(self, policy: str, hit: bool) -> None:
        self.metrics.cache.add((policy, "hit" if hit else "miss"))

    def billed(self, trail: Trail, calls: Sequence[CallRecord]) -> None:
        """Calls that answered this request: their cost and tokens, by deployment."""
        tenant = trail.tenant.name if trail.tenant is not None else UNKNOWN
        for c in calls:
            prompt, completion = c.usage.prompt_tokens, c.usage.completion_tokens
            trail.cost_usd += c.cost_usd
            trail.input_tokens += prompt
            trail.output_tokens += completion
            key = (tenant, c.deployment, trail.policy)
            bill = self._bills.get(key)
            if bill is None:
                bill = self._bills[key] = self._bill(key)
            bill.cost.value += c.cost_usd
            bill.input_tokens.value += prompt
            bill.output_tokens.value += completion

    def _bill(self, key: tuple[str, str, str]) -> _Bill:
        m = self.metrics
        return _Bill(m.cost.cell(key), m.tokens.cell((*key, "input")), m.tokens.cell((*key, "output")))

    def finish(self, trail: Trail, status: int, error_code: str | None = None) -> None:
        if trail.finished:
            return
        trail.finished = True
        total = time.perf_counter() - trail.started
        overhead = max(0.0, total - trail.upstream_s)
        tenant = trail.tenant.name if trail.tenant is not None else UNKNOWN
        key = (tenant, trail.policy, plan_kind(trail.plan) if trail.cache != "hit" else "cache", trail.deployment,
               status)
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = self._outcomes[key] = self._outcome(key)
        outcome.requests.value += 1
        outcome.overhead.record(overhead)
        outcome.duration.record(total)
        self.stats.observe(total if trail.ready_s is None else trail.ready_s, status)
        if (handler := direct_handler(log)) is not None:
            # the line straight to the one handler that writes it: no LogRecord to build and take apart
            handler.write(log.name, f"POST /v1/chat/completions {status}",
                          self._line(trail, tenant, status, error_code, total, overhead))
        elif log.isEnabledFor(logging.INFO):
            # makeRecord + handle is what log.info does, less its search of the stack for the caller's
            # file and line, which no format we write shows
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "POST /v1/chat/completions %d", (status,),
                                      None, extra=self._line(trail, tenant, status, error_code, total, overhead)))

    def _outcome(self, key: tuple[str, str, str, str, int]) -> _Outcome:
        m, (tenant, policy, kind, deployment, status) = self.metrics, key
        return _Outcome(m.requests.cell((tenant, policy, kind, deployment, str(status))), m.overhead.bound((policy,)),
                        m.duration.bound((policy, str(status))))

    @staticmethod
    def _line(trail: Trail, tenant: str, status: int, error_code: str | None, total: float,
              overhead: float) -> dict[str, Any]:
        line: dict[str, Any] = {
            "event": "request", "request_id": trail.request_id, "trace_id": trail.trace_id, "tenant": tenant,
            "policy": trail.policy, "policy_version": trail.policy_version, "plan": trail.plan_label or trail.planned,
            "deployment": trail.deployment, "status": status, "cache": trail.cache, "stream": trail.stream,
            "input_tokens": trail.input_tokens, "output_tokens": trail.output_tokens,
            "cost_usd": rounded(trail.cost_usd, PICO), "overhead_ms": rounded(overhead * 1000, MS),
            "upstream_ms": rounded(trail.upstream_s * 1000, MS), "duration_ms": rounded(total * 1000, MS),
            "router_version": trail.router_version,
        }
        if error_code is not None:
            line["error_code"] = error_code
        if trail.tenant is not None and trail.tenant.log_prompts and trail.messages:
            line["prompt"] = routing_prompt(trail.messages)
        return line
