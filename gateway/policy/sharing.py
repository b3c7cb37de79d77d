"""Target policies' calibration across replicas: one controller per policy version, merged through the store.

The hot path (`cutoff`, `observe`) touches only this process's memory. Off it, `run` wakes every
`SYNC_INTERVAL_S`: for each target policy it adds this replica's observations since the last push
to the hash of the current time bucket (`sy:calib:{<policy>:<version>}:<bucket>`, HINCRBYFLOAT per
cell, so concurrent replicas' additions merge instead of overwriting) and reads the window back:
the last `WINDOW_BUCKETS` buckets of `BUCKET_S` seconds, each expiring after the window. Buckets
older than the previous one no longer change (every replica has pushed into them), so each is read
once more and then kept. With the memory store the same code keeps the window in this process.

A store outage leaves the observations pending (they are pushed later) and the threshold follows
local traffic meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from gateway.policy.calibration import Cutoff, Sketch
from gateway.policy.controller import Controller
from gateway.policy.decide import Routing
from gateway.policy.loader import BoundPolicy
from gateway.policy.seed import SeedSample
from gateway.state import Store, StoreUnavailable, calibration_key

log = logging.getLogger("switchyard.calibration")

SYNC_INTERVAL_S = 1.0
BUCKET_S = 60
WINDOW_BUCKETS = 30  # half an hour of traffic


class Calibrator:
    def __init__(self, store: Store, seeds: SeedSample, policies: Callable[[], Iterable[BoundPolicy]],
                 *, bucket_s: int = BUCKET_S, window_buckets: int = WINDOW_BUCKETS) -> None:
        self.store = store
        self.seeds = seeds
        self._policies = policies
        self.bucket_s = bucket_s
        self.window_buckets = window_buckets
        self.controllers: dict[tuple[str, str], Controller] = {}
        self._settled: dict[tuple[str, str], dict[int, Sketch]] = {}  # buckets that no longer change

    # The request path.

    def cutoff(self, policy: BoundPolicy) -> Cutoff:
        controller = self.controllers.get((policy.name, policy.version))
        if controller is None:  # not prepared yet (a policy edited a moment ago): seed it now, once
            controller = self._start(policy)
        return controller.cutoff()

    def thresholds(self, policies: Iterable[BoundPolicy]) -> dict[str, float]:
        """The threshold in force per calibrated policy, for metrics (never seeds one on demand)."""
        out = {}
        for policy in policies:
            controller = self.controllers.get((policy.name, policy.version))
            if controller is not None:
                out[policy.name] = controller.cutoff().threshold
        return out

    def observe(self, policy: BoundPolicy, routing: Routing) -> None:
        controller = self.controllers.get((policy.name, policy.version))
        if controller is not None:
            controller.observe(routing)

    # Off the request path.

    def _start(self, policy: BoundPolicy) -> Controller:
        assert policy.spec.target is not None
        controller = Controller(policy.spec.target, self.seeds.sketch_for(policy))
        return self.controllers.setdefault((policy.name, policy.version), controller)

    def prepare(self) -> None:
        """Seed every target policy in force that has no controller yet, and forget replaced versions.
        Blocking (the first call assesses the start-up sample): run it in a thread."""
        current = {(p.name, p.version): p for p in self._policies() if p.spec.target is not None}
        for key, policy in current.items():
            if key not in self.controllers:
                self._start(policy)
        for key in [k for k in self.controllers if k not in current]:
            del self.controllers[key]
            self._settled.pop(key, None)

    async def sync(self, now: float | None = None) -> None:
        """Push every controller's pending observations and read its merged window back."""
        bucket = int((time.time() if now is None else now) // self.bucket_s)
        ttl = self.bucket_s * (self.window_buckets + 1)
        for (name, version), controller in list(self.controllers.items()):
            taken = controller.take_pending()
            try:
                await self.store.add_to_hashes({calibration_key(name, version, bucket): taken.fields()}, ttl)
            except StoreUnavailable as exc:
                controller.push_failed(taken)
                log.debug("calibration of %s not pushed: %s", name, exc)
                continue
            try:
                controller.merged(await self._window(name, version, bucket))
            except StoreUnavailable as exc:
                log.debug("calibration of %s not read back: %s", name, exc)

    async def _window(self, name: str, version: str, bucket: int) -> Sketch:
        settled = self._settled.setdefault((name, version), {})
        first = bucket - self.window_buckets + 1
        for b in [b for b in settled if b < first]:
            del settled[b]
        wanted = [b for b in range(first, bucket + 1) if b not in settled]
        rows = await self.store.read_hashes([calibration_key(name, version, b) for b in wanted])
        window = Sketch()
        for b, row in zip(wanted, rows, strict=True):
            sketch = Sketch.from_fields(row)
            if b < bucket - 1:
                settled[b] = sketch
            window = window + sketch
        for sketch in settled.values():
            window = window + sketch
        return window

    async def run(self, interval_s: float = SYNC_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.prepare)
                await self.sync()
            except Exception:  # an observer: log and carry on, never stop calibrating
                log.exception("calibration sync failed")
