"""Policy versions: an audit of every version that came into force, and one version in force for all replicas.

Every version a replica loads (at start-up, when a file changes, when the shipped version comes
back after a delete) becomes an audit entry `{policy, version, at, source, by, path, spec}`: it is
logged (logger `switchyard.policy`, the fields as structured `extra`) and appended to
`sy:policy:audit:{<policy>}` in the store, and a change also replaces `sy:policy:current:{<policy>}`,
the pointer every replica follows. The store is written by the watch task, never on the request path.
A policy unloaded with its deleted file is an entry too (version `unloaded`, source `file deleted`,
no spec), which leaves the pointer alone: the replicas that still have the file keep serving it.

One entry per change, not per replica: the append is skipped when the last entry has the same
version and the pointer already names it (atomically, a Lua script on Redis), so N replicas reloading
the same file write one entry, the first one's `by`. A change that moves the pointer is always
appended: the last entry may be a replica's start-up with that version, which moved nothing.
`switchyard policy rollback` writes an entry of its own (`source: cli rollback`).

Which version wins: the latest change, by time. A replica follows the pointer when it names another
version than the one it serves and was written after that one came into force here; a file edited
on a replica is a newer change, so it wins and becomes the pointer. At start-up a replica serves its
own files (the pointer is set only if none exists yet), except a file whose version the pointer's
change replaced (it was in force before that change: a folder a rollback could not write still holds
the version rolled back from), and follows every change made after it started. Replicas that share a
policy folder agree through their reloaders; those that do not, through the pointer, within one poll
(`interval_s`). A pointer the store lost (restarted empty) is put back by the running replicas, each
offering the version it serves (`source: restored`), which no replica follows: a store that restarted
changes nothing any replica serves. Clocks are compared across hosts: keep them in sync (NTP), as for
the rest of the store's time stamps.

With the in-memory store the audit is this process's own (history of this process only), and
nothing is shared: the CLI's `history` and `rollback` need the shared store (`redis_url`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.policy.loader import BoundPolicy, Loaded, PolicySet, Unloaded
from gateway.policy.schema import PolicySpec
from gateway.state import Store, StoreUnavailable, policy_audit_key, policy_current_key

log = logging.getLogger("switchyard.policy")
_QUIET_S = 60.0
UNLOADED = "unloaded"  # the version of an audit entry saying the policy went out of force
RESTORED = "restored"  # the source of a pointer put back after the store lost it: what a replica served, no change


def replica_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def spec_json(spec: PolicySpec) -> dict[str, Any]:
    """The spec as stored and written back by a rollback: what the file set, validated (defaults left
    out, so it reads back as the same spec: some options may not be given together)."""
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_unset=True)
    return data


def spec_yaml(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=False)


@dataclass(frozen=True, slots=True)
class VersionEntry:
    policy: str
    version: str
    at: float                # unix time it came into force
    source: str              # "start-up" | "file reload" | "cli rollback" | ...
    by: str                  # host/pid of the replica, or user@host of the CLI
    path: str | None
    spec: dict[str, Any]

    def dump(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def load(cls, raw: bytes) -> VersionEntry:
        d = orjson.loads(raw)
        return cls(d["policy"], d["version"], float(d["at"]), d.get("source", ""), d.get("by", ""),
                   d.get("path"), d.get("spec") or {})

    @classmethod
    def of(cls, loaded: Loaded | Unloaded, by: str) -> VersionEntry:
        if isinstance(loaded, Unloaded):
            return cls(loaded.name, UNLOADED, loaded.at, "file deleted", by, str(loaded.path), {})
        p = loaded.policy
        return cls(p.name, p.version, loaded.at, loaded.source, by, str(loaded.path), spec_json(p.spec))


class PolicyVersions:
    """The store side: append an entry (once per version change) and move the pointer; read them back."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, entry: VersionEntry, *, change: bool = True) -> bool:
        """True when appended. A start-up load (`change=False`) sets the pointer only if none exists."""
        return await self.store.record_version(policy_audit_key(entry.policy), policy_current_key(entry.policy),
                                               entry.dump(), entry.version, change)

    async def history(self, policy: str) -> list[VersionEntry]:
        return [VersionEntry.load(raw) for raw in await self.store.list_read(policy_audit_key(policy))]

    async def current_raw(self, policy: str) -> bytes | None:
        return await self.store.get(policy_current_key(policy))


def log_entry(entry: VersionEntry, message: str) -> None:
    log.info(message, extra={"event": "policy_version", "policy": entry.policy, "policy_version": entry.version,
                             "source": entry.source, "by": entry.by, "path": entry.path, "at": round(entry.at, 3),
                             "spec": entry.spec})


