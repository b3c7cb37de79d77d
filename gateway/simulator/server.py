"""The simulator's aiohttp application: routes, per-model stats, pacing."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .answers import (
    Answer,
    Completion,
    compose_shaped,
    continue_after,
    draw_answer,
    logprobs_payload,
    p_correct,
    usage_of,
)
from .faults import Fault, FaultTable, FaultUpdate
from .models import SimModel
from .prompts import difficulty_of, stable_hash, stable_uniform, truth_of
from .protocol import (
    FINGERPRINT,
    ChatCall,
    RequestError,
    error_response,
    new_completion_id,
    parse_chat_call,
)
from .streaming import stream_completions
from .tokens import count_tokens

RECEIVED_KEPT = 256  # the headers of this many recent chat-completions requests, for tests to inspect
_MALFORMED = b'{"id": "chatcmpl-broken", "choices": [{"message": '  # a body cut off mid-way
_UNRECORDED = frozenset({"authorization", "cookie"})


@dataclass(slots=True)
class _Counters:
    """Mutable on purpose: one per model, bumped on every call.

    ``served``: answers that reached the client in a readable form (whole, or a stream's first
    chunk), the calls a provider would bill; ``abandoned``: answers whose client had left before
    they were sent; ``errors``: requests answered with a failure (an error status, a dropped
    connection, an unreadable body); ``faults``: how many requests each injected fault kind hit.
    A request counts in exactly one of served, abandoned and errors once it has its verdict, so
    ``requests`` minus the three is how many are still in flight."""

    requests: int = 0
    errors: int = 0
    served: int = 0
    abandoned: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "served": self.served,
                "abandoned": self.abandoned, "faults": dict(self.faults)}


class Simulator:
    """Request handlers and the state they share (models, counters, RNG)."""

    def __init__(self, models: Sequence[SimModel], seed: int) -> None:
        self._models = {m.name: m for m in models}
        if len(self._models) != len(models):
            raise ValueError("simulated model names must be unique")
        self._counters = {name: _Counters() for name in self._models}
        self._rng = random.Random(seed)
        self._created = int(time.time())
        self._received: deque[dict[str, str]] = deque(maxlen=RECEIVED_KEPT)
        self._faults = FaultTable({m.name: m.faults for m in models})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        self._received.append({k.lower(): v for k, v in request.headers.items() if k.lower() not in _UNRECORDED})
        try:
            call = parse_chat_call(orjson.loads(await request.read()))
        except orjson.JSONDecodeError:
            return error_response(400, "The request body is not valid JSON.")
        except RequestError as exc:
            return error_response(400, exc.message, param=exc.param)
        model = self._models.get(call.model)
        if model is None:
            message = f"The model '{call.model}' does not exist."
            return error_response(404, message, param="model", code="model_not_found")
        counters = self._counters[model.name]
        counters.requests += 1
        if model.context_window is not None and call.prompt_tokens > model.context_window:
            counters.errors += 1
            message = (f"This model's maximum context length is {model.context_window} tokens; "
                       f"the messages have {call.prompt_tokens}.")
            return error_response(400, message, param="messages", code="context_length_exceeded")
        asked = call.prompt_tokens + (call.max_tokens or 0)
        if model.tpm_limit is not None and asked > model.tpm_limit:
            counters.errors += 1  # OpenAI's words (its type is "tokens"), the organisation left out
            message = (f"Request too large for {model.name} on tokens per min (TPM): Limit {model.tpm_limit}, "
                       f"Requested {asked}. The input or output tokens must be reduced in order to run "
                       f"successfully.")
            return error_response(429, message, code="rate_limit_exceeded")
        if self._fails(model, counters.requests):
            counters.errors += 1
            return _simulated_failure(model)
        return await self._answer(request, model, call, counters)

    async def _answer(self, request: web.Request, model: SimModel, call: ChatCall,
                      counters: _Counters) -> web.StreamResponse:
        """The answer once the request is accepted: faulted, streamed or whole."""
        fault = self._faults.draw(model.name, self._rng)
        if fault is not None:
            counters.faults[fault.kind] = counters.faults.get(fault.kind, 0) + 1
            failed = await _fail_early(request, model, fault)
            if failed is not None:
                counters.errors += 1
                return failed
        completions = self._complete(model, call)
        if call.stream:
            return await stream_completions(request, model, call, completions, fault, counters)
        slow = fault.delay_s if fault is not None and fault.kind == "slow" else 0.0
        try:
            await _sleep_like_generation(model, max(c.completion_tokens for c in completions), slow)
        except asyncio.CancelledError:
            counters.abandoned += 1  # the server cancelled the handler: its client is gone
            raise
        if request.transport is None or request.transport.is_closing():
            counters.abandoned += 1  # the client gave up waiting: nothing was delivered
            return web.Response()
        if fault is not None and fault.kind == "malformed":
            counters.errors += 1  # an answer no client can read: a failure, not served
            return web.Response(body=_MALFORMED, content_type="application/json")
        counters.served += 1
        body = _completion_body(model, call, completions)
        if fault is not None and fault.kind == "no_usage":
            body.pop("usage", None)
        return _json(body)

    def _fails(self, model: SimModel, nth_request: int) -> bool:
        if nth_request <= model.fail_first:
            return True
        return model.error_rate > 0 and self._rng.random() < model.error_rate

    def _complete(self, model: SimModel, call: ChatCall) -> list[Completion]:
        truth = truth_of(call.question)
        p = p_correct(model.ability, difficulty_of(call.question))
        if call.temperature == 0:
            u_correct = stable_uniform("correct", model.name, call.conversation)
            u_pick = stable_uniform("pick", model.name, call.conversation)
            answer = draw_answer(truth, p, u_correct, u_pick)
            draws = [answer] * call.n
        else:
            rng = self._rng if call.seed is None else _seeded(call, model)
            draws = [draw_answer(truth, p, rng.random(), rng.random()) for _ in range(call.n)]
        if call.prefill is None:
            return [compose_shaped(a, call.shape, model.output_tokens, call.max_tokens, call.stop) for a in draws]
        return [self._continue(model, call, a) for a in draws]

    def _continue(self, model: SimModel, call: ChatCall, drawn: Answer) -> Completion:
        """Only the rest of an answer whose start is the trailing assistant message."""
        prefill = call.prefill or ""
        limit = None if call.max_tokens is None else call.max_tokens + count_tokens(prefill)

        def full(answer: Answer) -> Completion:
            return compose_shaped(answer, call.shape, model.output_tokens, limit, call.stop)

        others = [full(Answer(token, False, p, drawn.candidates)) for token, p in drawn.candidates
                  if token != drawn.token]
        return continue_after(prefill, full(drawn), others)

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": self._created, "owned_by": "switchyard-sim"}
            for name in self._models
        ]
        return _json({"object": "list", "data": data})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def stats(self, request: web.Request) -> web.Response:
        return _json({n: c.as_dict() for n, c in self._counters.items()})

    async def faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                update = FaultUpdate.model_validate_json(await request.read())
                if update.model not in self._models:
                    return error_response(404, f"The model '{update.model}' does not exist.", param="model")
                self._faults.set(update.model, update.faults)
            except ValueError as exc:  # pydantic's ValidationError is one
                return error_response(400, f"Invalid faults: {exc}", param="faults")
        return _json(self._faults.listing())

    async def received(self, request: web.Request) -> web.Response:
        return _json(list(self._received))

    async def reset(self, request: web.Request) -> web.Response:
        for name in self._counters:
            self._counters[name] = _Counters()
        self._received.clear()
        return await self.stats(request)


def _seeded(call: ChatCall, model: SimModel) -> random.Random:
    # Same seed and same prompt give the same samples, as OpenAI's seed intends.
    return random.Random(stable_hash(str(call.seed), model.name, call.conversation))


def _simulated_failure(model: SimModel) -> web.Response:
    status = model.error_status
    wait = {"retry-after": f"{model.retry_after_s:g}"} if model.retry_after_s is not None else None
    if status == 429:
        message = f"Simulated rate limit reached for model '{model.name}'."
        return error_response(429, message, code="rate_limit_exceeded", headers=wait or {"retry-after": "0"})
    return error_response(status, f"Simulated upstream failure of model '{model.name}'.",
                          headers=wait if status == 503 else None)


async def _fail_early(request: web.Request, model: SimModel, fault: Fault) -> web.Response | None:
    """The answer to a fault that strikes before any token, or None when the answer goes ahead."""
    if fault.kind == "http_500":
        return error_response(500, f"Simulated upstream failure of model '{model.name}'.")
    if fault.kind == "http_429":
        return error_response(429, f"Simulated rate limit reached for model '{model.name}'.",
                              code="rate_limit_exceeded", headers={"retry-after": f"{fault.retry_after_s:g}"})
    if fault.kind in ("refuse", "hang"):
        if fault.kind == "hang":
            await asyncio.sleep(fault.delay_s)
        if request.transport is not None:
            request.transport.close()  # no status line at all: the client sees the connection drop
        return web.Response()
    return None


async def _sleep_like_generation(model: SimModel, tokens: int, extra_s: float = 0.0) -> None:
    delay = model.ttft_ms / 1000.0 + extra_s
    if model.tokens_per_s > 0:
        delay += tokens / model.tokens_per_s
    if delay > 0:
        await asyncio.sleep(delay)


def _completion_body(model: SimModel, call: ChatCall, completions: list[Completion]) -> dict[str, Any]:
    choices = []
    for index, completion in enumerate(completions):
        logprobs = logprobs_payload(completion.answer, call.top_logprobs) if call.logprobs else None
        choices.append(
            {
                "index": index,
                "message": _message(completion),
                "logprobs": logprobs,
                "finish_reason": completion.finish_reason,
            }
        )
    body: dict[str, Any] = {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model.name,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
    }
    if call.service_tier is not None:
        body["service_tier"] = call.service_tier
    if model.usage:
        body["usage"] = usage_of(call.prompt_tokens, completions, call.audio_prompt_tokens)
    return body


def _message(completion: Completion) -> dict[str, Any]:
    if completion.tool_calls:
        return {"role": "assistant", "content": None, "refusal": None, "tool_calls": list(completion.tool_calls)}
    return {"role": "assistant", "content": completion.content, "refusal": None}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def build_app(models: Sequence[SimModel], *, seed: int = 0) -> web.Application:
    """The simulator as an aiohttp application serving ``models``."""
    simulator = Simulator(models, seed)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.add_routes(
        [
            web.post("/v1/chat/completions", simulator.chat_completions),
            web.get("/v1/models", simulator.models),
            web.get("/healthz", simulator.healthz),
            web.get("/sim/stats", simulator.stats),
            web.get("/sim/received", simulator.received),
            web.post("/sim/reset", simulator.reset),
            # The same controls under the prefix a real model API never uses.
            web.get("/_sim/stats", simulator.stats),
            web.post("/_sim/reset", simulator.reset),
            web.get("/_sim/faults", simulator.faults),
            web.post("/_sim/faults", simulator.faults),
        ]
    )
    return app
