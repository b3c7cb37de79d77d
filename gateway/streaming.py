"""Server-sent events in the OpenAI format: encode chunks, rebuild a completion from them, replay one.

The accumulator turns a passed-through stream back into a complete chat.completion (for the
cache); `replay` does the reverse for answers that exist whole (cache hits, best-of-n, cascades),
so a streaming client sees the same protocol whatever the plan.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
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


def choices_asked(body: dict[str, Any]) -> int:
    """The choices a request's `n` asks for (1 when it names none)."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


class Choices:
    """The choices a stream has spoken for and those it finished: its answer is whole once every one it
    spoke for has its finish_reason, whatever becomes of the connection after (`[DONE]`, a usage chunk),
    and at least `expected` (the request's `n`) have: a server may begin a choice only when another ends."""

    __slots__ = ("begun", "called", "expected", "finished")

    def __init__(self, expected: int = 1) -> None:
        self.begun: set[int] = set()
        self.finished: set[int] = set()
        self.called: set[int] = set()  # choices that sent tool calls
        self.expected = expected

    def add(self, chunk: dict[str, Any]) -> None:
        for c in chunk.get("choices") or ():
            index = c.get("index", 0)
            self.begun.add(index)
            if c.get("finish_reason"):
                self.finished.add(index)
            delta = c.get("delta")
            if isinstance(delta, dict) and (delta.get("tool_calls") or delta.get("function_call")):
                self.called.add(index)

    def ended(self, last: dict[str, Any]) -> dict[str, Any] | None:
        """The chunk that gives every begun choice without a finish_reason one (`tool_calls` for a choice
        that called tools, as a client branches on it, else `stop`), with `last`'s id and model: for a server
        whose `[DONE]` ended answers it never marked finished. Relayed as they were, they read to the client
        as unfinished (no finish_reason, and no usage chunk after it)."""
        open_ = sorted(self.begun - self.finished)
        if not open_:
            return None
        self.finished.update(open_)
        head: dict[str, Any] = {k: last[k] for k in ("id", "object", "created", "model") if k in last}
        return {**head, "choices": [{"index": i, "delta": {},
                                     "finish_reason": "tool_calls" if i in self.called else "stop"}
                                    for i in open_]}

    @property
    def answered(self) -> bool:
        return whole(self.begun, self.finished, self.expected)


def whole(begun: Collection[int], finished: Collection[int], expected: int = 1) -> bool:
    """Is a streamed answer whole: every choice it began finished, and at least `expected` of them."""
    return len(finished) >= max(1, expected) and all(i in finished for i in begun)


# A message's text fields besides `content` that a stream sends in pieces: kept, so that a whole answer
# rebuilt from a stream carries them as the server's whole answer would.
_PIECED = ("refusal", "reasoning_content", "reasoning")
_META = ("id", "created", "model", "system_fingerprint")


