"""Live view of each deployment: latency and error statistics, and a circuit breaker.

The policy reads a `LiveView` snapshot (a pure input to `decide`); the executor reports outcomes.

A deployment's latency is predicted as its configured latency for the answer's length (its
`expected_ttft_ms` and `expected_tokens_per_s`) times its **pace**: a moving average of how long its
whole answers took against what the configuration predicts for them (their own output tokens, and a
prefill allowance for their prompt). The average of whole-call latencies it replaces mixed answers
of every length: one tenant asking for long answers made the deployment look slow to every
tenant's latency constraint (`latency_slo_ms`), which then routed them elsewhere or refused them.
A stream's duration is set by the client reading it, so streams feed only `ttft_ewma_s`. Each call
moves the pace by at most a bounded factor (`PACE_RANGE`).

The circuit: `failure_threshold` consecutive failures that say something about the deployment
(see `ProviderFailure.counts_against_deployment`) open it for `cooldown_s`. After the cooldown it
half-opens: `admit` lets exactly ONE trial call through while every other caller still skips it.
A successful trial closes the circuit; a failed one re-opens it for another cooldown; a trial that
ends without a verdict (the request's own fault, a cancelled call) lets the next caller try.
Each transition (open, half-open, closed) is a `switchyard.circuit` log line with `event: circuit`.

A whole answer that runs into the deployment's `timeout_s` says little about the deployment by
itself: how long a whole answer takes is the request's doing as much as the deployment's (its
`max_tokens`, or none, or a prompt asking for a long text). Such a timeout is explained when the
deployment answered someone else meanwhile (`answered_since`: a call to it ended well, or a stream's
first chunk came, between the timed-out call's start and its timeout): it then counts for nothing.
One that nothing explains is, on the direct path (OpenAI-compatible servers,
`Backend.streams_whole_answers`, `whole_answers_as_streams: when_needed`), held (`unexplained`)
rather than counted, and the deployment's next calls, whole answers included, are asked for as
streams (rebuilt for their clients) until one settles it: a first token within `timeout_s` shows the
deployment answering and clears what was held; none in time counts the held timeouts with it (and
whole answers stay streams while the deployment is failing, so each timeout is its own verdict). A
half-open circuit's trial is asked for as a stream the same way, so its first token is its verdict.
One tenant asking a quiet deployment (nobody else calls it) for long answers, or taking each
half-open trial with one, used to open the circuit or keep it open for every tenant; a hung
deployment, which sends no first token, still opens it. Reading an answer as a stream costs about
1 ms of CPU more than reading it whole (the pinned overhead benchmark: 2.4 vs 1.2 CPU s per 1,000
requests), so busy traffic, where other answers explain a long one, stays whole
(`whole_answers_as_streams: always` streams every whole answer).
Whole answers that cannot be asked for as streams (through litellm; audio output, which OpenAI
streams only as pcm16; `whole_answers_as_streams: never`) keep the plain rule: a timeout (or an
upstream's own: a proxy's 504, a server's 408) that nothing explains counts, so there a quiet
deployment's or a trial's long answer still counts. A stream whose first chunk is late is judged the
same way (a long prompt's prefill or a response schema to compile makes the request's own wait): it
counts for nothing when the deployment answered someone else meanwhile and counts otherwise; a late
next chunk counts always. The evidence is one timestamp per
deployment (`answered_at`) read against the failed call's start: O(1) on the hot path, and per
process as the breaker is.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

from gateway.config import DeploymentConfig

Admission = Literal["closed", "trial"]
CircuitState = Literal["closed", "half_open", "open"]
log = logging.getLogger("switchyard.circuit")


@dataclass(slots=True)
class DeploymentHealth:
    failure_threshold: int = 5
    cooldown_s: float = 15.0
    consecutive_failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False
    latency_ewma_s: float | None = None
    ttft_ewma_s: float | None = None
    pace_ewma: float | None = None  # observed ÷ configured latency of whole answers
    calls: int = 0
    failures: int = 0
    # Whole answers' timeouts that nothing explained yet, held until a call asked for as a stream
    # shows whether the deployment answers (see the module's docstring).
    unexplained: int = 0
    # When a call last ended well (monotonic): a whole answer, a stream's first chunk or its end.
    answered_at: float = -math.inf
    name: str = ""  # the deployment, for the log line of each transition

    def state(self, now: float) -> CircuitState:
        """closed; open (cooling down); half_open (cooled down: a trial may go, or is out)."""
        if self.opened_at is None:
            return "closed"
        return "open" if now - self.opened_at < self.cooldown_s else "half_open"

    def _moved(self, state: CircuitState, was: CircuitState) -> None:
        log.warning("circuit of deployment '%s' is %s (was %s)", self.name, state.replace("_", "-"), was,
                    extra={"event": "circuit", "deployment": self.name, "state": state, "was": was,
                           "consecutive_failures": self.consecutive_failures})

    def is_open(self, now: float) -> bool:
        """Open = skip this deployment: cooling down, or half-open with its one trial already out."""
        if self.opened_at is None:
            return False
        return self.trial_in_flight or now - self.opened_at < self.cooldown_s

    def admit(self, now: float) -> Admission | None:
        """May a call go now? "closed": yes; "trial": yes, as the half-open circuit's one trial; None: no."""
        if self.opened_at is None:
            return "closed"
        if self.trial_in_flight or now - self.opened_at < self.cooldown_s:
            return None
        self.trial_in_flight = True
        self._moved("half_open", "open")
        return "trial"

    def retry_after_s(self, now: float) -> int:
        """Whole seconds until a call may be admitted again (at least 1 while the circuit is open)."""
        if self.opened_at is None:
            return 0
        return max(1, math.ceil(self.cooldown_s - (now - self.opened_at)))

    def record_success(self, latency_s: float, ttft_s: float | None = None, *,
                       configured_s: float | None = None) -> None:
        """`configured_s`: what the configuration predicts for this very answer (a whole answer's
        output and prompt); None for a stream, whose pace is its reader's."""
        self.calls += 1
        self.consecutive_failures = 0
        self.unexplained = 0
        self.answered_at = time.monotonic()
        if self.opened_at is not None:  # the trial, or a call that was out when the circuit opened
            self._moved("closed", "half_open" if self.trial_in_flight else "open")
        self.opened_at = None
        self.trial_in_flight = False
        self.latency_ewma_s = _ewma(self.latency_ewma_s, latency_s)
        if ttft_s is not None:
            self.ttft_ewma_s = _ewma(self.ttft_ewma_s, ttft_s)
        if configured_s is not None and configured_s > 0:
            low, high = PACE_RANGE
            self.pace_ewma = _ewma(self.pace_ewma, min(high, max(low, latency_s / configured_s)))

    def record_failure(self, now: float, *, trial: bool = False, hung: bool = False) -> None:
        """A failure that says something about the deployment. A failed trial re-opens at once.
        `hung`: a call asked for as a stream sent no first token in time, which settles the held
        whole-answer timeouts: they count too."""
        held = self.unexplained if hung else 0
        self.unexplained -= held
        self.calls += 1
        self.failures += 1 + held
        self.consecutive_failures += 1 + held
        if trial:
            self.trial_in_flight = False
        if trial or self.consecutive_failures >= self.failure_threshold:
            if trial or self.opened_at is None:
                self._moved("open", "half_open" if trial else "closed")
            self.opened_at = now

    def hold_unexplained(self, *, trial: bool = False) -> None:
        """A whole answer's timeout that nothing explains, on a path that can ask for a stream: held
        until a streamed call settles it (`needs_verdict`)."""
        self.record_neutral(trial=trial)
        self.unexplained += 1

    @property
    def needs_verdict(self) -> bool:
        """Should whole answers be asked for as streams, each its own verdict? While timeouts are held
        for one, and while the deployment is failing (until a call ends well), so that a hung
        deployment's every timeout counts at once."""
        return self.unexplained > 0 or self.consecutive_failures > 0

    def answered_since(self, started: float) -> bool:
        """Did a call end well at or after `started` (monotonic)? One comparison: it runs per failure."""
        return self.answered_at >= started

    def first_chunk(self, *, trial: bool = False) -> None:
        """A stream's first chunk came in time: the deployment is answering (and a trial has passed);
        the whole-answer timeouts held were the requests' length."""
        self.answered_at = time.monotonic()
        self.unexplained = 0
        if trial:
            self.trial_passed()

    def trial_passed(self) -> None:
        """A trial that has shown the deployment answers (a stream's first chunk) closes the circuit."""
        self.consecutive_failures = 0
        if self.opened_at is not None:
            self._moved("closed", "half_open")
        self.opened_at = None
        self.trial_in_flight = False

    def record_neutral(self, *, trial: bool = False) -> None:
        """A call that says nothing about the deployment (the request's fault, cancelled, deadline)."""
        self.calls += 1
        if trial:
            self.trial_in_flight = False


