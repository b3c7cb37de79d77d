"""Routing decisions without a server: `switchyard route "prompt"`, `policy check` and `policy calibrate`.

`route` decides under the policies the gateway would load (shipped ones overlaid by the user's
folder), as a freshly started gateway would (a target policy's threshold from the start-up sample);
`policy check` validates exactly the folder it is given, strictly; `policy calibrate` shows what a
target policy would do on a file of traffic.
"""

from __future__ import annotations

import codecs
import itertools
import math
from pathlib import Path
from typing import Any

import orjson

from gateway.config import GatewayConfig, embedded_config, load_config
from gateway.errors import ConfigError, ConstraintUnsatisfiable, InvalidRequest
from gateway.plans import Cascade
from gateway.policy import BoundPolicy, Catalog, decide, load_policy_file
from gateway.policy.calibration import Quantiles, expected, share_for
from gateway.policy.controller import Controller
from gateway.policy.seed import SeedSample, messages_of, sketch_of
from gateway.policy.sources import (
    policy_files,
    policy_sources,
    same_name,
    shipped_policies_dir,
    two_files,
    user_policies_dir,
)
from gateway.providers.health import LiveView
from gateway.providers.pricing import prices_for
from gateway.router import Router
from gateway.signal import Assessor, assess

_OFFLINE_URL = "http://127.0.0.1:9/v1"  # never called: explaining makes no model call


def _config(path: str | None) -> GatewayConfig:
    return load_config(path) if path else embedded_config(_OFFLINE_URL)


def decide_prompt(prompt: str, router: Assessor, policy: BoundPolicy, config: GatewayConfig,
                  catalog: Catalog | None = None, seeds: SeedSample | None = None) -> Any:
    """The decision a freshly started gateway makes: a target policy's threshold from the start-up sample."""
    catalog = catalog or Catalog({d.name: d for d in config.deployments}, prices_for(config.deployments))
    signal = assess(router, [{"role": "user", "content": prompt}], config.deployments)
    cutoff = None
    if policy.spec.target is not None:
        seeds = seeds or SeedSample(router, config.deployments, catalog)
        cutoff = Controller(policy.spec.target, seeds.sketch_for(policy)).cutoff()
    return decide(policy, signal, catalog, LiveView(), cutoff=cutoff)


def explain_prompt(prompt: str, router: Router, policy_name: str | None, config_path: str | None,
                   router_version: str | None = None) -> dict[str, Any]:
    """What `POST /v1/route` answers for this prompt, from a freshly started gateway: with the versions of
    the router that assessed it and of the policy that decided."""
    config = _config(config_path)
    name = policy_name or config.default_policy
    policy = _load_named(name, config)
    versions = {"router_version": router_version, "policy_version": policy.version}
    try:
        return dict(decide_prompt(prompt, router, policy, config).explain()) | versions
    except ConstraintUnsatisfiable as exc:
        return {"policy": name, "plan": None, "error": exc.message} | versions


def _load_named(name: str, config: GatewayConfig) -> BoundPolicy:
    """The policy the gateway would load under this name: the user's file, else the shipped one."""
    user_dir = user_policies_dir(config)
    sources = policy_sources(user_dir, shipped_policies_dir())
    if name not in sources:
        raise ConfigError(f"policy '{name}' is neither shipped nor in {user_dir or './routing_policies'} "
                          f"({', '.join(sorted(sources))})")
    return load_policy_file(sources[name].path, config.deployments)


def render(e: dict[str, Any]) -> str:
    if e.get("plan") is None:
        return f"policy {e['policy']}: no plan: {e.get('error')}"
    s = e["signal"]
    lines = [f"policy {e['policy']} → {e['plan']}" + (f"  (router {e['router_version']})" if e.get("router_version")
                                                       else ""),
             f"  difficulty {s['difficulty']:.3f}  category {s['category']}"
             f"  ~{s['prompt_tokens_estimate']} prompt tokens",
             f"  {'candidate':<34}{'quality':>8}{'cost $':>12}{'latency ms':>12}{'utility':>12}  note"]
    for c in e["candidates"]:
        note = "chosen" if c["chosen"] else (f"removed: {c['rejected_by']}" if c["rejected_by"] else "")
        lines.append(f"  {c['plan']:<34}{c['predicted_quality']:>8.3f}{c['predicted_cost_usd']:>12.6f}"
                     f"{c['predicted_latency_ms']:>12.0f}{c['utility']:>12.6f}  {note}")
    lines += [f"  why: {r}" for r in e["reasons"]]
    if (c := e.get("calibration")) and "threshold" in c:
        lines.append(f"  calibration: score {c['score']} at quantile {c['quantile']} of recent traffic; threshold "
                     f"{c['threshold']} sends {c['strong_share_in_force']:.0%} to {c['strong']} (target {c['target']})")
    return "\n".join(lines)