class Accumulator:
    """A stream's chunks back into the chat.completion the server would have answered whole: every
    choice by its index, with its text, refusal, reasoning, citations, tool calls (or a legacy
    `function_call`), logprobs (of content and refusal) and finish reason, under the answer's id,
    model, creation time, fingerprint and service tier."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.texts: dict[int, list[str]] = {}
        self.said: set[int] = set()  # choices whose deltas carried `content` (a string, even "")
        self.pieced: dict[int, dict[str, list[str]]] = {}  # choice -> refusal / reasoning pieces
        self.named: dict[int, set[str]] = {}  # choice -> pieced fields a delta carried, even as null
        self.annotations: dict[int, list[Any]] = {}  # choice -> its citations (a web search's)
        self.roles: dict[int, str] = {}
        self.finish: dict[int, str | None] = {}
        self.calls: dict[int, dict[int, dict[str, Any]]] = {}  # choice -> tool call index -> call so far
        self.functions: dict[int, dict[str, str]] = {}  # choice -> its legacy function_call so far
        self.logprobs: dict[int, dict[str, list[Any] | None]] = {}  # choice -> content / refusal logprobs
        self.thought: list[str] = []  # reasoning deltas, of every choice: only counted

    def add(self, chunk: dict[str, Any]) -> None:
        for key in _META:  # the first chunk that says (Azure's first one has no id, model or time)
            if not self.meta.get(key):
                self.meta[key] = chunk.get(key)
        if chunk.get("service_tier"):  # the tier it ran under, which its price follows
            self.meta["service_tier"] = chunk["service_tier"]
        for choice in chunk.get("choices") or ():
            i = int(choice.get("index", 0))
            delta = choice.get("delta") or {}
            if delta.get("role"):
                self.roles[i] = delta["role"]
            if thought := reasoning_text(delta):
                self.thought.append(thought)
            self.texts.setdefault(i, [])
            if isinstance(delta.get("content"), str):
                self.said.add(i)
                if delta["content"]:
                    self.texts[i].append(delta["content"])
            for name in _PIECED:
                if name in delta:
                    self.named.setdefault(i, set()).add(name)
                if isinstance(piece := delta.get(name), str) and piece:
                    self.pieced.setdefault(i, {}).setdefault(name, []).append(piece)
            if isinstance(delta.get("annotations"), list):
                self.annotations.setdefault(i, []).extend(delta["annotations"])
            if delta.get("tool_calls"):
                self._add_calls(i, delta["tool_calls"])
            if isinstance(function := delta.get("function_call"), dict):
                so_far = self.functions.setdefault(i, {"name": "", "arguments": ""})
                so_far["name"] += function.get("name") or ""
                so_far["arguments"] += function.get("arguments") or ""
            if isinstance(logprobs := choice.get("logprobs"), dict):
                kept = self.logprobs.setdefault(i, {"content": None, "refusal": None})
                for name in ("content", "refusal"):
                    if isinstance(logprobs.get(name), list):
                        kept[name] = [*(kept[name] or ()), *logprobs[name]]
            if choice.get("finish_reason"):
                self.finish[i] = choice["finish_reason"]

    def _add_calls(self, i: int, deltas: list[dict[str, Any]]) -> None:
        """Tool calls arrive as a head (id, type, name) and then their arguments in pieces. A server that
        numbers none (Gemini's OpenAI compatibility) sends each call whole: a new id is a new call."""
        calls = self.calls.setdefault(i, {})
        for d in deltas:
            if "index" in d:
                k = int(d["index"])
            else:
                last = max(calls, default=None)
                k = last if last is not None and d.get("id") in (None, calls[last]["id"]) else len(calls)
            call = calls.setdefault(k, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = d.get("id") or call["id"]
            call["type"] = d.get("type") or call["type"]
            function = d.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""

    @property
    def finished(self) -> bool:
        return whole(self.texts, self.finish)

    def completion_tokens_estimate(self) -> int:
        """Tokens relayed so far, counted (for streams that end without a usage chunk): the answers, their
        refusals, tool calls (or function call) and the reasoning streamed before them."""
        text = sum(count_text("".join(t)) for t in self.texts.values()) + count_text("".join(self.thought))
        text += sum(count_text("".join(p.get("refusal", ()))) for p in self.pieced.values())
        text += sum(count_text(f["name"] + f["arguments"]) for f in self.functions.values())
        return text + sum(count_text(c["function"]["name"] + c["function"]["arguments"])
                          for calls in self.calls.values() for c in calls.values())

    def body(self, usage: Usage) -> dict[str, Any]:
        return {**self.meta, "object": "chat.completion", "choices": [self._choice(i) for i in sorted(self.texts)],
                "usage": usage.as_dict()}

    def _choice(self, i: int) -> dict[str, Any]:
        # No content delta at all (a refusal, a tool call): null, as the whole answer has it.
        content = "".join(self.texts[i]) if i in self.said else None
        message: dict[str, Any] = {"role": self.roles.get(i, "assistant"), "content": content}
        if i in self.calls:
            message["tool_calls"] = [self.calls[i][k] for k in sorted(self.calls[i])]
            message["content"] = message["content"] or None
        if i in self.functions:
            message["function_call"] = self.functions[i]
            message["content"] = message["content"] or None
        pieces = self.pieced.get(i, {})
        for name in _PIECED:
            if name in pieces:
                message[name] = "".join(pieces[name])
            elif name in self.named.get(i, ()):  # sent as null (OpenAI's `refusal`): kept as null
                message[name] = None
        if i in self.annotations:
            message["annotations"] = self.annotations[i]
        return {"index": i, "message": message, "logprobs": self.logprobs.get(i), "finish_reason": self.finish.get(i)}


def replay(body: dict[str, Any], include_usage: bool, piece_chars: int = 24) -> Iterator[dict[str, Any]]:
    """A complete chat.completion as a stream of chunks, in pieces of about `piece_chars` characters of
    content; what else a message holds (refusal, reasoning, citations, a function call) comes whole in
    its first chunk, so that `Accumulator` gives the same answer back."""
    base = {"id": body.get("id"), "object": "chat.completion.chunk", "created": body.get("created"),
            "model": body.get("model")}
    base.update({k: body[k] for k in ("system_fingerprint", "service_tier") if body.get(k) is not None})
    for choice in body.get("choices") or ():
        i = choice.get("index", 0)
        message = choice.get("message") or {}
        text = message.get("content")
        text = text if isinstance(text, str) else None
        logprobs = choice.get("logprobs")
        head = {k: v for k, v in message.items() if k not in ("content", "tool_calls")}
        yield {**base, "choices": [{"index": i, "delta": {"role": "assistant", **head, "content": "" if text is not None
                                                          else None},
                                    "logprobs": None if text else logprobs, "finish_reason": None}]}
        for start in range(0, len(text or ""), piece_chars):
            # The choice's logprobs ride on its first content chunk.
            yield {**base, "choices": [{"index": i, "delta": {"content": (text or "")[start:start + piece_chars]},
                                        "logprobs": logprobs if start == 0 else None, "finish_reason": None}]}
        if message.get("tool_calls"):
            calls = [{**call, "index": k} for k, call in enumerate(message["tool_calls"])]
            yield {**base, "choices": [{"index": i, "delta": {"tool_calls": calls}, "finish_reason": None}]}
        yield {**base, "choices": [{"index": i, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"}]}
    if include_usage and body.get("usage"):
        yield {**base, "choices": [], "usage": body["usage"]}
