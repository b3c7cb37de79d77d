"""How each kind of plan runs. `RUNNERS` maps a plan type to its runner; a new plan kind adds one here."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from gateway.errors import GatewayError
from gateway.executor.deadline import Deadline
from gateway.executor.result import Result, with_usage
from gateway.executor.selectors import Selection, judge_messages, parse_judge_choice, vote
from gateway.executor.upstreams import CallRecord, Upstreams
from gateway.plans import BestOfN, Cascade, Plan, Single
from gateway.signal import message_text
from gateway.telemetry import as_json, set_attributes


def _result(body: dict[str, Any], deployment: str, label: str, calls: list[CallRecord],
            evidence: Mapping[str, Any] | None = None) -> Result:
    facts = dict(evidence or {})
    if evidence is not None:  # multi-call plans say what each call cost
        facts["calls"] = [{"deployment": c.deployment, "role": c.role, "cost_usd": c.cost_usd,
                           **c.usage.as_dict()} for c in calls]
    r = Result(body, deployment, label, tuple(calls), facts)
    return Result(with_usage(body, r.usage), deployment, label, r.calls, r.evidence)


async def run_single(up: Upstreams, plan: Single, body: dict[str, Any], span: Span | None,
                     deadline: Deadline) -> Result:
    done, record = await up.call(plan.deployments + plan.fallbacks, body, span, deadline=deadline)
    label = plan.label if record.deployment == plan.deployment else f"{plan.label}>fallback:{record.deployment}"
    return _result(done.body, record.deployment, label, [record])


def _texts(bodies: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """(choice, text) for every choice of every response, in order."""
    return [(c, message_text((c.get("message") or {}).get("content"))) for b in bodies for c in b.get("choices", [])]


@dataclass(frozen=True, slots=True)
class _Samples:
    choices: list[tuple[dict[str, Any], str]]  # (choice, text) for every sample, in order
    owners: list[str]                          # the deployment that produced each sample
    bodies: list[dict[str, Any]]               # the response body each sample came in
    calls: list[CallRecord]


async def _sample(up: Upstreams, samplers: tuple[str, ...], temperature: float, body: dict[str, Any],
                  span: Span | None, deadline: Deadline) -> _Samples:
    base = {**body, "temperature": temperature, "stream": False}
    base.pop("stream_options", None)
    if len(set(samplers)) == 1 and up.deployments[samplers[0]].supports_n:
        done, rec = await up.call(samplers[:1], {**base, "n": len(samplers)}, span, deadline=deadline,
                                  role="sample")
        outs = [(done, rec)]
    else:
        single = {**base, "n": 1}
        # Every sample runs to its end, even when one fails: the ones that answered are billed.
        got = await asyncio.gather(*(up.call((d,), single, span, deadline=deadline, role="sample")
                                     for d in samplers), return_exceptions=True)
        outs = [g for g in got if not isinstance(g, BaseException)]
        failed = next((g for g in got if isinstance(g, BaseException)), None)
        # A sample that failed after its retries leaves the others to choose from; only a bad request
        # (another sample would be refused too) or no answer at all fails the plan.
        if failed is not None and (not outs or not _upstream_fault(failed)):
            raise billing(failed, [rec for _, rec in outs])
    samples = _Samples([], [], [], [rec for _, rec in outs])
    for done, rec in outs:
        texts = _texts([done.body])
        samples.choices.extend(texts)
        samples.owners.extend([rec.deployment] * len(texts))
        samples.bodies.extend([done.body] * len(texts))
    return samples


async def _judge(up: Upstreams, judge: str, prompt: str | None, body: dict[str, Any], texts: list[str],
                 span: Span | None, deadline: Deadline) -> tuple[Selection, list[CallRecord]]:
    question = message_text(body["messages"][-1].get("content"))
    request = {"messages": judge_messages(question, texts, prompt), "temperature": 0, "max_tokens": 8}
    try:
        done, rec = await up.call((judge,), request, span, deadline=deadline, role="judge")
    except GatewayError as exc:
        fallback = vote(texts)
        return Selection(fallback.index, fallback.agreement,
                         {**fallback.evidence, "degraded_from": "judge", "reason": exc.message}), []
    reply = message_text(done.body["choices"][0]["message"].get("content"))
    choice = parse_judge_choice(reply, len(texts))
    if choice is None:
        fallback = vote(texts)
        return Selection(fallback.index, fallback.agreement,
                         {**fallback.evidence, "degraded_from": "judge",
                          "reason": f"judge reply had no candidate number: {reply[:80]!r}"}), [rec]
    return Selection(choice, 1.0, {"selector": "judge", "judge": judge, "choice": choice + 1,
                                   "reply": reply[:80]}), [rec]


def _pick(body: dict[str, Any], choices: list[tuple[dict[str, Any], str]], chosen: int, n: int) -> dict[str, Any]:
    """The chosen choice first, then the others, as the client's `n` choices."""
    order = [chosen] + [i for i in range(len(choices)) if i != chosen]
    picked = [{**choices[i][0], "index": k} for k, i in enumerate(order[:n])]
    return {**body, "choices": picked}