def check_policies(folder: Path, config_path: str | None) -> list[str]:
    """Every problem found, one line each: invalid files and golden examples that do not hold."""
    from gateway.router import load_router

    config = _config(config_path)
    problems: list[str] = []
    router = None
    seeds = None
    catalog = Catalog({d.name: d for d in config.deployments}, prices_for(config.deployments))
    if folder.is_file():  # `policy check routing_policies/balanced.yaml`: that file alone
        if folder.suffix not in (".yaml", ".yml"):
            return [f"{folder}: not a policy file (*.yaml, *.yml) nor a folder of them"]
        files = [folder]
    elif not folder.is_dir():  # named on the command line: not the config's policies_dir
        return [f"{folder}: no such folder of policy files"]
    else:
        files = policy_files(folder)
    if not files:  # a CI gate pointed at the wrong folder must not pass by checking nothing
        return [f"{folder}: no policy files (*.yaml, *.yml) to check"]
    # The gateway refuses to start on such a folder: which file is in force would depend on which was read last
    problems += [two_files(name, twice) for name, twice in same_name(files).items()]
    for path in files:
        try:
            policy = load_policy_file(path, config.deployments)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        problems += [f"{path.name}: {p}" for p in backward_cascades(policy, catalog)]
        for i, ex in enumerate(policy.spec.examples):
            router = router or load_router(config.router_artifact)
            seeds = seeds or SeedSample(router, config.deployments, catalog)
            try:
                got = decide_prompt(ex.prompt, router, policy, config, catalog, seeds).plan.label
            except ConstraintUnsatisfiable as exc:  # a failed example, not a crash of the check
                got = f"no plan ({exc.message})"
            if got != ex.expect:
                problems.append(f"{path.name}: examples[{i}]: expected {ex.expect}, got {got}")
    return problems


def backward_cascades(policy: BoundPolicy, catalog: Catalog) -> list[str]:
    """Cascades with a step dearer per token than the step it escalates to (steps go cheapest first).
    Such a cascade pays the dear model on every request and answers the hard ones with the cheap one: it
    is predicted worse than its last step alone and dearer than its first, and under a target it became
    the strong choice, sent a share of traffic for nothing."""
    out = []
    for plan in policy.plans:
        if not isinstance(plan, Cascade):
            continue
        for a, b in itertools.pairwise(plan.steps):
            pa, pb = catalog.prices[a].base, catalog.prices[b].base
            if pa.input >= pb.input and pa.output >= pb.output and (pa.input, pa.output) != (pb.input, pb.output):
                out.append(f"{plan.label}: step '{a}' (${pa.input * 1e6:g}/${pa.output * 1e6:g} per million "
                           f"input/output tokens) is dearer than the step after it, '{b}' (${pb.input * 1e6:g}/"
                           f"${pb.output * 1e6:g}): cascade steps go cheapest first")
    return out


MIN_CALIBRATION_PROMPTS = 50


def read_traffic(path: Path) -> list[list[dict[str, Any]]]:
    """Requests of a traffic file: JSONL lines with `messages` (OpenAI) or `prompt` (the routing-data schema)."""
    out = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if n == 1:  # a byte-order mark (Windows editors, PowerShell) is no part of the JSON
                line = line.removeprefix(codecs.BOM_UTF8)
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}: line {n} is not JSON: {exc}") from None
            messages = messages_of(row) if isinstance(row, dict) else None
            if messages is None:
                raise ConfigError(f"{path}: line {n} has neither a 'prompt' (a string) nor 'messages' "
                                  "(a list of message objects)")
            if isinstance(row, dict) and "messages" in row:
                from gateway.api.schemas import validate_chat  # the web stack: only for a calibration's traffic

                # Messages the gateway refuses with a 400 ([], a user turn without content) are no traffic
                # it routes: counted, they made up the 50 prompts and placed the threshold on nothing.
                try:
                    validate_chat({"model": "auto", "messages": messages})
                except InvalidRequest as exc:
                    raise ConfigError(f"{path}: line {n}: not a request the gateway routes: {exc.message}") from None
            out.append(messages)
    return out


