"""Policies on the embedded demo's deployments, for the policy unit tests: the catalog, a policy
from YAML text, and a router signal with given qualities for `small` and `large`."""

from __future__ import annotations

from pathlib import Path

from gateway.config import embedded_config
from gateway.policy import BoundPolicy, Catalog, load_policy_file
from gateway.providers.pricing import prices_for
from gateway.signal import RouteSignal

CONFIG = embedded_config("http://127.0.0.1:9/v1")
CATALOG = Catalog({d.name: d for d in CONFIG.deployments}, prices_for(CONFIG.deployments))


def policy_from(tmp_path: Path, text: str, name: str = "p") -> BoundPolicy:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_policy_file(path, CONFIG.deployments)


def signal(q_small: float, q_large: float, tokens: int = 200) -> RouteSignal:
    return RouteSignal(0.5, "test", {"small": q_small, "large": q_large}, tokens, {})
