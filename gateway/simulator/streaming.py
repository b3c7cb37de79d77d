"""Server-sent events for streamed completions, paced like a real model.

Chunks follow OpenAI exactly: a role chunk, content chunks of a few tokens, a
chunk per choice with ``finish_reason``, an optional usage chunk with empty
``choices``, then ``data: [DONE]``. Frames are pre-encoded around a shared
prefix so a chunk costs one small ``orjson.dumps``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import orjson
from aiohttp import web

from .answers import Completion, logprobs_payload, usage_of
from .faults import Fault
from .models import SimModel
from .protocol import FINGERPRINT, ChatCall, new_completion_id
from .tokens import split_pieces

TOKENS_PER_CHUNK = 4
# Pacing sleeps only when ahead by more than this, so chunks go out in batches.
_MIN_SLEEP_S = 0.002
_DONE = b"data: [DONE]\n\n"
_MALFORMED = b'data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n'


class Served(Protocol):
    """The model's counters: ``served`` once the first chunk is out, ``abandoned`` if it never is."""

    served: int
    abandoned: int


class _Framer:
    """Encodes ``chat.completion.chunk`` frames that share id, model and created."""

    def __init__(self, model: str, include_usage: bool, service_tier: str | None = None) -> None:
        head: dict[str, Any] = {
            "id": new_completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        if service_tier is not None:
            head["service_tier"] = service_tier
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":['
        # OpenAI sends "usage": null on every chunk when usage is requested.
        self._suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

    def choice(self, choice: dict[str, Any]) -> bytes:
        return self._prefix + orjson.dumps(choice) + self._suffix

    def usage(self, usage: dict[str, Any]) -> bytes:
        return self._prefix + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


async def stream_completions(
    request: web.Request, model: SimModel, call: ChatCall, completions: list[Completion],
    fault: Fault | None = None, counters: Served | None = None,
) -> web.StreamResponse:
    """Send ``completions`` as SSE, after ``ttft_ms`` and at ``tokens_per_s``, with ``fault`` if any."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    framer = _Framer(model.name, call.include_usage, call.service_tier)
    try:
        await _send(request, response, framer, model, call, completions, fault, counters)
    except ConnectionResetError:
        pass  # the client went away; nothing left to tell it
    return response


async def _first_chunk(request: web.Request, response: web.StreamResponse, pending: list[bytes], delay_s: float,
                       counters: Served | None) -> None:
    """The role chunks after the first-token delay: from here on the call is served (and billable)."""
    try:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        await response.write(b"".join(pending))
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError
    except (ConnectionResetError, asyncio.CancelledError):
        if counters is not None:
            counters.abandoned += 1  # the client left before the first token: nothing was delivered
        raise
    pending.clear()
    if counters is not None:
        counters.served += 1


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    framer: _Framer,
    model: SimModel,
    call: ChatCall,
    completions: list[Completion],
    fault: Fault | None,
    counters: Served | None,
) -> None:
    pieces = [_deltas(c) for c in completions]
    pending = [framer.choice(_delta(i, {"role": "assistant", "content": ""})) for i in range(len(pieces))]
    slow = fault.delay_s if fault is not None and fault.kind == "slow" else 0.0
    await _first_chunk(request, response, pending, model.ttft_ms / 1000.0 + slow, counters)
    loop = asyncio.get_running_loop()
    start = loop.time()
    steps = max((len(p) for p in pieces), default=0)
    cut = steps // 2 if fault is not None and fault.kind in ("drop_stream", "malformed") else None
    for step in range(steps):
        if step == cut:
            await _break_off(request, response, pending, fault)
            return
        if model.tokens_per_s > 0 and step:
            delay = start + step * TOKENS_PER_CHUNK / model.tokens_per_s - loop.time()
            if delay > _MIN_SLEEP_S:
                await response.write(b"".join(pending))
                pending.clear()
                await asyncio.sleep(delay)
        for index, choice_pieces in enumerate(pieces):
            if step < len(choice_pieces):
                pending.append(framer.choice(_content(index, choice_pieces[step], step, call, completions)))
    for index, completion in enumerate(completions):
        pending.append(framer.choice(_delta(index, {}, completion.finish_reason)))
    if call.include_usage and model.usage and not (fault is not None and fault.kind == "no_usage"):
        pending.append(framer.usage(usage_of(call.prompt_tokens, completions, call.audio_prompt_tokens)))
    pending.append(_DONE)
    await response.write(b"".join(pending))
    await response.write_eof()


async def _break_off(request: web.Request, response: web.StreamResponse, pending: list[bytes],
                     fault: Fault | None) -> None:
    """Half-way: send what is pending (plus a broken chunk for ``malformed``) and drop the connection."""
    if fault is not None and fault.kind == "malformed":
        pending.append(_MALFORMED)
    await response.write(b"".join(pending))
    transport = request.transport
    if transport is not None:
        transport.close()  # no finish chunk, no [DONE]: the stream just stops


def _delta(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _deltas(completion: Completion) -> list[dict[str, Any]]:
    """The deltas of one choice: content pieces, or a tool call's head then its arguments in pieces."""
    if not completion.tool_calls:
        return [{"content": piece} for piece in split_pieces(completion.content, TOKENS_PER_CHUNK)]
    out: list[dict[str, Any]] = []
    for k, call in enumerate(completion.tool_calls):
        function = call["function"]
        out.append({"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                    "function": {"name": function["name"], "arguments": ""}}]})
        out.extend({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}
                   for piece in split_pieces(function["arguments"], TOKENS_PER_CHUNK))
    return out


def _content(index: int, piece: dict[str, Any], step: int, call: ChatCall,
             completions: list[Completion]) -> dict[str, Any]:
    choice = _delta(index, piece)
    if call.logprobs and step == 0:
        # The answer's logprobs ride on the first content chunk of each choice.
        choice["logprobs"] = logprobs_payload(completions[index].answer, call.top_logprobs)
    return choice
