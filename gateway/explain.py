"""Routing decisions without a server: `switchyard route "prompt"` and `switchyard policy check`.

`route` decides under the policies the gateway would load (shipped ones overlaid by the user's
folder); `policy check` validates exactly the folder it is given, strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, embedded_config, load_config
from gateway.errors import ConfigError, ConstraintUnsatisfiable
from gateway.policy import BoundPolicy, Catalog, decide, load_policy_file
from gateway.policy.sources import policy_files, policy_sources, shipped_policies_dir, user_policies_dir
from gateway.providers.health import LiveView
from gateway.providers.pricing import prices_for
from gateway.router import Router
from gateway.signal import Assessor, assess

_OFFLINE_URL = "http://127.0.0.1:9/v1"  # never called: explaining makes no model call


def _config(path: str | None) -> GatewayConfig:
    return load_config(path) if path else embedded_config(_OFFLINE_URL)


def decide_prompt(prompt: str, router: Assessor, policy: BoundPolicy, config: GatewayConfig,
                  catalog: Catalog | None = None) -> Any:
    catalog = catalog or Catalog({d.name: d for d in config.deployments}, prices_for(config.deployments))
    signal = assess(router, [{"role": "user", "content": prompt}], config.deployments)
    return decide(policy, signal, catalog, LiveView())


def explain_prompt(prompt: str, router: Router, policy_name: str | None, config_path: str | None) -> dict[str, Any]:
    config = _config(config_path)
    name = policy_name or config.default_policy
    user_dir = user_policies_dir(config)
    sources = policy_sources(user_dir, shipped_policies_dir())
    if name not in sources:
        raise ConfigError(f"policy '{name}' is neither shipped nor in {user_dir or './routing_policies'} "
                          f"({', '.join(sorted(sources))})")
    try:
        policy = load_policy_file(sources[name].path, config.deployments)
        return dict(decide_prompt(prompt, router, policy, config).explain())
    except ConstraintUnsatisfiable as exc:
        return {"policy": name, "plan": None, "error": exc.message}


def render(e: dict[str, Any]) -> str:
    if e.get("plan") is None:
        return f"policy {e['policy']}: no plan: {e.get('error')}"
    s = e["signal"]
    lines = [f"policy {e['policy']} → {e['plan']}",
             f"  difficulty {s['difficulty']:.3f}  category {s['category']}"
             f"  ~{s['prompt_tokens_estimate']} prompt tokens",
             f"  {'candidate':<34}{'quality':>8}{'cost $':>12}{'latency ms':>12}{'utility':>12}  note"]
    for c in e["candidates"]:
        note = "chosen" if c["chosen"] else (f"removed: {c['rejected_by']}" if c["rejected_by"] else "")
        lines.append(f"  {c['plan']:<34}{c['predicted_quality']:>8.3f}{c['predicted_cost_usd']:>12.6f}"
                     f"{c['predicted_latency_ms']:>12.0f}{c['utility']:>12.6f}  {note}")
    lines += [f"  why: {r}" for r in e["reasons"]]
    return "\n".join(lines)


def check_policies(folder: Path, config_path: str | None) -> list[str]:
    """Every problem found, one line each: invalid files and golden examples that do not hold."""
    from gateway.router import load_router

    config = _config(config_path)
    problems: list[str] = []
    router = None
    for path in policy_files(folder):
        try:
            policy = load_policy_file(path, config.deployments)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        for i, ex in enumerate(policy.spec.examples):
            router = router or load_router(config.router_artifact)
            try:
                got = decide_prompt(ex.prompt, router, policy, config).plan.label
            except ConstraintUnsatisfiable as exc:  # a failed example, not a crash of the check
                got = f"no plan ({exc.message})"
            if got != ex.expect:
                problems.append(f"{path.name}: examples[{i}]: expected {ex.expect}, got {got}")
    return problems
