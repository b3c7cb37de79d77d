"""A fake backend at the provider seam, in the style of httpx's MockTransport.

A handler maps (deployment, body) to what the upstream does: a response dict (an OpenAI
chat.completion), a `Stream` of chunks (that may fail part-way), a `ProviderFailure` to raise
(returned or raised), or a `Delay` before any of them. Every call is recorded. A streamed call of a
handler that answers with a whole response gets that response as one content chunk and its usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import DeploymentConfig
from gateway.executor import Upstreams
from gateway.providers.base import Completion, ProviderFailure, StreamStats, Usage
from gateway.providers.health import HealthBoard
from gateway.providers.pricing import price_for
from gateway.telemetry import Telemetry


@dataclass(frozen=True)
class Stream:
    """A streamed answer: these chunks in order, then `fail` raised (a failure mid-stream) if given."""

    chunks: list[dict[str, Any]]
    fail: ProviderFailure | None = None
    pause_s: float = 0.0  # before each chunk after the first (a slow writer)


Reply = dict[str, Any] | ProviderFailure | Stream


@dataclass(frozen=True)
class Delay:
    seconds: float
    then: Reply | None = None  # None: a plain answer


def chunk(text: str = "", *, finish: str | None = None, usage: tuple[int, int] | None = None) -> dict[str, Any]:
    """A chat.completion.chunk with `text` as its delta (and a finish reason, or a usage-only chunk)."""
    if usage is not None:
        return {"object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}
    return {"object": "chat.completion.chunk", "model": "fake",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


Handler = Callable[[DeploymentConfig, dict[str, Any]], "Reply | Delay"]


def answer(*texts: str, model: str = "fake") -> dict[str, Any]:
    """A chat.completion with one choice per text (default: one 'ok')."""
    texts = texts or ("ok",)
    return {"id": "chatcmpl-fake", "object": "chat.completion", "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                        for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5 * len(texts)}}


@dataclass
class FakeBackend:
    handler: Handler
    name: str = "fake"
    output_limit: str = "max_tokens"
    streams_whole_answers: bool = False  # as the direct path: whole answers are read from upstream streams
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    headers: list[Mapping[str, str] | None] = field(default_factory=list)  # what each call sent besides the body

    def called(self, deployment: str) -> int:
        return sum(1 for name, _ in self.calls if name == deployment)

    async def _reply(self, deployment: DeploymentConfig, body: dict[str, Any]) -> dict[str, Any] | Stream:
        self.calls.append((deployment.name, body))
        out = self.handler(deployment, body)
        if isinstance(out, Delay):
            await asyncio.sleep(out.seconds)
            out = out.then if out.then is not None else answer(model=deployment.name)
        if isinstance(out, ProviderFailure):
            raise out
        return out

    async def complete(self, deployment: DeploymentConfig, body: dict[str, Any],
                       headers: Mapping[str, str] | None = None) -> Completion:
        self.headers.append(headers)
        out = await self._reply(deployment, body)
        assert not isinstance(out, Stream), "a Stream answers streamed calls only"
        return Completion(out, Usage.from_dict(out.get("usage")), 0.001)

    async def stream(self, deployment: DeploymentConfig, body: dict[str, Any], stats: StreamStats,
                     headers: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        self.headers.append(headers)
        out = await self._reply(deployment, body)
        if not isinstance(out, Stream):
            text = out["choices"][0]["message"]["content"]
            out = Stream([chunk(text, finish="stop"), chunk(usage=(out["usage"]["prompt_tokens"],
                                                                   out["usage"]["completion_tokens"]))])
        for i, c in enumerate(out.chunks):
            if i and out.pause_s:
                await asyncio.sleep(out.pause_s)
            if c.get("usage"):
                stats.usage = Usage.from_dict(c["usage"])
            yield c
        if out.fail is not None:
            raise out.fail

    async def close(self) -> None:
        return None


def deployment(name: str, **overrides: Any) -> DeploymentConfig:
    fields: dict[str, Any] = {"name": name, "model": f"openai/{name}", "api_base": "http://upstream.invalid/v1",
                              "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}, **overrides}
    return DeploymentConfig(**fields)


def fake_upstreams(handler: Handler, *deployments: DeploymentConfig, failure_threshold: int = 5,
                   cooldown_s: float = 15.0, streams_whole_answers: bool = False) -> tuple[Upstreams, FakeBackend]:
    backend = FakeBackend(handler, streams_whole_answers=streams_whole_answers)
    by_name = {d.name: d for d in deployments}
    health = HealthBoard(list(by_name), failure_threshold=failure_threshold, cooldown_s=cooldown_s)
    up = Upstreams(by_name, {n: backend for n in by_name}, {d.name: price_for(d, None) for d in deployments},
                   health, Telemetry())
    return up, backend
