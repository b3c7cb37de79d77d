"""What several plan kinds' runners share: drawing samples, asking a judge, picking the answer,
assembling the `Result`, and billing the calls that answered before a plan failed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from gateway.decimals import PICO, rounded
from gateway.errors import GatewayError
from gateway.executor.deadline import Deadline
from gateway.executor.result import CallRecord, Result, with_usage
from gateway.executor.selectors import (
    Selection,
    answer_key,
    judge_messages,
    parse_judge_choice,
    score_messages,
    tool_calls_text,
    vote,
)
from gateway.executor.upstreams import Upstreams
from gateway.messages import message_text

JUDGE_MAX_TOKENS = 8  # what a judge may reply: a number (the worst case, gateway.plans.base, prices it)


def result(body: dict[str, Any], deployment: str, label: str, calls: list[CallRecord],
           evidence: Mapping[str, Any] | None = None) -> Result:
    facts = dict(evidence or {})
    if evidence is not None:  # multi-call plans say what each call cost
        facts["calls"] = [{"deployment": c.deployment, "role": c.role, "cost_usd": rounded(c.cost_usd, PICO),
                           **c.usage.as_dict(brief=True)} for c in calls]
    r = Result(body, deployment, label, tuple(calls), facts)
    return Result(with_usage(body, r.usage), deployment, label, r.calls, r.evidence)


def choice_text(choice: dict[str, Any]) -> str:
    """What a choice says, to a vote or a judge: its tool calls (`selectors.tool_calls_text`), then its text."""
    message = choice.get("message") or {}
    text = message_text(message.get("content"))
    calls = tool_calls_text(message)
    return f"{calls}\n{text}" if calls and text else calls or text


def texts(bodies: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """(choice, text) for every choice of every response, in order."""
    return [(c, choice_text(c)) for b in bodies for c in b.get("choices", [])]


@dataclass(frozen=True, slots=True)
class Samples:
    choices: list[tuple[dict[str, Any], str]]  # (choice, text) for every sample, in order
    owners: list[str]                          # the deployment that produced each sample
    bodies: list[dict[str, Any]]               # the response body each sample came in
    calls: list[CallRecord]


_SEEDS = 2**63  # a provider's seed is a signed 64-bit integer: derived ones are kept below its top


def seeded_apart(body: dict[str, Any], k: int) -> dict[str, Any]:
    """Sample `k`'s body when each sample is a call of its own. A provider draws the same answer to the same
    request and seed, so samples all sent the client's seed were one answer: a vote unanimous whatever the
    model knew, a cascade step that never escalates. Each gets its own seed, derived from the client's
    (the first keeps it), so the samples still differ and the whole plan is still reproducible."""
    seed = body.get("seed")
    if seed is None or k == 0:
        return body
    return {**body, "seed": (seed + k) % _SEEDS}


async def sample(up: Upstreams, samplers: tuple[str, ...], temperature: float, body: dict[str, Any],
                 span: Span | None, deadline: Deadline) -> Samples:
    """One sample from each of `samplers`, in the calls `gateway.plans.base.sampling_calls` prices. The
    client's `n` choices are picked from them, so fewer answers than that fail the plan."""
    base = {**body, "temperature": temperature, "stream": False}
    base.pop("stream_options", None)
    if len(set(samplers)) == 1 and up.deployments[samplers[0]].supports_n:
        done, rec = await up.call(samplers[:1], {**base, "n": len(samplers)}, span, deadline=deadline,
                                  role="sample")
        outs = [(done, rec)]
    else:
        single = {**base, "n": 1}
        # Every sample runs to its end, even when one fails: the ones that answered are billed.
        got = await asyncio.gather(*(up.call((d,), seeded_apart(single, k), span, deadline=deadline, role="sample")
                                     for k, d in enumerate(samplers)), return_exceptions=True)
        outs = [g for g in got if not isinstance(g, BaseException)]
        failed = next((g for g in got if isinstance(g, BaseException)), None)
        # A sample that failed after its retries leaves the others to choose from; only a bad request
        # (another sample would be refused too), or fewer answers than the client's choices, fails the plan.
        if failed is not None and (len(outs) < int(body.get("n") or 1) or not upstream_fault(failed)):
            raise billing(failed, [rec for _, rec in outs])
    samples = Samples([], [], [], [rec for _, rec in outs])
    for done, rec in outs:
        found = texts([done.body])
        samples.choices.extend(found)
        samples.owners.extend([rec.deployment] * len(found))
        samples.bodies.extend([done.body] * len(found))
    return samples


