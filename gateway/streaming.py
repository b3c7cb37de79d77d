"""Server-sent events in the OpenAI format: encode chunks, rebuild a completion from them, replay one.

The accumulator turns a passed-through stream back into a complete chat.completion (for the
cache); `replay` does the reverse for answers that exist whole (cache hits, best-of-n, cascades),
so a streaming client sees the same protocol whatever the plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from gateway.messages import count_text
from gateway.providers.base import Usage

DONE = b"data: [DONE]\n\n"


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class Accumulator:
    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.texts: dict[int, list[str]] = {}
        self.roles: dict[int, str] = {}
        self.finish: dict[int, str | None] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.meta:
            self.meta = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        for choice in chunk.get("choices") or ():
            i = int(choice.get("index", 0))
            delta = choice.get("delta") or {}
            if delta.get("role"):
                self.roles[i] = delta["role"]
            if delta.get("content"):
                self.texts.setdefault(i, []).append(delta["content"])
            else:
                self.texts.setdefault(i, [])
            if choice.get("finish_reason"):
                self.finish[i] = choice["finish_reason"]

    @property
    def finished(self) -> bool:
        return bool(self.texts) and all(i in self.finish for i in self.texts)

    def completion_tokens_estimate(self) -> int:
        """Tokens relayed so far, counted (for streams that end without a usage chunk)."""
        return sum(count_text("".join(t)) for t in self.texts.values())

    def body(self, usage: Usage) -> dict[str, Any]:
        choices = [{"index": i, "message": {"role": self.roles.get(i, "assistant"), "content": "".join(t)},
                    "finish_reason": self.finish.get(i)} for i, t in sorted(self.texts.items())]
        return {**self.meta, "object": "chat.completion", "choices": choices, "usage": usage.as_dict()}


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
        for start in range(0, len(text), piece_chars):
            yield {**base, "choices": [{"index": i, "delta": {"content": text[start:start + piece_chars]},
                                        "finish_reason": None}]}
        if message.get("tool_calls"):
            calls = [{**call, "index": k} for k, call in enumerate(message["tool_calls"])]
            yield {**base, "choices": [{"index": i, "delta": {"tool_calls": calls}, "finish_reason": None}]}
        yield {**base, "choices": [{"index": i, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"}]}
    if include_usage and body.get("usage"):
        yield {**base, "choices": [], "usage": body["usage"]}
