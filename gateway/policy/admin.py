"""`switchyard policy history | rollback`: the operator's side of policy versions.

Both read the audit in the shared store (`gateway.policy.versions`) with the gateway's own config
(`--config`, `$SWITCHYARD_CONFIG`, or just `$SWITCHYARD_REDIS_URL`). `rollback` records the change
first, then writes the old spec back as the policy's file in the user's folder (atomically, so a
reloader never reads half a file): replicas that share the folder reload it, the others follow
the store's pointer. With the in-memory store each gateway's audit is its own, and the commands say
so.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from gateway.config import ENV_CONFIG, ENV_REDIS_URL, GatewayConfig
from gateway.errors import ConfigError
from gateway.policy.loader import bind_policy, spec_version
from gateway.policy.schema import PolicySpec
from gateway.policy.sources import user_policies_dir
from gateway.policy.versions import UNLOADED, PolicyVersions, VersionEntry, spec_yaml
from gateway.router.admin import gateway_config, operator, store_url
from gateway.state import RedisStore, StoreUnavailable, policy_current_key

T = TypeVar("T")
_STORE_TIMEOUT_S = 5.0


def _err(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _needs_store(command: str) -> int:
    return _err(f"switchyard policy {command}: policy versions are kept in the shared store, and none is configured: "
                f"give --config with a gateway YAML that has redis_url (or set ${ENV_CONFIG} or ${ENV_REDIS_URL}). "
                "With the in-memory store a gateway's audit is its own: see its log (logger switchyard.policy).")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


async def _with_versions(url: str, work: Callable[[PolicyVersions], Awaitable[T]]) -> T:
    store = RedisStore(url, timeout_s=_STORE_TIMEOUT_S)
    try:
        return await work(PolicyVersions(store))
    finally:
        await store.close()


async def _history_and_current(v: PolicyVersions, name: str) -> tuple[list[VersionEntry], str | None]:
    """The audit and the version in force: none once the latest change unloaded the policy (the
    pointer still names the version before, which replicas with the file keep serving)."""
    raw = await v.store.get(policy_current_key(name))
    entries = await v.history(name)
    if entries and entries[-1].version == UNLOADED:
        return entries, None
    return entries, VersionEntry.load(raw).version if raw else None


def render_history(name: str, entries: list[VersionEntry], current: str | None) -> str:
    """Oldest first; each change with a unified diff of its spec (as YAML) against the version before it."""
    lines: list[str] = []
    previous: VersionEntry | None = None
    for e in entries:
        mark = "  (in force)" if e.version == current and e is _last_of(entries, current) else ""
        lines.append(f"{e.version}  {_when(e.at)}  {e.source}  by {e.by}  {e.path or ''}{mark}".rstrip())
        if e.version == UNLOADED:  # no spec: a version loaded after it is compared with the one before
            continue
        if previous is not None and previous.spec != e.spec:
            diff = difflib.unified_diff(spec_yaml(previous.spec).splitlines(), spec_yaml(e.spec).splitlines(),
                                        f"{name}@{previous.version}", f"{name}@{e.version}", lineterm="")
            lines += [f"    {line}" for line in diff]
        previous = e
    return "\n".join(lines) + "\n"


def _last_of(entries: list[VersionEntry], version: str | None) -> VersionEntry | None:
    return next((e for e in reversed(entries) if e.version == version), None)


def history(name: str, config_path: str | None, as_json: bool = False) -> int:
    url = store_url(gateway_config(config_path))
    if not url:
        return _needs_store("history")
    try:
        entries, current = asyncio.run(_with_versions(url, lambda v: _history_and_current(v, name)))
    except StoreUnavailable as exc:
        return _err(f"switchyard policy history: the store did not answer: {exc}")
    if not entries:
        return _err(f"switchyard policy history: no versions of policy '{name}' recorded")
    if as_json:
        print(json.dumps([_entry_json(e) for e in entries], indent=2))
    else:
        sys.stdout.write(render_history(name, entries, current))
    return 0


def _entry_json(e: VersionEntry) -> dict[str, object]:
    return {"policy": e.policy, "version": e.version, "at": e.at, "source": e.source, "by": e.by,
            "path": e.path, "spec": e.spec}


def policy_folder(config: GatewayConfig | None) -> Path | None:
    if config is not None:
        return user_policies_dir(config)
    here = Path.cwd() / "routing_policies"
    return here if here.is_dir() else None


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_versions(entries: list[VersionEntry], version: str) -> list[VersionEntry]:
    """The latest entry of each version that `version` names, in full or by a prefix of 4+ digits. More
    than one is an ambiguous prefix, refused: taking the latest of them put a version in force that nobody
    named."""
    wanted = version.lower()
    exact = next((e for e in entries if e.version == wanted), None)
    if exact is not None:
        return [exact]
    latest: dict[str, VersionEntry] = {}
    for e in entries:
        if len(wanted) >= 4 and e.version.startswith(wanted):
            latest.setdefault(e.version, e)
    return list(latest.values())


def rollback(name: str, version: str, config_path: str | None, by: str | None = None) -> int:
    config = gateway_config(config_path)
    url = store_url(config)
    if not url:
        return _needs_store("rollback")
    folder = policy_folder(config)
    if folder is None:
        return _err("switchyard policy rollback: no policy folder to write to: set policies_dir in the gateway "
                    "config (or run where ./routing_policies is)")
    if not folder.is_dir():  # configured (policies_dir or $SWITCHYARD_POLICIES_DIR), but not there
        return _err(f"switchyard policy rollback: the policy folder {folder} is not a folder here: run where the "
                    "gateway's policies_dir is")
    try:
        entries, current = asyncio.run(_with_versions(url, lambda v: _history_and_current(v, name)))
    except StoreUnavailable as exc:
        return _err(f"switchyard policy rollback: the store did not answer: {exc}")
    versions = [e for e in reversed(entries) if e.version != UNLOADED]
    matches = find_versions(versions, version)
    if len(matches) != 1:
        known = ", ".join(dict.fromkeys(e.version for e in (matches or versions))) or "none"
        if matches:
            return _err(f"switchyard policy rollback: '{version}' is the start of more than one version of policy "
                        f"'{name}' ({known}): give more of its digits")
        short = " (a prefix of a version needs 4 or more of its characters)" if len(version) < 4 else ""
        return _err(f"switchyard policy rollback: policy '{name}' has no version '{version}'{short} (known: {known})")
    found = matches[0]
    if found.version == current:
        print(f"policy {name}: version {found.version} is in force already")
        return 0
    try:
        spec = PolicySpec.model_validate(found.spec)
        if config is not None:
            bind_policy(name, f"{name}@{found.version}", spec, config.deployments)
    except (ValidationError, ConfigError) as exc:
        return _err(f"switchyard policy rollback: version {found.version} cannot be served by this config: {exc}")
    if spec_version(spec) != found.version:
        return _err(f"switchyard policy rollback: the stored spec of {found.version} does not match its version")
    existing = [p for p in (folder / f"{name}.yaml", folder / f"{name}.yml") if p.is_file()]
    path = existing[0] if existing else folder / f"{name}.yaml"
    entry = VersionEntry(name, found.version, time.time(), "cli rollback", by or operator(), str(path), found.spec)
    try:
        # Recorded before the file is written: the local reloader then finds this version audited already.
        asyncio.run(_with_versions(url, lambda v: v.record(entry)))
    except StoreUnavailable as exc:
        return _err(f"switchyard policy rollback: the store did not answer: {exc}")
    try:
        write_atomically(path, f"# rolled back to {found.version} by {entry.by} at {_when(entry.at)}\n"
                               + spec_yaml(found.spec))
    except OSError as exc:
        # The change is recorded, so every replica follows it: a failure here is not a failed rollback (said
        # as one, on a read-only folder such as a ConfigMap's, it sent operators to retry what had worked).
        print(f"policy {name}: version {found.version} in force (was {current or 'none'}) on every replica, "
              "which follow the store")
        print(f"switchyard policy rollback: but {path} could not be written ({exc.strerror or exc}): a replica "
              "that starts serves its own file, so put this version in the policy folder your replicas read",
              file=sys.stderr)
        return 0
    print(f"policy {name}: version {found.version} in force (was {current or 'none'}); wrote {path}")
    return 0


__all__ = ["find_versions", "history", "render_history", "rollback", "write_atomically"]
