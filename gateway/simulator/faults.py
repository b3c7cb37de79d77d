"""Fault injection: what can go wrong with an upstream, per model, from the model file or at run time.

Each model has a list of faults, each with a ``rate`` (the share of its chat-completions requests
it hits; rates add up to at most 1, and one request gets at most one fault). Set them in the
model file (``faults: [{kind: http_500, rate: 0.1}]``) or replace them while serving with
``POST /_sim/faults`` ``{"model": "sim-small", "faults": [...]}`` (``[]`` clears; ``GET`` lists).

Kinds and what the client sees:

- ``http_500``: status 500 with an OpenAI error body, at once;
- ``http_429``: status 429 with ``Retry-After: retry_after_s``;
- ``refuse``: the connection is closed without any response;
- ``hang``: no response at all for ``delay_ms`` (default 60 s), then the connection is closed;
- ``slow``: the answer is right, after ``delay_ms`` more before its first token (a slow tail);
- ``drop_stream``: a stream stops half-way, without a finish chunk or ``[DONE]`` (whole answers
  are unaffected);
- ``malformed``: a 200 whose body (or, streamed, a chunk half-way) is not valid JSON;
- ``no_usage``: the answer carries no ``usage``, whole or streamed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["http_500", "http_429", "refuse", "hang", "slow", "drop_stream", "malformed", "no_usage"]
FAULT_KINDS: tuple[FaultKind, ...] = ("http_500", "http_429", "refuse", "hang", "slow", "drop_stream",
                                      "malformed", "no_usage")
_DEFAULT_DELAY_MS = {"hang": 60_000.0, "slow": 2_000.0}


class Fault(BaseModel):
    """One kind of fault and how often it strikes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    rate: float = Field(ge=0, le=1)
    delay_ms: float | None = Field(default=None, ge=0, le=600_000, description="hang and slow: how long")
    retry_after_s: float = Field(default=1.0, ge=0, le=3600, description="http_429: the Retry-After sent")

    @property
    def delay_s(self) -> float:
        return (self.delay_ms if self.delay_ms is not None else _DEFAULT_DELAY_MS.get(self.kind, 0.0)) / 1000.0


class FaultUpdate(BaseModel):
    """The body of ``POST /_sim/faults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    faults: list[Fault]


def check_rates(faults: Iterable[Fault]) -> None:
    total = sum(f.rate for f in faults)
    if total > 1 + 1e-9:
        raise ValueError(f"fault rates add up to {total:g}; one request gets at most one fault, so at most 1")


class FaultTable:
    """The faults of every model; `draw` picks the one (if any) a request gets."""

    def __init__(self, faults: dict[str, tuple[Fault, ...]]) -> None:
        self._faults = dict(faults)

    def set(self, model: str, faults: Iterable[Fault]) -> None:
        faults = tuple(faults)
        check_rates(faults)
        self._faults[model] = faults

    def listing(self) -> dict[str, list[dict[str, object]]]:
        return {m: [f.model_dump(exclude_none=True) for f in fs] for m, fs in self._faults.items()}

    def draw(self, model: str, rng: random.Random) -> Fault | None:
        faults = self._faults.get(model)
        if not faults:
            return None
        u = rng.random()
        for fault in faults:
            if u < fault.rate:
                return fault
            u -= fault.rate
        return None
