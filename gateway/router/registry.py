"""Which router every replica serves: promoted artifacts, the current pointer, and their history.

All of it lives in the shared store (keys built in `gateway.state`):

- `sy:router:artifact:<sha256>` holds a promoted artifact's files (`Artifact.pack`), written once;
- `sy:router:current` is a small JSON pointer `{version, digest, name, at, by, action}` that the
  replicas poll (`gateway.router.sync`); `digest: null` means "each replica's configured router";
- `sy:router:history` appends that same entry for every promotion and rollback.

What is served is a stack replayed from the history: the configured router at the bottom, a
promotion (or a rollback to a named version) pushes, a plain rollback pops. So `rollback` undoes
the last change, and rolling back past the first promotion returns replicas to their configured
router. The pointer is written after the artifact's bytes, so a replica never sees a version it
cannot fetch. Two operators changing versions at the same instant are not serialised: the last
write wins, and the history shows both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import orjson

from gateway.router.artifact import Artifact, ArtifactError
from gateway.state import Store, router_artifact_key, router_current_key, router_history_key

CONFIGURED = "configured"  # the version name for "each replica's own configured router"
RESTORED = "restored"  # the action of a pointer a replica put back after the store lost it: no change


class RegistryError(Exception):
    """A promotion or rollback that cannot be done as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One change of the served router; also the pointer's content."""

    version: str            # `name@hash12`, or CONFIGURED
    digest: str | None      # the artifact's sha256; None for the configured router
    name: str | None
    at: float               # unix time of the change
    by: str                 # who made it (user@host unless given)
    action: str = "promote"  # "promote" | "rollback" | "restored"
    explicit: bool = False   # a rollback to a named version (pushes, like a promotion)

    def dump(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def load(cls, raw: bytes) -> Entry:
        data = orjson.loads(raw)
        return cls(**{k: data[k] for k in ("version", "digest", "name", "at", "by", "action", "explicit")
                      if k in data})

    @property
    def is_configured(self) -> bool:
        return self.digest is None


def serving_stack(history: Sequence[Entry]) -> list[Entry | None]:
    """What was served, oldest first: None (the configured router), then each live promotion."""
    stack: list[Entry | None] = [None]
    for e in history:
        if e.action == "rollback" and not e.explicit:
            if len(stack) > 1:
                stack.pop()
        else:
            stack.append(None if e.is_configured else e)
    return stack


MIN_PREFIX = 6  # hex digits of a hash prefix that names a version: fewer would too easily name two


def find_version(history: Sequence[Entry], wanted: str) -> Entry | None:
    """The latest entry matching a version string, a name, or a hash prefix of MIN_PREFIX+ characters."""
    for e in reversed(history):
        if e.digest is None:
            continue
        if wanted in (e.version, e.name) or (len(wanted) >= MIN_PREFIX and e.digest.startswith(wanted.lower())):
            return e
    return None


class RouterRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def current_raw(self) -> bytes | None:
        """The pointer's bytes: what replicas poll (one small GET)."""
        return await self.store.get(router_current_key())

    async def current(self) -> Entry | None:
        raw = await self.current_raw()
        return Entry.load(raw) if raw else None

    async def history(self) -> list[Entry]:
        return [Entry.load(raw) for raw in await self.store.list_read(router_history_key())]

    async def fetch(self, entry: Entry) -> Artifact:
        if entry.digest is None or entry.name is None:
            raise ArtifactError("the configured router is not stored")
        blob = await self.store.get(router_artifact_key(entry.digest))
        if blob is None:
            raise ArtifactError(f"router {entry.version} is promoted but its bytes are not in the store")
        return Artifact.unpack(blob, entry.name, entry.digest)

    async def promote(self, artifact: Artifact, by: str) -> Entry | None:
        """Store the artifact and point every replica at it; None when it is served already."""
        current = await self.current()
        if current is not None and current.version == artifact.version:
            return None
        await self.store.set(router_artifact_key(artifact.digest), artifact.pack())
        entry = Entry(artifact.version, artifact.digest, artifact.name, time.time(), by)
        await self._publish(entry)
        return entry

    async def rollback(self, by: str, to: str | None = None) -> Entry:
        """Back to what was served before the last change, or to a named version (or `configured`)."""
        history = await self.history()
        if to is None:
            stack = serving_stack(history)
            if len(stack) < 2:
                raise RegistryError("nothing to roll back: no promoted router is being served")
            target = stack[-2]
            entry = Entry(CONFIGURED, None, None, time.time(), by, "rollback") if target is None else \
                Entry(target.version, target.digest, target.name, time.time(), by, "rollback")
            if target is not None:  # as for a named version: replicas would refuse it and keep the old one
                await self.fetch(target)
        elif to == CONFIGURED:
            entry = Entry(CONFIGURED, None, None, time.time(), by, "rollback", explicit=True)
        else:
            found = find_version(history, to)
            if found is None:
                known = ", ".join(dict.fromkeys(e.version for e in reversed(history) if e.digest)) or "none"
                why = f"no promoted router matches '{to}' (known: {known}, or '{CONFIGURED}')"
                if len(to) < MIN_PREFIX and any(e.digest and e.digest.startswith(to.lower()) for e in history):
                    why += f"; a hash prefix needs {MIN_PREFIX} or more characters"  # it begins a version listed
                raise RegistryError(why)
            entry = Entry(found.version, found.digest, found.name, time.time(), by, "rollback", explicit=True)
            await self.fetch(found)  # refuse a version whose bytes are gone or damaged
        await self._publish(entry)
        return entry

    async def restore(self, served: Entry, artifact: Artifact, by: str) -> bytes:
        """Put back the pointer (and the artifact's bytes) of the promoted version a replica serves, after
        the store lost them (Redis restarted empty): no operator changed the router, so no replica should
        go back to its configured one. Only where the pointer is still absent; replicas racing all read
        the winner's pointer, which alone is added to the history (as a push: a rollback undoes it).
        Returns what the pointer holds."""
        await self.store.set(router_artifact_key(artifact.digest), artifact.pack())  # same bytes, same key
        raw = Entry(served.version, served.digest, served.name, time.time(), by, RESTORED).dump()
        now = await self.store.set_if_absent(router_current_key(), raw)
        if now == raw:
            await self.store.list_append(router_history_key(), raw)
        return now

    async def _publish(self, entry: Entry) -> None:
        raw = entry.dump()
        await self.store.set(router_current_key(), raw)
        await self.store.list_append(router_history_key(), raw)


__all__ = ["CONFIGURED", "Entry", "RegistryError", "RouterRegistry", "find_version", "serving_stack"]
