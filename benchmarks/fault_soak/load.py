"""The soak's client side: a fixed mix of requests, sent at a fixed concurrency, each one judged.

A request fails, as its client sees it, when the status is not 200, when a stream ends without
`[DONE]` or carries an error event, or when the connection breaks. Latency is to the last byte.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import orjson

# Policy → share of the mix. Streams are half of each.
MIX = {"soak-single": 0.5, "soak-best-of": 0.2, "soak-cascade": 0.3}
QUESTIONS = ("What is {a} + {b}?", "What is {a} * {b}?", "Which is larger?\nA. {a}\nB. {b}\nC. {c}",
             "Name the colour of item {a}.", "Explain why {a} is not {b}, step by step.")
CLIENT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Ask:
    policy: str
    stream: bool
    question: str


@dataclass(slots=True)
class Outcome:
    ask: Ask
    ok: bool
    latency_s: float
    detail: str = ""  # why it failed, as the client saw it


@dataclass(slots=True)
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    def failures(self) -> Counter[tuple[str, bool, str]]:
        return Counter((o.ask.policy, o.ask.stream, o.detail) for o in self.outcomes if not o.ok)

    def latencies(self, policy: str | None = None) -> list[float]:
        return sorted(o.latency_s for o in self.outcomes if o.ok and (policy is None or o.ask.policy == policy))


def mix(n: int, seed: int, policies: dict[str, float] | None = None) -> list[Ask]:
    rng = random.Random(seed)
    weights = policies or MIX
    names, shares = list(weights), list(weights.values())
    asks = []
    for i in range(n):
        numbers = {k: rng.randint(2, 999) for k in "abc"}
        question = rng.choice(QUESTIONS).format(**numbers) + f" (#{seed}-{i})"
        asks.append(Ask(rng.choices(names, shares)[0], rng.random() < 0.5, question))
    return asks


async def _one(client: httpx.AsyncClient, ask: Ask) -> Outcome:
    body = {"model": f"router/{ask.policy}", "messages": [{"role": "user", "content": ask.question}],
            "stream": ask.stream}
    started = time.perf_counter()
    try:
        if not ask.stream:
            r = await client.post("/v1/chat/completions", json=body)
            ok = r.status_code == 200 and bool(r.json()["choices"])
            detail = "" if ok else f"status {r.status_code}: {_code(r.content)}"
        else:
            ok, detail = await _stream(client, body)
    except (httpx.HTTPError, ValueError) as exc:
        ok, detail = False, type(exc).__name__
    return Outcome(ask, ok, time.perf_counter() - started, detail)


async def _stream(client: httpx.AsyncClient, body: dict[str, object]) -> tuple[bool, str]:
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return False, f"status {r.status_code}: {_code(await r.aread())}"
        done = False
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and b'"error"' in line.encode():
                return False, f"stream error: {_code(line[6:].encode())}"
        return done, "" if done else "stream ended without [DONE]"


def _code(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw)["error"].get("code"))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return raw[:60].decode(errors="replace")


async def drive(base_url: str, asks: list[Ask], concurrency: int,
                on_progress: Callable[[int], Awaitable[None]] | None = None) -> Run:
    """Send every ask, `concurrency` at a time; `on_progress(done)` after each (for the Redis outage)."""
    run = Run()
    queue: asyncio.Queue[Ask] = asyncio.Queue()
    for ask in asks:
        queue.put_nowait(ask)
    # Idle connections expire before the server's keep-alive timeout (uvicorn: 5 s), as a client must
    # have them do: otherwise a reused connection can race the server closing it.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                          keepalive_expiry=2.0)

    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S, limits=limits) as client:
        async def worker() -> None:
            while not queue.empty():
                outcome = await _one(client, queue.get_nowait())
                run.outcomes.append(outcome)
                if on_progress is not None:
                    await on_progress(len(run.outcomes))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.wall_s = time.perf_counter() - started
    return run


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]
