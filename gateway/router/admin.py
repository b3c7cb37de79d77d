"""`switchyard router promote | rollback | history | evaluate`: the operator's side of router versions.

These commands talk to the shared store directly, with the gateway's own config (`--config`, or
`$SWITCHYARD_CONFIG`, or just `$SWITCHYARD_REDIS_URL`), so no admin HTTP route is needed: whoever
can reach the store can change the router, as whoever can edit the config file can. Replicas pick
up a change within a poll interval (`gateway.router.sync`). With the in-memory store there is no
shared version to change, and the commands say so.
"""

from __future__ import annotations

import asyncio
import datetime
import getpass
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import ENV_CONFIG, ENV_REDIS_URL, GatewayConfig, env_redis_url, load_config
from gateway.errors import ConfigError
from gateway.router.artifact import Artifact, ArtifactError
from gateway.router.model import Router
from gateway.router.registry import Entry, RegistryError, RouterRegistry, serving_stack
from gateway.router.serving import configured_dir, load_artifact, load_checked
from gateway.router.training.compare import Targets, compare, render, result_json
from gateway.router.training.data import RoutingData, load_data
from gateway.router.training.evaluate import pair_rows, pick_pairs
from gateway.state import RedisStore, StoreUnavailable

_STORE_TIMEOUT_S = 10.0  # an artifact is a few MB: more than the request path's 0.5 s


