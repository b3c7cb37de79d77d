"""Prices per deployment: the config's override, else litellm's model cost map.

The cost map is read as the JSON file that ships inside the litellm package, without importing
litellm (the import takes seconds and would reach for the network). Prices follow litellm's cost
rules, resolved once at start-up so that pricing a call is plain arithmetic:

- prompt tokens read from the provider's prompt cache cost `cache_read_input_token_cost`, those
  written to it `cache_creation_input_token_cost` (either defaults to the input price);
- a long-context tier (`input_cost_per_token_above_200k_tokens`, and its output and cache
  companions) prices the *whole* call once its prompt exceeds the threshold; a tier key that is
  missing keeps the rate below it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import DeploymentConfig
from gateway.providers.base import Usage

log = logging.getLogger("switchyard.pricing")
_COST_MAP_FILE = "model_prices_and_context_window_backup.json"

# cost-map key prefix per rate; a tier key is `<prefix>_above_<N>[k|m]_tokens` (no batch/priority suffix)
_RATE_KEYS = {"input": "input_cost_per_token", "output": "output_cost_per_token",
              "cache_read": "cache_read_input_token_cost", "cache_write": "cache_creation_input_token_cost"}
_TIER_KEY = re.compile(
    r"^(?P<rate>" + "|".join(_RATE_KEYS.values()) + r")_above_(?P<n>\d+(?:\.\d+)?)(?P<unit>[km]?)_tokens$")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token for each kind of token."""

    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True, slots=True)
class PriceTier:
    above_prompt_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class DeploymentPrice:
    input_per_token: float
    output_per_token: float
    source: str  # "config" | "litellm" | "unknown"
    cache_read_per_token: float | None = None   # None: cached prompt tokens cost the input price
    cache_write_per_token: float | None = None  # None: likewise for prompt-cache writes
    tiers: tuple[PriceTier, ...] = ()  # ascending thresholds
    base: Rates = field(init=False, repr=False, compare=False)  # resolved once, below every tier

    def __post_init__(self) -> None:
        inp = self.input_per_token
        read = inp if self.cache_read_per_token is None else self.cache_read_per_token
        write = inp if self.cache_write_per_token is None else self.cache_write_per_token
        object.__setattr__(self, "base", Rates(inp, self.output_per_token, read, write))

    def rates(self, prompt_tokens: int) -> Rates:
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above_prompt_tokens:
                return tier.rates
        return self.base

    def cost(self, usage: Usage) -> float:
        r = self.rates(usage.prompt_tokens)
        cached, written = usage.cached_tokens, usage.cache_write_tokens
        plain = max(usage.prompt_tokens - cached - written, 0)
        return (plain * r.input + cached * r.cache_read + written * r.cache_write
                + usage.completion_tokens * r.output)

    def estimate(self, prompt_tokens: float, output_tokens: float) -> float:
        """A prediction: no cache hits assumed (the worst case), the tier the prompt falls in."""
        r = self.rates(int(prompt_tokens)) if self.tiers else self.base
        return prompt_tokens * r.input + output_tokens * r.output


def load_litellm_cost_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _COST_MAP_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _rate(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _resolved(explicit: dict[str, float]) -> Rates:
    """A cache rate the map does not give is the input rate (the provider bills such tokens as input)."""
    inp = explicit["input"]
    return Rates(inp, explicit.get("output", 0.0), explicit.get("cache_read", inp), explicit.get("cache_write", inp))


def _tiers(entry: dict[str, Any], base: dict[str, float]) -> tuple[PriceTier, ...]:
    """The cost map's `*_above_<N>k_tokens` rates as cumulative tiers, in ascending order."""
    found: dict[int, dict[str, float]] = {}
    names = {v: k for k, v in _RATE_KEYS.items()}
    for key in entry:
        m = _TIER_KEY.match(key)
        if m and (rate := _rate(entry, key)) is not None:
            scale = {"k": 1_000, "m": 1_000_000}.get(m["unit"], 1)
            found.setdefault(int(float(m["n"]) * scale), {})[names[m["rate"]]] = rate
    tiers, current = [], base
    for threshold in sorted(found):
        current = {**current, **found[threshold]}  # a rate the tier does not name stays as below it
        tiers.append(PriceTier(threshold, _resolved(current)))
    return tuple(tiers)


def price_from_cost_map(entry: dict[str, Any]) -> DeploymentPrice:
    explicit = {name: r for name, key in _RATE_KEYS.items() if (r := _rate(entry, key)) is not None}
    return DeploymentPrice(explicit["input"], explicit.get("output", 0.0), "litellm", explicit.get("cache_read"),
                           explicit.get("cache_write"), _tiers(entry, explicit))


def price_for(deployment: DeploymentConfig, cost_map: dict[str, Any] | None) -> DeploymentPrice:
    if deployment.price is not None:
        p = deployment.price
        return DeploymentPrice(p.input_per_mtok / 1e6, p.output_per_mtok / 1e6, "config",
                               None if p.cached_input_per_mtok is None else p.cached_input_per_mtok / 1e6,
                               None if p.cache_write_per_mtok is None else p.cache_write_per_mtok / 1e6)
    cost_map = cost_map or {}
    _, _, bare = deployment.model.partition("/")
    entry = cost_map.get(deployment.model) or cost_map.get(bare)
    if entry and _rate(entry, "input_cost_per_token") is not None:
        return price_from_cost_map(entry)
    log.warning("no price for deployment %s (%s): its cost counts as 0; set price: in the config",
                deployment.name, deployment.model)
    return DeploymentPrice(0.0, 0.0, "unknown")


def prices_for(deployments: list[DeploymentConfig]) -> dict[str, DeploymentPrice]:
    needs_map = any(d.price is None for d in deployments)
    cost_map = load_litellm_cost_map() if needs_map else None
    return {d.name: price_for(d, cost_map) for d in deployments}


def format_usd(cost: float) -> str:
    """Fixed-point, no exponent, enough digits for sub-cent requests: `0.0000342`."""
    text = f"{cost:.12f}".rstrip("0").rstrip(".")
    return text or "0"