def calibrate(name: str, traffic: Path, config_path: str | None, *, progress: bool = True) -> dict[str, Any]:
    """What policy `name`'s target would do on this traffic: the threshold, the share sent to the strong
    choice, the predicted quality and the cost per 1,000 requests (with always-cheap and always-strong)."""
    from tqdm import tqdm

    from gateway.router import load_router

    config = _config(config_path)
    policy = _load_named(name, config)
    if policy.spec.target is None:
        raise ConfigError(f"policy '{name}' has no target (it uses objective.value_usd): nothing to calibrate")
    requests = read_traffic(traffic)
    if len(requests) < MIN_CALIBRATION_PROMPTS:
        raise ConfigError(f"{traffic}: {len(requests)} prompts; calibrating needs at least "
                          f"{MIN_CALIBRATION_PROMPTS}, a threshold drawn from fewer is noise")
    router = load_router(config.router_artifact)
    catalog = Catalog({d.name: d for d in config.deployments}, prices_for(config.deployments))
    signals = (assess(router, m, config.deployments)
               for m in tqdm(requests, desc="scoring", unit="prompt", disable=not progress or len(requests) < 500))
    sketch = sketch_of(signals, policy, catalog)
    if not sketch.weight:  # a threshold over no choices is inf, and every figure 0: say why instead
        raise ConfigError(f"policy '{name}': no prompt of {traffic} leaves it a choice between a cheaper and a "
                          f"stronger plan (its constraints leave at most one feasible), so its target never applies; "
                          f"`switchyard route --policy {name} PROMPT` shows what removes each candidate")
    target = policy.spec.target
    threshold = Quantiles.of(sketch).threshold(share_for(target, sketch))
    e, cheap, strong = expected(sketch, threshold), expected(sketch, math.inf), expected(sketch, -math.inf)
    return {"policy": name, "target": target.describe(), "prompts": len(requests),
            "decided": round(sketch.weight), "threshold": threshold, "strong_share": e.strong_share,
            "quality": e.quality, "quality_share_of_always_strong": e.quality_share,
            "usd_per_1k_requests": e.usd_per_1k_requests,
            "always_cheap": {"quality": cheap.quality, "usd_per_1k_requests": cheap.usd_per_1k_requests},
            "always_strong": {"quality": strong.quality, "usd_per_1k_requests": strong.usd_per_1k_requests}}


def render_calibration(c: dict[str, Any]) -> str:
    (kind, value), = c["target"].items()
    # A prompt whose constraints leave one plan (or none) never meets the threshold, so the figures below
    # are of the others alone: said here, or "on 200 prompts ... 50% to strong" read as 100 of them.
    others = c["prompts"] - c["decided"]
    coverage = (f"; the figures are of the {c['decided']} that leave it a choice between plans (the other "
                f"{others} have one feasible plan or none)") if others else ""
    return "\n".join([
        f"policy {c['policy']}, target {kind}: {value:g}, on {c['prompts']} prompts{coverage}",
        f"  threshold                {c['threshold']:.4f}  (score: predicted quality gain of the strong choice)",
        f"  expected share to strong {c['strong_share']:.1%}",
        f"  predicted quality        {c['quality']:.3f}  ({c['quality_share_of_always_strong']:.1%} of always strong;"
        f" always cheap {c['always_cheap']['quality']:.3f})",
        f"  cost per 1k requests     ${c['usd_per_1k_requests']:.4f}  (always cheap "
        f"${c['always_cheap']['usd_per_1k_requests']:.4f}, "
        f"always strong ${c['always_strong']['usd_per_1k_requests']:.4f})",
        "  (the gateway recalibrates on its live traffic; these figures are what this traffic would give)",
    ])