def _err(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def gateway_config(config_path: str | None) -> GatewayConfig | None:
    path = config_path or os.environ.get(ENV_CONFIG)
    return load_config(path) if path else None


def store_url(config: GatewayConfig | None) -> str | None:
    return config.redis_url if config is not None else env_redis_url()


def needs_shared_store(command: str) -> int:
    return _err(f"switchyard router {command}: router versions live in the shared store, and none is configured: "
                f"give --config with a gateway YAML that has redis_url (or set ${ENV_CONFIG} or ${ENV_REDIS_URL}). "
                "With the in-memory store a gateway serves its config's router_artifact: point that at the "
                "directory and restart it.")


def operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def _with_registry(url: str, work: Any) -> Any:
    store = RedisStore(url, timeout_s=_STORE_TIMEOUT_S)
    try:
        return await work(RouterRegistry(store))
    finally:
        await store.close()


def validate(directory: Path, config: GatewayConfig | None) -> tuple[Artifact, Router, list[str]]:
    """Read, load and smoke-test an artifact; warnings for deployments it cannot score by profile."""
    artifact = Artifact.read(directory)
    router = load_checked(directory)
    warnings = []
    for d in config.deployments if config else ():
        if d.router_profile and not router.knows(d.router_profile):
            warnings.append(f"deployment '{d.name}': router_profile '{d.router_profile}' is unknown to this router; "
                            f"it will be scored by {'its ability' if d.ability is not None else 'the pool mean'}")
        elif not d.router_profile and router.knows(d.name):
            # `logs export` names such a deployment's rows by its name: what the router learned of it from them
            # was never used, and nothing said so
            warnings.append(f"deployment '{d.name}' has no router_profile, so what this router learned as "
                            f"'{d.name}' is not used: it will be scored by "
                            f"{'its ability' if d.ability is not None else 'the pool mean'}; set "
                            f"router_profile: {d.name} to use it")
    return artifact, router, warnings


def promote(directory: str, config_path: str | None, by: str | None) -> int:
    config = gateway_config(config_path)
    url = store_url(config)
    if not url:
        return needs_shared_store("promote")
    try:
        artifact, _, warnings = validate(Path(directory), config)
    except ArtifactError as exc:
        return _err(f"switchyard router promote: refused: {exc}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        entry = asyncio.run(_with_registry(url, lambda reg: reg.promote(artifact, by or operator())))
    except StoreUnavailable as exc:
        return _err(f"switchyard router promote: the store did not answer: {exc}")
    if entry is None:
        print(f"{artifact.version} is already the promoted router; nothing changed")
    else:
        print(f"promoted {entry.version} ({artifact.size / 1e6:.1f} MB); every replica serves it within a few seconds")
    return 0


def rollback(to: str | None, config_path: str | None, by: str | None) -> int:
    url = store_url(gateway_config(config_path))
    if not url:
        return needs_shared_store("rollback")
    try:
        entry: Entry = asyncio.run(_with_registry(url, lambda reg: reg.rollback(by or operator(), to)))
    except (RegistryError, ArtifactError) as exc:
        return _err(f"switchyard router rollback: {exc}")
    except StoreUnavailable as exc:
        return _err(f"switchyard router rollback: the store did not answer: {exc}")
    what = "each replica's configured router" if entry.is_configured else entry.version
    print(f"rolled back to {what}; every replica serves it within a few seconds")
    return 0


def history(config_path: str | None, as_json: bool) -> int:
    url = store_url(gateway_config(config_path))
    if not url:
        return needs_shared_store("history")
    try:
        entries: list[Entry] = asyncio.run(_with_registry(url, lambda reg: reg.history()))
    except StoreUnavailable as exc:
        return _err(f"switchyard router history: the store did not answer: {exc}")
    stack = serving_stack(entries)
    current = "configured" if stack[-1] is None else stack[-1].version
    if as_json:
        print(json.dumps({"current": current, "history": [_entry(e) for e in entries]}, indent=1))
        return 0
    if not entries:
        print("no router has been promoted: every replica serves its configured router")
        return 0
    rows = [(_when(e.at), e.action + (" to" if e.explicit else ""), e.version, e.by) for e in entries]
    # Each column as wide as its longest cell: "rollback to" and a long directory's name ran into the next.
    act = max(len("action"), *(len(r[1]) for r in rows)) + 2
    ver = max(len("version"), *(len(r[2]) for r in rows)) + 2
    print(f"{'when':<24}{'action':<{act}}{'version':<{ver}}by")
    for when, action, version, by in rows:
        print(f"{when:<24}{action:<{act}}{version:<{ver}}{by}")
    print(f"serving now: {current}")
    return 0


def _entry(e: Entry) -> dict[str, Any]:
    return {"version": e.version, "digest": e.digest, "name": e.name, "at": e.at, "by": e.by,
            "action": e.action, "explicit": e.explicit}


@dataclass(frozen=True)
class Served:
    router: Router
    version: str
    source: str  # "promoted", "configured" or a directory given with --against


def serving_router(config: GatewayConfig | None, against: str | None) -> Served:
    """The router replicas serve now: the promoted one when a store has one, else the configured; each
    checked whole (`load_checked`), as a replica checks what it serves."""
    if against:
        return Served(load_checked(against), Artifact.read(against).version, against)
    url = store_url(config)
    if url:
        async def promoted(reg: RouterRegistry) -> Artifact | None:
            entry = await reg.current()
            return None if entry is None or entry.is_configured else await reg.fetch(entry)

        artifact = asyncio.run(_with_registry(url, promoted))
        if artifact is not None:
            return Served(load_artifact(artifact).router, artifact.version, "promoted")
    root = configured_dir(config.router_artifact if config else None)
    return Served(load_checked(root), Artifact.read(root).version, "configured")


def policy_targets(name: str, config: GatewayConfig | None, base: Targets) -> tuple[Targets, str | None]:
    """The targets a policy file states (`target: {strong_share}` / `{quality}`), over `base`; and a
    note when it states none this command can measure. A file that is not a valid policy is a
    ConfigError naming it, as `route` and `policy calibrate` report it."""
    from gateway.policy.loader import parse_policy
    from gateway.policy.sources import policy_sources, shipped_policies_dir, user_policies_dir

    user_dir = user_policies_dir(config) if config else None
    sources = policy_sources(user_dir, shipped_policies_dir())
    if name not in sources:
        raise ConfigError(f"policy '{name}' is not shipped and not in {user_dir or './routing_policies'} "
                          f"({', '.join(sorted(sources))})")
    target = parse_policy(sources[name].path).target
    if target is None:
        return base, f"policy '{name}' states no target; measured at the defaults"
    if target.strong_share is not None:
        return Targets(target.strong_share, base.quality, base.threshold), None
    if target.quality is not None:
        return Targets(base.strong_share, target.quality, base.threshold), None
    return base, f"policy '{name}' target {target.kind} is not a share or a quality; measured at the defaults"


def split_rows(data: RoutingData, split: str) -> RoutingData:
    return data if split == "all" else data.subset(data.split == split)


def evaluate(candidate: str, data_path: str, *, split: str, weak: str | None, strong: str | None,
             targets: Targets, policy: str | None, config_path: str | None, against: str | None,
             as_json: bool, progress: bool) -> int:
    config = gateway_config(config_path)
    if (weak is None) != (strong is None):
        return _err("switchyard router evaluate: give both --weak and --strong, or neither")
    if weak is not None and weak == strong:  # a table of a model against itself: APGR 0, CPT 100%, all of it noise
        return _err(f"switchyard router evaluate: --weak and --strong are both {weak}: give two models")
    if policy:
        try:
            targets, note = policy_targets(policy, config, targets)
        except ConfigError as exc:
            return _err(f"switchyard router evaluate: {exc}")
        if note:
            print(f"note: {note}", file=sys.stderr)
    try:
        cand = Served(load_checked(candidate), Artifact.read(candidate).version, candidate)
        serving = serving_router(config, against)
    except (ArtifactError, OSError, ValueError) as exc:
        return _err(f"switchyard router evaluate: {exc}")
    except StoreUnavailable as exc:
        return _err(f"switchyard router evaluate: cannot read the promoted router: {exc}")
    data = split_rows(load_data(data_path), split)
    if not data.ids:
        return _err(f"switchyard router evaluate: {data_path} has no {split} rows (try --split all)")
    pairs = [(weak, strong)] if weak and strong else pick_pairs(data)
    unknown = [m for pair in pairs for m in pair if m not in data.models]
    if unknown:
        return _err(f"switchyard router evaluate: {', '.join(unknown)} not in {data_path} "
                    f"(models: {', '.join(data.models)})")
    # A pair no row scores both of would print a table of nan and of the metrics' values for no prompts.
    unscored = [f"{w} and {s}" for w, s in pairs if not pair_rows(data, data.col(w), data.col(s)).any()]
    if unscored or not pairs:
        rows = "row" if split == "all" else f"{split} row"
        return _err(f"switchyard router evaluate: no {rows} of {data_path} has a score for both "
                    f"{', '.join(unscored) or 'of any two models'} (models: {', '.join(data.models)})")
    reports = compare({"candidate": cand.router, "serving": serving.router}, data, pairs, targets, progress)
    result = result_json(data_path, split, len(data.ids), {"version": cand.version, "source": candidate},
                         {"version": serving.version, "source": serving.source}, targets, reports)
    print(json.dumps(result, indent=1) if as_json else render(result))
    return 0
