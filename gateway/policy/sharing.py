"""Target policies' calibration: one controller per (policy version, tenant), merged across replicas
through the store.

Each tenant's requests are calibrated on that tenant's own traffic: a policy's `strong_share: 0.3`
sends about 30% of *each* tenant's requests to the stronger plan, and its spend and quality targets
hold per tenant. Pooled across tenants, one tenant could move every other tenant's routing: a flood of
easy prompts lowers the pooled threshold (and its shortfall correction raises the share in force) so
that the others' ordinary prompts go to the dearer plan, billed to them. A tenant's controller starts
from the policy's start-up sample, as a new deployment does, and its own traffic outweighs that after
a few hundred requests.

The hot path (`cutoff`, `observe`) touches only this process's memory. Off it, `run` wakes every
`SYNC_INTERVAL_S`: for every controller it adds this replica's observations since the last push to
the hash of the current time bucket (`sy:calib:{<tenant>}:<policy>:<version>:<bucket>`, HINCRBYFLOAT
per cell, so concurrent replicas' additions merge instead of overwriting) and reads the window back:
the last `WINDOW_BUCKETS` buckets of `BUCKET_S` seconds, each expiring after the window. Buckets
older than the previous one no longer change (every replica has pushed into them), so each is read
once more and then kept. All controllers go in one round trip each way. A controller whose window
holds no traffic (its tenant has been quiet for the whole window) is dropped; its tenant starts from
the sample again. With the memory store the same code keeps the window in this process.

A store outage leaves the observations pending (they are pushed later) and the threshold follows
local traffic meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.policy.calibration import Cutoff, Sketch
from gateway.policy.controller import Controller, seed_prior
from gateway.policy.decide import Routing
from gateway.policy.loader import BoundPolicy
from gateway.policy.seed import SeedSample
from gateway.state import Store, StoreUnavailable, calibration_key

log = logging.getLogger("switchyard.calibration")

SYNC_INTERVAL_S = 1.0
BUCKET_S = 60
WINDOW_BUCKETS = 30  # half an hour of traffic


Key = tuple[str, str, str]  # (policy, version, tenant)


@dataclass(slots=True)
class _Window:
    """What a controller's window was read from: buckets that no longer change (sparse cells, and their
    sum) and the rows of the two that may, as last read (to skip re-merging an unchanged window)."""

    settled: dict[int, dict[str, float]] = field(default_factory=dict)
    total: Sketch = field(default_factory=Sketch)
    fresh: list[dict[str, float]] = field(default_factory=list)


class Calibrator:
    def __init__(self, store: Store, seeds: SeedSample, policies: Callable[[], Iterable[BoundPolicy]],
                 *, bucket_s: int = BUCKET_S, window_buckets: int = WINDOW_BUCKETS) -> None:
        self.store = store
        self.seeds = seeds
        self._policies = policies
        self.bucket_s = bucket_s
        self.window_buckets = window_buckets
        self.controllers: dict[Key, Controller] = {}
        self._priors: dict[tuple[str, str], Sketch] = {}  # each policy version's sketch of the start-up sample
        self._windows: dict[Key, _Window] = {}

    # The request path.

    def cutoff(self, policy: BoundPolicy, tenant: str) -> Cutoff:
        controller = self.controllers.get((policy.name, policy.version, tenant))
        if controller is None:  # this tenant's first request under this version: start from the sample
            controller = self._start(policy, tenant)
        return controller.cutoff()

    def observe(self, policy: BoundPolicy, tenant: str, routing: Routing) -> None:
        controller = self.controllers.get((policy.name, policy.version, tenant))
        if controller is not None:
            controller.observe(routing)

    def thresholds(self, policies: Iterable[BoundPolicy]) -> dict[tuple[str, str], float]:
        """The threshold in force per (calibrated policy, tenant), for metrics (never starts one)."""
        current = {(p.name, p.version) for p in policies}
        return {(name, tenant): controller.cutoff().threshold
                for (name, version, tenant), controller in list(self.controllers.items())
                if (name, version) in current}

    # Off the request path.

    def _prior(self, policy: BoundPolicy) -> Sketch:
        key = (policy.name, policy.version)
        prior = self._priors.get(key)
        if prior is None:  # not prepared yet (a policy edited a moment ago): score the sample now, once
            prior = self._priors[key] = seed_prior(self.seeds.sketch_for(policy))  # one, shared by tenants
        return prior

    def _start(self, policy: BoundPolicy, tenant: str) -> Controller:
        assert policy.spec.target is not None
        controller = Controller(policy.spec.target, self._prior(policy))
        return self.controllers.setdefault((policy.name, policy.version, tenant), controller)

    def prepare(self) -> None:
        """Score the start-up sample for every target policy in force that has no prior yet, and forget
        replaced versions. Blocking (the first call assesses the sample): run it in a thread."""
        current = {(p.name, p.version): p for p in self._policies() if p.spec.target is not None}
        for version, policy in current.items():
            if version not in self._priors:
                self._prior(policy)
        for version in [v for v in list(self._priors) if v not in current]:
            self._priors.pop(version, None)
        for key in [k for k in list(self.controllers) if k[:2] not in current]:
            self._forget(key)

    def _forget(self, key: Key) -> None:
        self.controllers.pop(key, None)
        self._windows.pop(key, None)

    async def sync(self, now: float | None = None) -> None:
        """Push every controller's pending observations and read its merged window back, each in one
        round trip for all controllers; drop the controllers whose window holds no traffic."""
        bucket = int((time.time() if now is None else now) // self.bucket_s)
        ttl = self.bucket_s * (self.window_buckets + 1)
        taken: dict[Key, Sketch] = {}
        sums: dict[str, dict[str, float]] = {}
        for key, controller in list(self.controllers.items()):
            pending = controller.take_pending()
            taken[key] = pending
            if pending.weight > 0:
                sums[calibration_key(*key, bucket)] = pending.fields()
        if sums:
            try:
                await self.store.add_to_hashes(sums, ttl)
            except StoreUnavailable as exc:
                for key, pending in taken.items():
                    if (owner := self.controllers.get(key)) is not None:
                        owner.push_failed(pending)
                log.debug("calibration not pushed: %s", exc)
                return
        try:
            windows = await self._read_windows(list(taken), bucket)
        except StoreUnavailable as exc:
            log.debug("calibration not read back: %s", exc)
            return
        for key, window in windows.items():
            found = self.controllers.get(key)
            if found is None:
                continue
            if window is not None:  # (a push always changes what is read back)
                found.merged(window)
            if found.idle():
                self._forget(key)

    async def _read_windows(self, keys: list[Key], bucket: int) -> dict[Key, Sketch | None]:
        """Each controller's window, None where it is what was last read."""
        first = bucket - self.window_buckets + 1
        wanted: list[tuple[Key, int]] = []
        changed: set[Key] = set()
        for key in keys:
            w = self._windows.setdefault(key, _Window())
            expired = [b for b in w.settled if b < first]
            for b in expired:
                del w.settled[b]
            if expired:  # summed again rather than subtracted: an empty window must read exactly 0
                w.total = _sum(w.settled.values())
                changed.add(key)
            wanted += [(key, b) for b in range(first, bucket + 1) if b not in w.settled]
        rows = await self.store.read_hashes([calibration_key(*key, b) for key, b in wanted])
        fresh: dict[Key, list[dict[str, float]]] = {}
        for (key, b), row in zip(wanted, rows, strict=True):
            read = self._windows.get(key)
            if read is None:  # forgotten meanwhile (its policy was replaced)
                continue
            if b < bucket - 1:  # no replica adds to it any more: kept, never read again
                read.settled[b] = row
                read.total = read.total + Sketch.from_fields(row)
                changed.add(key)
            else:
                fresh.setdefault(key, []).append(row)
        out: dict[Key, Sketch | None] = {}
        for key in keys:
            last = self._windows.get(key)
            if last is None:
                continue
            rows_now = fresh.get(key, [])
            if key not in changed and rows_now == last.fresh:
                out[key] = None
                continue
            last.fresh = rows_now
            out[key] = last.total + _sum(rows_now)
        return out

    async def run(self, interval_s: float = SYNC_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.prepare)
                await self.sync()
            except Exception:  # an observer: log and carry on, never stop calibrating
                log.exception("calibration sync failed")


def _sum(rows: Iterable[dict[str, float]]) -> Sketch:
    total = Sketch()
    for row in rows:
        total = total + Sketch.from_fields(row)
    return total
