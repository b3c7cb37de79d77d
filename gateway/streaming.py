"""Server-sent events in the OpenAI format: encode chunks, rebuild a completion from them, replay one.

The accumulator turns a passed-through stream back into a complete chat.completion (for the
cache); `replay` does the reverse for answers that exist whole (cache hits, best-of-n, cascades),
so a streaming client sees the same protocol whatever the plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from gateway.messages import count_text, reasoning_text
from gateway.providers.base import Usage

DONE = b"data: [DONE]\n\n"


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def stream_body(body: dict[str, Any]) -> dict[str, Any]:
    """`body` as an upstream stream's request, asking for usage whatever the client asked: every
    streamed call (a relayed stream, a hedge's leg, a whole answer read from a stream) is priceable."""
    return {**body, "stream": True, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}


# A message's text fields besides `content` that a stream sends in pieces: kept, so that a whole answer
# rebuilt from a stream carries them as the server's whole answer would.
_PIECED = ("refusal", "reasoning_content", "reasoning")


class Accumulator:
    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.texts: dict[int, list[str]] = {}
        self.pieced: dict[int, dict[str, list[str]]] = {}  # choice -> refusal / reasoning pieces
        self.annotations: dict[int, list[Any]] = {}  # choice -> its citations (a web search's)
        self.roles: dict[int, str] = {}
        self.finish: dict[int, str | None] = {}
        self.calls: dict[int, dict[int, dict[str, Any]]] = {}  # choice -> tool call index -> call so far
        self.logprobs: dict[int, list[Any]] = {}
        self.thought: list[str] = []  # reasoning deltas, of every choice: only counted

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.meta:
            self.meta = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("service_tier"):  # the tier it ran under, which its price follows
            self.meta["service_tier"] = chunk["service_tier"]
        for choice in chunk.get("choices") or ():
            i = int(choice.get("index", 0))
            delta = choice.get("delta") or {}
            if delta.get("role"):
                self.roles[i] = delta["role"]
            if thought := reasoning_text(delta):
                self.thought.append(thought)
            if delta.get("content"):
                self.texts.setdefault(i, []).append(delta["content"])
            else:
                self.texts.setdefault(i, [])
            for name in _PIECED:
                if isinstance(piece := delta.get(name), str) and piece:
                    self.pieced.setdefault(i, {}).setdefault(name, []).append(piece)
            if isinstance(delta.get("annotations"), list):
                self.annotations.setdefault(i, []).extend(delta["annotations"])
            if delta.get("tool_calls"):
                self._add_calls(i, delta["tool_calls"])
            if (choice.get("logprobs") or {}).get("content"):
                self.logprobs.setdefault(i, []).extend(choice["logprobs"]["content"])
            if choice.get("finish_reason"):
                self.finish[i] = choice["finish_reason"]

    def _add_calls(self, i: int, deltas: list[dict[str, Any]]) -> None:
        """Tool calls arrive as a head (id, type, name) and then their arguments in pieces."""
        calls = self.calls.setdefault(i, {})
        for d in deltas:
            call = calls.setdefault(int(d.get("index", 0)), {"id": None, "type": "function",
                                                             "function": {"name": "", "arguments": ""}})
            call["id"] = d.get("id") or call["id"]
            call["type"] = d.get("type") or call["type"]
            function = d.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""

    @property
    def finished(self) -> bool:
        return bool(self.texts) and all(i in self.finish for i in self.texts)

    def completion_tokens_estimate(self) -> int:
        """Tokens relayed so far, counted (for streams that end without a usage chunk): the answers, their
        tool calls and the reasoning streamed before them."""
        text = sum(count_text("".join(t)) for t in self.texts.values()) + count_text("".join(self.thought))
        return text + sum(count_text(c["function"]["name"] + c["function"]["arguments"])
                          for calls in self.calls.values() for c in calls.values())

    def body(self, usage: Usage) -> dict[str, Any]:
        return {**self.meta, "object": "chat.completion", "choices": [self._choice(i) for i in sorted(self.texts)],
                "usage": usage.as_dict()}

    def _choice(self, i: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.roles.get(i, "assistant"), "content": "".join(self.texts[i])}
        if i in self.calls:
            message["tool_calls"] = [self.calls[i][k] for k in sorted(self.calls[i])]
            message["content"] = message["content"] or None
        for name, pieces in self.pieced.get(i, {}).items():
            message[name] = "".join(pieces)
        if i in self.annotations:
            message["annotations"] = self.annotations[i]
        choice = {"index": i, "message": message, "finish_reason": self.finish.get(i)}
        if i in self.logprobs:
            choice["logprobs"] = {"content": self.logprobs[i]}
        return choice


def replay(body: dict[str, Any], include_usage: bool, piece_chars: int = 24) -> Iterator[dict[str, Any]]:
    """A complete chat.completion as a stream of chunks, in pieces of about `piece_chars` characters."""
    base = {"id": body.get("id"), "object": "chat.completion.chunk", "created": body.get("created"),
            "model": body.get("model")}
    for choice in body.get("choices") or ():
        i = choice.get("index", 0)
        message = choice.get("message") or {}
        yield {**base, "choices": [{"index": i, "delta": {"role": message.get("role", "assistant"), "content": ""},
                                    "finish_reason": None}]}
        text = message.get("content") or ""
        logprobs = choice.get("logprobs")
        for start in range(0, len(text), piece_chars):
            # The choice's logprobs ride on its first content chunk.
            yield {**base, "choices": [{"index": i, "delta": {"content": text[start:start + piece_chars]},
                                        "logprobs": logprobs if start == 0 else None, "finish_reason": None}]}
        if message.get("tool_calls"):
            calls = [{**call, "index": k} for k, call in enumerate(message["tool_calls"])]
            yield {**base, "choices": [{"index": i, "delta": {"tool_calls": calls}, "finish_reason": None}]}
        yield {**base, "choices": [{"index": i, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"}]}
    if include_usage and body.get("usage"):
        yield {**base, "choices": [], "usage": body["usage"]}
