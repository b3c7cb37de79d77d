"""Keeping a replica on the promoted router: poll the pointer, fetch, load off the loop, swap.

A background task (started in the app's lifespan, never on the request path) reads
`sy:router:current` every `interval_s` (one small GET). When it changed, the replica fetches the
artifact's bytes, loads and checks them as `router promote` does (`load_checked`: loadable,
router.json and router.npz in agreement, sane on the smoke prompts) in a worker thread, and swaps
them in on the event loop in one assignment (`ServingRouter.swap`). The same step runs once at start-up, before the
replica takes traffic, so a new replica serves the promoted version from its first request.

A store that does not answer leaves the replica on its current router (logged at most once per
minute) and the next poll tries again. A store that answers without the pointer after it had one lost
it (Redis restarted empty: no rollback removes the pointer, a rollback to the configured router writes
one that says so): a replica serving a promoted version puts it back, artifact and pointer
(`RouterRegistry.restore`), rather than every replica silently going back to its configured router.

A version that cannot be loaded or fails that check (bytes that reached the store by another path
than `router promote`) is logged once (`router_rejected`) and skipped until the pointer changes
again: the replica keeps serving what it had.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from gateway.router.artifact import Artifact, ArtifactError
from gateway.router.registry import Entry, RouterRegistry
from gateway.router.serving import ServingRouter, load_artifact
from gateway.signal import RememberingRouter
from gateway.state import StoreUnavailable

log = logging.getLogger("switchyard.router")
_QUIET_S = 60.0


class RouterSync:
    def __init__(self, serving: ServingRouter, registry: RouterRegistry, interval_s: float = 1.0) -> None:
        self.serving = serving
        self.registry = registry
        self.interval_s = interval_s
        self._seen: bytes | None = None  # the pointer as last acted on
        self._promoted: tuple[Entry, Artifact] | None = None  # the promoted version served, to put back
        self._warned_at = -_QUIET_S

    async def check(self) -> bool:
        """One poll; True when the served router changed."""
        try:
            raw = await self.registry.current_raw()
            if raw is None and self._seen is not None and self._promoted is not None:
                raw = await self._restore(*self._promoted)
        except StoreUnavailable as exc:
            self._warn(f"cannot read the promoted router version ({exc}); serving {self.serving.version}")
            return False
        if raw == self._seen:
            return False
        entry = Entry.load(raw) if raw else None
        try:
            changed = await self._apply(entry)
        except StoreUnavailable as exc:
            self._warn(f"cannot fetch router {entry.version if entry else ''} ({exc}); "
                       f"serving {self.serving.version}")
            return False  # not marked seen: the next poll tries again
        except (ArtifactError, OSError, ValueError, KeyError) as exc:
            log.error("router %s cannot be served (%s); still serving %s",
                      entry.version if entry else "configured", exc, self.serving.version,
                      extra={"event": "router_rejected", "version": entry.version if entry else "configured",
                             "serving": self.serving.version, "error": str(exc)})
            changed = False
        self._seen = raw
        return changed

    async def _restore(self, served: Entry, artifact: Artifact) -> bytes:
        raw = await self.registry.restore(served, artifact, f"{socket.gethostname()}/{os.getpid()}")
        log.warning("the store lost the promoted router version; put back %s, which this replica serves",
                    served.version, extra={"event": "router_restored", "version": served.version})
        return raw

    async def _apply(self, entry: Entry | None) -> bool:
        serving = self.serving
        wanted = serving.configured_version if entry is None or entry.is_configured else entry.version
        if wanted == serving.version:
            return False
        new: RememberingRouter
        if entry is None or entry.is_configured:
            new = await asyncio.to_thread(serving.load_configured)
            promoted = None
        else:
            artifact = await self.registry.fetch(entry)
            new = await asyncio.to_thread(load_artifact, artifact)
            promoted = (entry, artifact)
        old = serving.swap(new)
        self._promoted = promoted
        how = f"{entry.action} by {entry.by}" if entry else "no version promoted"
        log.info("router %s now serving (was %s; %s)", new.version, old.version, how, extra={
            "event": "router_reload", "version": new.version, "was": old.version,
            "action": entry.action if entry else "configured", "by": entry.by if entry else None})
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("router version check failed")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _QUIET_S:
            self._warned_at = now
            log.warning(message)
