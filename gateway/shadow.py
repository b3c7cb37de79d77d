"""Shadow evaluation: a stronger deployment answers a sample of requests in the background, and the
cheap answer the client got is labelled against it.

A policy's `shadow: {rate, against, judge}` (`gateway.plans.Shadow`). After a request answered by
a deployment cheaper than `against`, `offer` draws the sample and queues a job (never waits: a
full queue drops one, counted). The queue is shared fairly between tenants (`gateway.fair_queue`):
tenants are served in turn, a full queue drops the newest job of the tenant holding the most, and
one tenant runs at most `shadow_tenant_concurrency` jobs at once, so that one tenant's volume
cannot crowd out another's samples. A fixed number of workers (`shadow_concurrency`) run the jobs:
`against` answers the same messages, then the label is the exact agreement of the two extracted
answers when both are short (a letter, a number, a few words; `gateway.executor.answers`), else the
`judge` deployment's 0–10 grade of the cheap answer with the strong one as reference, ÷ 10. With
neither, the job ends unlabelled. The label is stored as feedback with source `judge` and origin
`gateway` on the request's record (no client can write that origin: `gateway.feedback`).

Shadow calls are billed to the tenant (a budget hold first, without touching its rate window: a
tenant whose budget is short is not shadowed) and counted apart in the ledger (`/v1/spend`,
plan kind `shadow`, under the policy's name), with role `shadow` / `judge` on their call records.
Nothing here can affect the client's response: it has been sent (or is being streamed) before a
job starts, and every failure of a shadow or judge call is caught, counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.auth import Authenticator, LogThrottle, Reservation, Tenant
from gateway.decimals import PICO, rounded
from gateway.errors import GatewayError
from gateway.executor import Deadline, Upstreams
from gateway.executor.answers import choice_letter, extract_answer
from gateway.executor.drain import late_bills
from gateway.executor.result import CallRecord
from gateway.fair_queue import FairQueue
from gateway.feedback import Completed, Feedback, RequestLog, not_found
from gateway.keyed import tenant_salt
from gateway.ledger import SHADOW, LateBills, Ledger
from gateway.logs import prompts_logged
from gateway.media_tokens import messages_audio_tokens
from gateway.messages import message_text
from gateway.plans import Shadow, Single
from gateway.policy import Catalog, worst_case_billed
from gateway.providers.terms import terms_of, with_audio_input
from gateway.state import request_key
from gateway.telemetry import Telemetry, set_attributes

log = logging.getLogger("switchyard.shadow")

SHORT_ANSWER_WORDS = 40  # longer answers are compared by the judge, not by their extracted answer
JUDGE_MAX_TOKENS = 8
JUDGE_PROMPT = (
    "You compare a candidate answer with a reference answer to the same question, written by a stronger "
    "model. Grade the candidate from 0 to 10: 10 if it is as correct and useful as the reference, 0 if it "
    "is wrong or useless. Reply with the number only."
)
_GRADE = re.compile(r"\d+(?:\.\d+)?")
# The scale as the prompt states it, which a judge may echo before its grade ("Grade (0-10): 8"): its
# 0 is no grade.
_SCALE = re.compile(r"\(?\b0\s*(?:-|\u2013|to)\s*10\b\)?", re.IGNORECASE)
_DROPPED_KEYS = ("model", "stream", "stream_options", "n")


@dataclass(frozen=True, slots=True)
class Job:
    shadow: Shadow
    tenant: Tenant
    record: Completed    # the request's record, which the label is stored with (its digest, once written)
    request: Mapping[str, Any]
    answer: str          # the text the client got
    answered_by: str
    prompt_tokens: int   # the prompt as budgets hold it (`Route.held_prompt_tokens`): what the calls are held at
    timeout_s: float
    policy: str | None = None  # whose shadow: its spend is billed under it

    @property
    def request_id(self) -> str:
        return self.record.request_id


def judge_messages(question: str, reference: str, candidate: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": JUDGE_PROMPT},
            {"role": "user", "content": f"Question:\n{question}\n\nReference answer:\n{reference}\n\n"
                                        f"Candidate answer:\n{candidate}\n\nGrade (0-10):"}]


def parse_grade(reply: str) -> float | None:
    """The judge's 0-10 grade as a share: the first number of its reply once an echoed scale is left out."""
    found = _GRADE.search(_SCALE.sub(" ", reply))
    if found is None:
        return None
    return min(10.0, float(found.group())) / 10.0