# One call's pace is taken within these bounds: a single answer stuck until its timeout (or one served
# from a provider's cache in no time) moves the average by at most a factor, not by fifty.
PACE_RANGE = (0.1, 10.0)
# Prompt tokens a provider reads per second before answering, for a whole answer's configured latency
# when its pace is measured: a long prompt's answer is not taken as a slow deployment (hosted models
# read several thousand tokens a second; a lower figure would let a flood of huge prompts pass for a
# slowdown less easily, but would excuse real slowness of long prompts more).
PREFILL_TOKENS_PER_S = 5_000.0


def configured_latency_ms(d: DeploymentConfig, output_tokens: float, prompt_tokens: int = 0) -> float:
    """What `d`'s configuration predicts for an answer `output_tokens` long (`expected_ttft_ms`,
    `expected_tokens_per_s`), its prompt's reading included when one is given (a whole answer whose
    pace is measured). The one formula: plans' estimates, their prepared tables and the pace use it."""
    ms = d.expected_ttft_ms + 1000 * output_tokens / d.expected_tokens_per_s
    return ms + 1000 * prompt_tokens / PREFILL_TOKENS_PER_S if prompt_tokens else ms


def _ewma(previous: float | None, value: float, alpha: float = 0.2) -> float:
    return value if previous is None else (1 - alpha) * previous + alpha * value


