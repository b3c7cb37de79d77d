"""A small lab for executor tests over real HTTP: simulated models of the test's own, the shipped
policies plus the test's, and a gateway whose deployments point at those models."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.processes import ROOT, GatewayServer, Simulator, start_simulator

PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


@contextmanager
def simulator_of(models: list[dict[str, Any]], folder: Path) -> Iterator[Simulator]:
    """The simulated models `models` (entries of a models file), running until the block ends."""
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    sim = start_simulator(path)
    try:
        yield sim
    finally:
        sim.stop()


def policies_folder(folder: Path, policies: dict[str, dict[str, Any]]) -> Path:
    """`folder/policies` with the shipped policies plus `policies` (name → spec)."""
    out = folder / "policies"
    out.mkdir()
    for f in (ROOT / "routing_policies").glob("*.yaml"):
        shutil.copy(f, out / f.name)
    for name, spec in policies.items():
        (out / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return out


@contextmanager
def lab_gateway(sim: Simulator, folder: Path, policies: dict[str, dict[str, Any]],
                deployments: dict[str, tuple[str, str]], **per_deployment: Any) -> Iterator[str]:
    """A gateway with the shipped policies plus `policies` (name → spec), and `deployments` (name →
    (simulated model, tier)) on `sim`, each with `per_deployment` settings (a callable is given the
    deployment's name). Yields the OpenAI base URL (…/v1)."""
    policies_dir = policies_folder(folder, policies)
    rows = [{"name": n, "model": f"openai/{m}", "api_base": sim.url, "tier": t, "price": PRICE,
             **{k: v(n) if callable(v) else v for k, v in per_deployment.items()}}
            for n, (m, t) in deployments.items()]
    app = create_app(parse_config({"deployments": rows}, "lab"), policies_dir=policies_dir)
    server = GatewayServer(app).start()
    try:
        yield server.base_url + "/v1"
    finally:
        server.stop()