def agreement(cheap: str, strong: str) -> float | None:
    """1.0 / 0.0 when both answers are short enough to compare by their extracted answer, else None."""
    letters = choice_letter(cheap), choice_letter(strong)
    if letters[0] is not None and letters[1] is not None:
        return float(letters[0] == letters[1])
    if len(cheap.split()) > SHORT_ANSWER_WORDS or len(strong.split()) > SHORT_ANSWER_WORDS:
        return None
    a, b = extract_answer(cheap), extract_answer(strong)
    if a is None or b is None:
        return None
    return float(a == b)


def answer_text(body: Mapping[str, Any]) -> str:
    choices = body.get("choices") or [{}]
    return message_text((choices[0].get("message") or {}).get("content"))


class ShadowEvaluator:
    def __init__(self, upstreams: Upstreams, catalog: Catalog, auth: Authenticator, ledger: Ledger,
                 requests: RequestLog, telemetry: Telemetry, *, concurrency: int = 4, queue_size: int = 64,
                 tenant_concurrency: int | None = None) -> None:
        self.upstreams = upstreams
        self.catalog = catalog
        self.auth = auth
        self.ledger = ledger
        self.requests = requests
        self.telemetry = telemetry
        self.concurrency = concurrency
        # Tenants share the queue and the workers fairly (`gateway.fair_queue`): one tenant's volume
        # cannot crowd out every other tenant's samples.
        self._queue: FairQueue[Job] = FairQueue(queue_size, tenant_concurrency or -(-concurrency // 2))
        self._workers: list[asyncio.Task[None]] = []
        self._throttle = LogThrottle()
        self.counts = {"queued": 0, "dropped": 0, "labelled": 0, "unlabelled": 0, "failed": 0, "skipped_budget": 0}

    def cheaper(self, deployment: str, than: str) -> bool:
        a, b = self.catalog.prices[deployment], self.catalog.prices[than]
        return a.input_per_token + a.output_per_token < b.input_per_token + b.output_per_token

    def offer(self, shadow: Shadow, tenant: Tenant, record: Completed, request: Mapping[str, Any],
              answer: Mapping[str, Any], answered_by: str, prompt_tokens: int, timeout_s: float,
              policy: str | None = None) -> None:
        """Called after a request completes: maybe queue a shadow job. Never waits."""
        if random.random() >= shadow.rate or answered_by == shadow.against or \
                not self.cheaper(answered_by, shadow.against):
            return
        job = Job(shadow, tenant, record, request, answer_text(answer), answered_by, prompt_tokens, timeout_s,
                  policy)
        dropped = self._queue.put(tenant.name, job)
        if dropped is not job:
            self.counts["queued"] += 1
        if dropped is not None:
            self.counts["dropped"] += 1
            if self._throttle.due():
                log.warning("shadow queue full: a job of tenant %s dropped (%d so far)", dropped.tenant.name,
                            self.counts["dropped"])

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"switchyard.shadow.{i}")
                         for i in range(self.concurrency)]

    async def close(self) -> None:
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            tenant, job = await self._queue.get()
            try:
                await self.evaluate(job)
            except Exception:  # a worker must outlive any one job
                self.counts["failed"] += 1
                log.exception("shadow evaluation of request %s failed", job.request_id)
            finally:
                self._queue.done(tenant)

    def _worst_case(self, job: Job) -> float | None:
        """What the job's calls may be billed; None when its budget cannot bound them (the request asks
        for a web search, or sends audio, the strong deployment has no known price for)."""
        max_tokens = job.request.get("max_completion_tokens") or job.request.get("max_tokens")
        # the strong call is sent the request's own fields: held at the tier, search and audio they ask for,
        # and its audio prompt at the audio rate (the judge is sent text)
        terms = with_audio_input(terms_of(job.request), messages_audio_tokens(job.request.get("messages") or ()))
        against = self.catalog.under(terms)
        if against.prices[job.shadow.against].unpriced is not None and job.tenant.holds_budget:
            return None
        # Every attempt the deadline allows may be billed (one given up on at its timeout still answers late,
        # `executor.drain`), as the request path holds: one call's worth let a slow shadow overrun a budget.
        usd = worst_case_billed(Single(job.shadow.against), job.prompt_tokens, against, max_tokens,
                                within_s=job.timeout_s)
        if job.shadow.judge:
            # The judge reads the strong answer and the cheap one, each at most its own deployment's limit
            # (a cheap deployment may allow the longer answer), and its instructions (under 100 tokens).
            deployments = self.catalog.deployments
            read = (max_tokens or deployments[job.shadow.against].max_output_tokens) + (
                max_tokens or deployments[job.answered_by].max_output_tokens)
            usd += worst_case_billed(Single(job.shadow.judge), job.prompt_tokens + read + 100, self.catalog,
                                     JUDGE_MAX_TOKENS, within_s=job.timeout_s)
        return usd

    async def evaluate(self, job: Job) -> Feedback | None:
        """Run one job: the strong answer, the label, the bill. Returns the stored label, if any."""
        worst = self._worst_case(job)
        held = None if worst is None else await self.auth.hold(job.tenant, worst, job.timeout_s * 2 + 30)
        if held is None:
            self.counts["skipped_budget"] += 1
            return None
        calls: list[CallRecord] = []
        # A shadow call given up on (its timeout) but answering later is this tenant's shadow spend
        # too; the worker task outlives requests, so it sets the sink per job (`executor.drain`).
        late_bills.set(LateBills(self.ledger, held, job.tenant.name, job.policy, SHADOW))
        # The shadow and judge calls carry the tenant's prompt: its cache salt too, where a deployment asks.
        tenant_salt.set(self.requests.digests.cache_salt(job.tenant.name))
        prompts_logged.set(job.tenant.log_prompts)
        span = self.telemetry.start("switchyard.shadow", None, switchyard__tenant=job.tenant.name,
                                    switchyard__request_id=job.request_id, switchyard__against=job.shadow.against)
        try:
            label = await self._label(job, calls, span)
        except GatewayError as exc:
            self.counts["failed"] += 1
            set_attributes(span, error__type=type(exc).__name__)
            log.warning("shadow evaluation of request %s: %s", job.request_id, exc.message)
            label = None
        finally:
            span.end()
            await self._bill(job, held, calls)
        if label is None:
            return None
        await self.requests.wait_written(request_key(job.tenant.name, job.request_id))
        try:
            if job.record.digest is None:  # not written (dropped from a full queue)
                raise not_found()
            # on that very record: a later request reusing the id (its own record) was not evaluated
            await self.requests.put_feedback(job.tenant.name, label, about=job.record.digest)
        except GatewayError as exc:  # the record expired, was dropped, or the store is down
            self.counts["unlabelled"] += 1
            log.warning("shadow label of request %s not stored: %s", job.request_id, exc.message)
            return None
        self.counts["labelled"] += 1
        return label

    async def _bill(self, job: Job, held: Reservation, calls: list[CallRecord]) -> None:
        await self.ledger.record_shadow(job.tenant.name, tuple(calls), held, job.policy)

    async def _label(self, job: Job, calls: list[CallRecord], span: Any) -> Feedback | None:
        body = {k: v for k, v in job.request.items() if k not in _DROPPED_KEYS}
        deadline = Deadline.after(job.timeout_s)
        strong, rec = await self.upstreams.call((job.shadow.against,), {**body, "stream": False}, span,
                                                deadline=deadline, role="shadow")
        calls.append(rec)
        reference = answer_text(strong.body)
        # The reference's own cost beside it: an exported row lists it as a model of the prompt, whose cost
        # `router evaluate` and training weigh (a cost left out read as free).
        detail: dict[str, Any] = {"against": job.shadow.against, "answered_by": job.answered_by,
                                  "against_cost_usd": rounded(rec.cost_usd, PICO)}
        agreed = agreement(job.answer, reference)
        if agreed is not None:
            return Feedback(job.request_id, "judge", agreed, detail=detail | {"method": "agreement"},
                            origin="gateway")
        if job.shadow.judge is None:
            self.counts["unlabelled"] += 1
            return None
        question = message_text(job.request["messages"][-1].get("content"))
        ask = {"messages": judge_messages(question, reference, job.answer), "temperature": 0,
               "max_tokens": JUDGE_MAX_TOKENS}
        graded, judge_rec = await self.upstreams.call((job.shadow.judge,), ask, span, deadline=deadline, role="judge")
        calls.append(judge_rec)
        reply = answer_text(graded.body)
        grade = parse_grade(reply)
        if grade is None:
            self.counts["unlabelled"] += 1
            # the reply is the judge's reading of the tenant's question and answers: text only where its prompts are
            seen = repr(reply[:80]) if job.tenant.log_prompts else f"{len(reply)} characters (no log_prompts)"
            log.info("shadow judge of request %s gave no grade: %s", job.request_id, seen)
            return None
        return Feedback(job.request_id, "judge", grade,
                        detail=detail | {"method": "judge", "judge": job.shadow.judge}, origin="gateway")