async def run_best_of(up: Upstreams, plan: BestOfN, body: dict[str, Any], span: Span | None,
                      deadline: Deadline) -> Result:
    samples = await _sample(up, plan.samplers, plan.temperature, body, span, deadline)
    calls = list(samples.calls)
    texts = [t for _, t in samples.choices]
    if plan.selector == "judge" and plan.judge:
        selection, judge_calls = await _judge(up, plan.judge, plan.judge_prompt, body, texts, span, deadline)
        calls += judge_calls
    else:
        selection = vote(texts)
    if span is not None:
        set_attributes(span, switchyard__selector=selection.evidence.get("selector"),
                       switchyard__agreement=selection.agreement,
                       switchyard__votes=as_json(selection.evidence.get("votes", {})))
    # The answering deployment is the one whose sample was chosen (never the judge).
    chosen = selection.index
    answer = _pick(samples.bodies[chosen], samples.choices, chosen, int(body.get("n") or 1))
    evidence = {**selection.evidence, "agreement": round(selection.agreement, 4), "samples": len(texts)}
    return _result(answer, samples.owners[chosen], plan.label, calls, evidence)


async def _confidence(up: Upstreams, plan: Cascade, step: str, body: dict[str, Any],
                      span: Span | None,
                      deadline: Deadline) -> tuple[dict[str, Any], float, list[CallRecord], dict[str, Any]]:
    if plan.confidence == "agreement" and plan.samples > 1:
        samples = await _sample(up, (step,) * plan.samples, 0.7, body, span, deadline)
        sel = vote([t for _, t in samples.choices])
        answer = _pick(samples.bodies[sel.index], samples.choices, sel.index, int(body.get("n") or 1))
        return answer, sel.agreement, samples.calls, sel.evidence
    ask = {**body, "stream": False, "logprobs": True} if plan.confidence == "logprob" else {**body, "stream": False}
    ask.pop("stream_options", None)
    done, rec = await up.call((step,), ask, span, deadline=deadline, role="sample")
    if plan.confidence == "logprob":
        tokens = ((done.body["choices"][0].get("logprobs") or {}).get("content")) or []
        conf = math.exp(sum(t["logprob"] for t in tokens) / len(tokens)) if tokens else 0.0
        return done.body, conf, [rec], {"confidence": "logprob", "tokens_scored": len(tokens)}
    text = message_text(done.body["choices"][0]["message"].get("content"))
    score, judge_calls = await _judge_score(up, plan, body, text, span, deadline)
    return done.body, score, [rec, *judge_calls], {"confidence": "judge", "score": score}


async def _judge_score(up: Upstreams, plan: Cascade, body: dict[str, Any], text: str,
                       span: Span | None, deadline: Deadline) -> tuple[float, list[CallRecord]]:
    question = message_text(body["messages"][-1].get("content"))
    request = {"messages": [
        {"role": "system", "content": "Rate how likely the answer is correct, from 0 to 10. Reply with the number."},
        {"role": "user", "content": f"Question:\n{question}\n\nAnswer:\n{text}\n\nScore (0-10):"}],
        "temperature": 0, "max_tokens": 8}
    try:
        done, rec = await up.call((str(plan.judge),), request, span, deadline=deadline, role="judge")
    except GatewayError:
        return 0.0, []  # no judgement means no confidence: escalate
    reply = message_text(done.body["choices"][0]["message"].get("content"))
    found = parse_judge_choice(reply, 12)
    return (min(10, found + 1) / 10 if found is not None else 0.0), [rec]


def _upstream_fault(exc: BaseException) -> bool:
    """A failure of the upstreams (5xx: failed, timed out, unavailable), not of the request (4xx)."""
    return isinstance(exc, GatewayError) and exc.status >= 500


def billing(exc: BaseException, calls: list[CallRecord]) -> BaseException:
    """`exc`, carrying the calls that answered before it (a GatewayError's `billed`) for the ledger."""
    if isinstance(exc, GatewayError) and calls:
        exc.billed = (*calls, *exc.billed)
    return exc


async def run_cascade(up: Upstreams, plan: Cascade, body: dict[str, Any], span: Span | None,
                      deadline: Deadline) -> Result:
    calls: list[CallRecord] = []
    try:
        return await _cascade(up, plan, body, span, deadline, calls)
    except GatewayError as exc:
        billing(exc, calls)
        raise


async def _cascade(up: Upstreams, plan: Cascade, body: dict[str, Any], span: Span | None,
                   deadline: Deadline, calls: list[CallRecord]) -> Result:
    trail: list[dict[str, Any]] = []
    for i, step in enumerate(plan.steps[:-1]):
        try:
            answer, conf, step_calls, evidence = await _confidence(up, plan, step, body, span, deadline)
        except GatewayError as exc:
            if not _upstream_fault(exc):
                raise
            calls += exc.billed  # a step that failed upstream escalates, as a step without confidence would
            trail.append({"step": step, "failed": exc.message, "escalated": "step failed"})
            continue
        calls += step_calls
        trail.append({"step": step, "confidence": round(conf, 4), "threshold": plan.threshold, **evidence})
        if conf >= plan.threshold:
            return _result(answer, step, f"{plan.label}:accepted" if i == 0 else f"{plan.label}:escalated",
                           calls, {"cascade": trail})
        trail[-1]["escalated"] = f"confidence {conf:.2f} < threshold {plan.threshold:g}"
    done, rec = await up.call(plan.steps[-1:], {**body, "stream": False}, span, deadline=deadline, role="escalation")
    return _result(done.body, rec.deployment, f"{plan.label}:escalated", [*calls, rec], {"cascade": trail})


Runner = Callable[[Upstreams, Any, dict[str, Any], "Span | None", Deadline], Awaitable[Result]]
RUNNERS: dict[type, Runner] = {Single: run_single, BestOfN: run_best_of, Cascade: run_cascade}


async def run(up: Upstreams, plan: Plan, body: dict[str, Any], span: Span | None, deadline: Deadline) -> Result:
    return await RUNNERS[type(plan)](up, plan, body, span, deadline)