async def judge_select(up: Upstreams, judge: str, prompt: str | None, body: dict[str, Any], answers: list[str],
                       span: Span | None, deadline: Deadline) -> tuple[Selection, list[CallRecord]]:
    """The judge's pick among `answers`; a vote when the judge fails or names no candidate."""
    question = message_text(body["messages"][-1].get("content"))
    request = {"messages": judge_messages(question, answers, prompt), "temperature": 0,
               "max_tokens": JUDGE_MAX_TOKENS}
    try:
        done, rec = await up.call((judge,), request, span, deadline=deadline, role="judge")
    except GatewayError as exc:
        fallback = vote(answers)
        return Selection(fallback.index, fallback.agreement,
                         {**fallback.evidence, "degraded_from": "judge", "reason": exc.message}), []
    reply = message_text(done.body["choices"][0]["message"].get("content"))
    choice = parse_judge_choice(reply, len(answers))
    # Named as a vote names an answer (what it extracts, else a digest), never by its text: the evidence goes
    # to a header and the request's span whatever the tenant's log_prompts says, and the judge's reply may
    # quote the answers it judged.
    named = answer_key(reply)
    if choice is None:
        fallback = vote(answers)
        return Selection(fallback.index, fallback.agreement,
                         {**fallback.evidence, "degraded_from": "judge",
                          "reason": f"judge reply had no candidate number: {named}"}), [rec]
    return Selection(choice, 1.0, {"selector": "judge", "judge": judge, "choice": choice + 1,
                                   "reply": named}), [rec]


async def judge_score(up: Upstreams, judge: str, body: dict[str, Any], answer: str,
                      span: Span | None, deadline: Deadline) -> tuple[float, list[CallRecord]]:
    """The judge's confidence (0..1) that `answer` is right; 0 when it cannot tell."""
    question = message_text(body["messages"][-1].get("content"))
    request = {"messages": score_messages(question, answer), "temperature": 0, "max_tokens": JUDGE_MAX_TOKENS}
    try:
        done, rec = await up.call((judge,), request, span, deadline=deadline, role="judge")
    except GatewayError:
        return 0.0, []  # no judgement means no confidence: escalate
    reply = message_text(done.body["choices"][0]["message"].get("content"))
    found = parse_judge_choice(reply, 12)
    return (min(10, found + 1) / 10 if found is not None else 0.0), [rec]


def pick(body: dict[str, Any], choices: list[tuple[dict[str, Any], str]], chosen: int, n: int) -> dict[str, Any]:
    """The chosen choice first, then the others, as the client's `n` choices."""
    order = [chosen] + [i for i in range(len(choices)) if i != chosen]
    picked = [{**choices[i][0], "index": k} for k, i in enumerate(order[:n])]
    return {**body, "choices": picked}


def upstream_fault(exc: BaseException) -> bool:
    """A failure of the upstreams (5xx: failed, timed out, unavailable), not of the request (4xx)."""
    return isinstance(exc, GatewayError) and exc.status >= 500


def billing(exc: BaseException, calls: list[CallRecord]) -> BaseException:
    """`exc`, carrying the calls that answered before it (a GatewayError's `billed`) for the ledger."""
    if isinstance(exc, GatewayError) and calls:
        exc.billed = (*calls, *exc.billed)
    return exc
