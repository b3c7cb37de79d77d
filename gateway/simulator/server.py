"""The simulator's aiohttp application: routes, per-model stats, pacing."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .answers import Completion, compose_shaped, draw_answer, logprobs_payload, p_correct, usage_of
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

RECEIVED_KEPT = 256  # the headers of this many recent chat-completions requests, for tests to inspect
_UNRECORDED = frozenset({"authorization", "cookie"})


@dataclass(slots=True)
class _Counters:
    """Mutable on purpose: one per model, bumped on every call."""

    requests: int = 0
    errors: int = 0


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
        if self._fails(model, counters.requests):
            counters.errors += 1
            return _simulated_failure(model)
        completions = self._complete(model, call)
        if call.stream:
            return await stream_completions(request, model, call, completions)
        await _sleep_like_generation(model, max(c.completion_tokens for c in completions))
        return _json(_completion_body(model, call, completions))

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
        return [compose_shaped(a, call.shape, model.output_tokens, call.max_tokens, call.stop) for a in draws]

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": self._created, "owned_by": "switchyard-sim"}
            for name in self._models
        ]
        return _json({"object": "list", "data": data})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def stats(self, request: web.Request) -> web.Response:
        return _json({n: {"requests": c.requests, "errors": c.errors} for n, c in self._counters.items()})

    async def received(self, request: web.Request) -> web.Response:
        return _json(list(self._received))

    async def reset(self, request: web.Request) -> web.Response:
        for counters in self._counters.values():
            counters.requests = counters.errors = 0
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


async def _sleep_like_generation(model: SimModel, tokens: int) -> None:
    delay = model.ttft_ms / 1000.0
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
    if model.usage:
        body["usage"] = usage_of(call.prompt_tokens, completions)
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
        ]
    )
    return app
