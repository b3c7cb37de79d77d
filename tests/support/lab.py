"""A small lab for executor tests over real HTTP: simulated models of the test's own, the shipped
policies plus the test's, and a gateway whose deployments point at those models."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from opentelemetry.sdk.trace.export import SpanExporter

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.processes import ROOT, GatewayServer, Simulator, running_gateway, start_simulator, wait_until

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
                deployments: dict[str, tuple[str, str]], span_exporter: SpanExporter | None = None,
                **per_deployment: Any) -> Iterator[str]:
    """A gateway with the shipped policies plus `policies` (name → spec), and `deployments` (name →
    (simulated model, tier)) on `sim`, each with `per_deployment` settings (a callable is given the
    deployment's name). `span_exporter`: where its spans go. Yields the OpenAI base URL (…/v1)."""
    policies_dir = policies_folder(folder, policies)
    rows = [{"name": n, "model": f"openai/{m}", "api_base": sim.url, "tier": t, "price": PRICE,
             **{k: v(n) if callable(v) else v for k, v in per_deployment.items()}}
            for n, (m, t) in deployments.items()]
    app = create_app(parse_config({"deployments": rows}, "lab"), policies_dir=policies_dir, span_exporter=span_exporter)
    server = GatewayServer(app).start()
    try:
        yield server.base_url + "/v1"
    finally:
        server.stop()


BUDGET_KEY = "sk-thrifty"


@dataclass(frozen=True)
class Budgeted:
    """A gateway with one tenant, `thrifty`, on a budget: its SDK client and what it has spent."""

    base_url: str  # without /v1
    client: openai.OpenAI

    def spent(self) -> float:
        rows = httpx.get(self.base_url + "/v1/spend", params={"group_by": "tenant"},
                         headers={"Authorization": f"Bearer {BUDGET_KEY}"}, timeout=10).json()["data"]
        return sum(float(r["cost_usd"]) for r in rows)

    def calls(self) -> int:
        rows = httpx.get(self.base_url + "/v1/spend", params={"group_by": "tenant"},
                         headers={"Authorization": f"Bearer {BUDGET_KEY}"}, timeout=10).json()["data"]
        return sum(int(r["calls"]) for r in rows)

    def refuses(self, ask: Callable[[], object], budget: float, what: str) -> None:
        """`ask()` must be refused by the budget; if it is let in, fail saying what it spent."""
        try:
            ask()
        except openai.RateLimitError as refused:
            assert refused.code == "budget_exceeded"
            return
        wait_until(lambda: self.spent() > budget, timeout_s=10, what="spend past the budget")
        pytest.fail(f"{what} was admitted on one call's hold and spent ${self.spent():.6f} of a ${budget} budget")


@contextmanager
def budgeted_gateway(sim: Simulator, folder: Path, monkeypatch: pytest.MonkeyPatch, budget: float | None,
                     policy: dict[str, Any], deployments: dict[str, tuple[str, dict[str, Any]]], *,
                     tenant: str = "thrifty", redis_url: str | None = None,
                     admin_key: str | None = None) -> Iterator[Budgeted]:
    """A gateway whose one tenant, `tenant` (key `BUDGET_KEY`), has `budget` USD (None: no budget of its
    own) and the default policy `thrifty` (`policy`, cache off), over `deployments` (name → (simulated
    model, more settings)) on `sim`, in the lab's tier at the lab's price. The simulator's counts are
    reset first. `redis_url`: the store (a fresh `tenant` name keeps a shared Redis's keys apart);
    `admin_key`: turns the keys admin API on."""
    monkeypatch.setenv("SY_THRIFTY_KEY", BUDGET_KEY)
    rows = [{"name": n, "model": f"openai/{m}", "api_base": sim.url, "tier": "lab", "price": PRICE, **extra}
            for n, (m, extra) in deployments.items()]
    raw = {"deployments": rows, "default_policy": "thrifty", "redis_url": redis_url,
           "tenants": [{"name": tenant, "api_key_env": "SY_THRIFTY_KEY", "budget_usd": budget}]}
    if admin_key is not None:
        raw["admin_api_key_sha256"] = hashlib.sha256(admin_key.encode()).hexdigest()
    policies = {"thrifty": {"description": "a budget test's policy", "cache": {"enabled": False}, **policy}}
    app = create_app(parse_config(raw, "budgeted"), policies_dir=policies_folder(folder, policies))
    sim.reset()
    with running_gateway(app) as gw:
        yield Budgeted(gw.base_url, openai.OpenAI(base_url=gw.base_url + "/v1", api_key=BUDGET_KEY, max_retries=0))