_NONE_OPEN: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LiveView:
    """What the policy may know about live state: open circuits and observed paces."""

    open_circuits: frozenset[str] = frozenset()
    pace: dict[str, float] = field(default_factory=dict)  # observed ÷ configured latency, per deployment


class HealthBoard:
    def __init__(self, names: list[str], *, failure_threshold: int = 5, cooldown_s: float = 15.0) -> None:
        self._health = {n: DeploymentHealth(failure_threshold, cooldown_s, name=n) for n in names}

    def __getitem__(self, name: str) -> DeploymentHealth:
        return self._health[name]

    def view(self) -> LiveView:
        # Once per routed request: a circuit that never opened is skipped without a call, and with
        # none open (the usual case) the view shares one empty set.
        now = time.monotonic()
        opened = [n for n, h in self._health.items() if h.opened_at is not None and h.is_open(now)]
        return LiveView(frozenset(opened) if opened else _NONE_OPEN,
                        {n: h.pace_ewma for n, h in self._health.items() if h.pace_ewma is not None})

    def states(self) -> dict[str, CircuitState]:
        now = time.monotonic()
        return {n: h.state(now) for n, h in self._health.items()}

    def snapshot(self) -> dict[str, dict[str, float | int | bool | str | None]]:
        """`circuit` is the state `switchyard_circuit_state` reports; `circuit_open` whether calls skip it
        (a half-open circuit is skipped only while its trial is out)."""
        now = time.monotonic()
        return {n: {"calls": h.calls, "failures": h.failures, "circuit": h.state(now), "circuit_open": h.is_open(now),
                    "latency_ewma_s": h.latency_ewma_s, "pace": h.pace_ewma} for n, h in self._health.items()}