class PolicyFollower:
    """The watch task: reload changed files (in a thread), audit what came into force, follow the pointer."""

    def __init__(self, policies: PolicySet, versions: PolicyVersions, *, shared: bool,
                 interval_s: float = 1.0) -> None:
        self.policies = policies
        self.versions = versions
        self.shared = shared  # a store other replicas see: follow its pointer
        self.interval_s = interval_s
        self.by = replica_id()
        self._pending: list[VersionEntry] = []
        self._seen: dict[str, bytes | None] = {}
        self._warned_at = -_QUIET_S

    def _take_loaded(self) -> None:
        loaded, self.policies.loaded = self.policies.loaded, []
        for item in loaded:
            entry = VersionEntry.of(item, self.by)
            if isinstance(item, Loaded):  # the loader logged the unload already (`policy_unloaded`)
                log_entry(entry, f"policy {entry.policy} version {entry.version} in force ({entry.source})")
            self._pending.append(entry)

    async def publish(self) -> None:
        """Write the queued entries; on a store outage they stay queued for the next step."""
        self._take_loaded()
        while self._pending:
            entry = self._pending[0]
            try:
                await self.versions.record(entry, change=entry.source != "start-up" and entry.version != UNLOADED)
            except StoreUnavailable as exc:
                self._warn(f"cannot record policy {entry.policy} version {entry.version} ({exc}); will retry")
                return
            self._pending.pop(0)

    async def follow(self) -> list[str]:
        """Put in force each pointer that names a newer change than this replica's; the names changed."""
        changed = []
        for name, bound in list(self.policies.policies.items()):
            try:
                raw = await self.versions.current_raw(name)
            except StoreUnavailable as exc:
                self._warn(f"cannot read the policy versions in force ({exc}); keeping this replica's")
                break
            if raw is None:
                # The store lost the pointer (Redis restarted empty): put back the version this replica
                # serves, as if it had started now. Left unset, the next replica to start would set its own
                # file's version, and every running replica would follow it as a newer change.
                try:
                    await self._restore(name, bound)
                except StoreUnavailable as exc:
                    self._warn(f"cannot restore the policy versions in force ({exc}); keeping this replica's")
                    break
                continue
            if raw == self._seen.get(name):
                continue
            first_look = name not in self._seen
            self._seen[name] = raw
            entry = VersionEntry.load(raw)
            # An unload is the pointer only where there was none before it, a restored one only where the store
            # lost it: neither is a change to follow (a replica serving another version keeps it, as it did).
            if entry.version in (bound.version, UNLOADED) or entry.source == RESTORED:
                continue
            if entry.at <= self.policies.since.get(name, 0.0):
                try:
                    if not (first_look and await self._superseded(name, bound.version, entry.at)):
                        continue
                except StoreUnavailable as exc:
                    self._seen.pop(name, None)  # asked again on the next step
                    self._warn(f"cannot read the policy versions in force ({exc}); keeping this replica's")
                    break
            try:
                self.policies.adopt(name, PolicySpec.model_validate(entry.spec), entry.at)
            except (ConfigError, ValidationError) as exc:
                log.error("policy %s version %s (%s by %s) cannot be served here, keeping %s: %s",
                          name, entry.version, entry.source, entry.by, bound.version, exc)
                continue
            log_entry(entry, f"policy {name} version {entry.version} in force (following {entry.source} "
                             f"by {entry.by}; was {bound.version})")
            changed.append(name)
        return changed

    async def _superseded(self, name: str, version: str, before: float) -> bool:
        """Was `version` (this replica's own file's, at start-up) in force before the change the pointer names?
        Then that change replaced it, and the file is stale, not an edit: a folder the rollback could not write
        (a read-only ConfigMap) still holds the version rolled back from, and a replica starting from it, on a
        rolling restart or a scale-up, served that version beside replicas serving the rolled-back one."""
        return any(e.version == version and e.at < before for e in await self.versions.history(name))

    async def _restore(self, name: str, bound: BoundPolicy) -> None:
        entry = VersionEntry(name, bound.version, self.policies.since.get(name, time.time()), RESTORED, self.by,
                             None, spec_json(bound.spec))
        if await self.versions.record(entry, change=False):
            log_entry(entry, f"policy {name} version {entry.version} in force (restored to the store, which had "
                             "lost it)")

    async def step(self) -> None:
        await asyncio.to_thread(self.policies.reload_changed)
        await self.publish()
        if self.shared:
            await self.follow()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad step
                log.exception("policy watch step failed")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _QUIET_S:
            self._warned_at = now
            log.warning(message)


__all__ = ["UNLOADED", "PolicyFollower", "PolicyVersions", "VersionEntry", "log_entry", "replica_id", "spec_json",
           "spec_yaml"]
