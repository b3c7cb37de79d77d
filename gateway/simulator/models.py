"""Simulated model definitions: the frozen ``SimModel``, the defaults, YAML loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import InputError

from .faults import Fault, check_rates

MAX_OUTPUT_TOKENS = 8192


class SimConfigError(InputError):
    """A simulator model file is unreadable or invalid; the message names file and field."""


@dataclass(frozen=True, slots=True)
class SimModel:
    """One simulated upstream model.

    ``ability`` is answer quality on a logit scale (see ``difficulty_of``).
    ``ttft_ms`` delays the first token (and a non-streaming answer);
    ``tokens_per_s`` paces generation (0 means no pacing at all).
    ``error_rate`` is the chance a request fails with ``error_status``;
    ``fail_first`` makes the first K requests fail deterministically;
    ``retry_after_s`` is the Retry-After header sent with a simulated 429 or 503;
    ``context_window`` (tokens) rejects longer prompts with 400 ``context_length_exceeded``;
    ``tpm_limit`` (tokens per minute) rejects a request whose prompt and ``max_tokens`` alone exceed it
    with OpenAI's 429 "Request too large" (the request's doing, whatever the traffic);
    ``usage: false`` leaves ``usage`` out of answers and streams, as some self-hosted servers do;
    ``faults`` are injected faults (see ``faults.py``), changeable at run time.
    Prices are not the simulator's business: the gateway config prices its deployments.
    """

    name: str
    ability: float
    ttft_ms: float = 20.0
    tokens_per_s: float = 200.0
    output_tokens: int = 60
    error_rate: float = 0.0
    error_status: int = 500
    fail_first: int = 0
    retry_after_s: float | None = None
    context_window: int | None = None
    tpm_limit: int | None = None
    usage: bool = True
    faults: tuple[Fault, ...] = ()

    def __post_init__(self) -> None:
        # Programmatic construction gets the same checks as the YAML path.
        _ModelSpec.model_validate(_fields(self))


def _fields(model: SimModel) -> dict[str, Any]:
    return {name: getattr(model, name) for name in SimModel.__slots__}


class _ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^\S+$")
    ability: float = Field(ge=-20, le=20)
    ttft_ms: float = Field(default=20.0, ge=0, le=600_000)
    tokens_per_s: float = Field(default=200.0, ge=0)
    output_tokens: int = Field(default=60, ge=1, le=MAX_OUTPUT_TOKENS)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=500, ge=400, le=599)
    fail_first: int = Field(default=0, ge=0)
    retry_after_s: float | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, ge=1)
    tpm_limit: int | None = Field(default=None, ge=1)
    usage: bool = True
    faults: tuple[Fault, ...] = ()

    @field_validator("faults")
    @classmethod
    def _rates_fit(cls, faults: tuple[Fault, ...]) -> tuple[Fault, ...]:
        check_rates(faults)
        return faults


class _FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[_ModelSpec] = Field(min_length=1)


DEFAULT_MODELS: tuple[SimModel, ...] = (
    SimModel(
        "sim-small",
        ability=0.0,
        ttft_ms=20,
        tokens_per_s=200,
        output_tokens=60,
    ),
    SimModel(
        "sim-medium",
        ability=1.2,
        ttft_ms=40,
        tokens_per_s=120,
        output_tokens=70,
    ),
    SimModel(
        "sim-large",
        ability=2.5,
        ttft_ms=60,
        tokens_per_s=80,
        output_tokens=80,
    ),
)


def load_models(path: str | Path) -> list[SimModel]:
    """Read ``{models: [{name: ..., ability: ..., ...}]}`` from a YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SimConfigError(f"{path}: cannot read simulator models: {exc}") from exc
    try:
        spec = _FileSpec.model_validate(raw)
    except ValidationError as exc:
        raise SimConfigError(_describe(path, exc)) from None
    names = [m.name for m in spec.models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SimConfigError(f"{path}: models: duplicate model name(s) {duplicates}")
    return [SimModel(**{name: getattr(m, name) for name in SimModel.__slots__}) for m in spec.models]


def _describe(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        lines.append(f"{path}: {where.lstrip('.') or '<root>'}: {error['msg']}")
    return "\n".join(lines)
