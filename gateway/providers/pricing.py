"""Prices per deployment: the config's override, else litellm's model cost map.

The cost map is read as the JSON file that ships inside the litellm package, without importing
litellm (the import takes seconds and would reach for the network).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import DeploymentConfig
from gateway.providers.base import Usage

log = logging.getLogger("switchyard.pricing")
_COST_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True, slots=True)
class DeploymentPrice:
    input_per_token: float
    output_per_token: float
    source: str  # "config" | "litellm" | "unknown"

    def cost(self, usage: Usage) -> float:
        return usage.prompt_tokens * self.input_per_token + usage.completion_tokens * self.output_per_token

    def estimate(self, prompt_tokens: float, output_tokens: float) -> float:
        return prompt_tokens * self.input_per_token + output_tokens * self.output_per_token


def load_litellm_cost_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _COST_MAP_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def price_for(deployment: DeploymentConfig, cost_map: dict[str, Any] | None) -> DeploymentPrice:
    if deployment.price is not None:
        return DeploymentPrice(deployment.price.input_per_mtok / 1e6,
                               deployment.price.output_per_mtok / 1e6, "config")
    cost_map = cost_map or {}
    _, _, bare = deployment.model.partition("/")
    entry = cost_map.get(deployment.model) or cost_map.get(bare)
    if entry and "input_cost_per_token" in entry:
        return DeploymentPrice(float(entry["input_cost_per_token"]),
                               float(entry.get("output_cost_per_token", 0.0)), "litellm")
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
