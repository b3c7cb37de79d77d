"""Requests in flight per tenant, in this process, under a cap.

The upstream connection pool (`DirectBackend`, 512 connections per worker), the event loop and the
deployments' own concurrency are shared by every tenant. Without a cap on how many requests one
tenant may have open at once, its long answers, or streams it reads slowly (a stream's upstream
connection is held while the client does not read), could hold all of them while every other
tenant's requests waited out their deadlines. Rate limits do not bound this: a request can last
minutes. The cap is per process, as the pool is; a replica or a worker has its own.

A request takes a slot once authenticated and gives it back when its answer is complete: a whole
answer when it is returned, a stream when it ends (however it ends), and then only once every call
it gave up on (a timeout, its deadline, a hedge's losing leg: `gateway.executor.drain`) has ended
too. Such a call is still read, on an upstream connection, for up to `DRAIN_S`: were the slot
given back with the answer, a client sending `x-switchyard-timeout-ms: 1` would get its 504 at
once and could leave any number of calls running. One over the cap is a 429 at once
(`concurrency_limit_exceeded`, `retry-after: 1`), before anything is held or called.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.errors import RateLimited


@dataclass(slots=True, eq=False)  # a slot is itself, not its fields: hashable, a default value
class Slot:
    """One request's place under its tenant's cap, given back once the request has ended (`release`,
    idempotent) and so has every call it left running (`keep` for each, `let_go` when it ends)."""

    owner: InFlight | None
    tenant: str
    kept: int = 0          # calls the request gave up on that are still being read
    released: bool = False

    def release(self) -> None:
        if self.owner is not None and not self.released:
            self.released = True
            self._leave_if_done()

    def keep(self) -> None:
        """A call the request gave up on is still read: the slot stays taken until `let_go`."""
        if self.owner is not None:
            self.kept += 1

    def let_go(self) -> None:
        if self.owner is not None and self.kept > 0:
            self.kept -= 1
            self._leave_if_done()

    def _leave_if_done(self) -> None:
        if self.released and self.kept == 0:
            owner, self.owner = self.owner, None
            if owner is not None:
                owner.left(self.tenant)


NO_SLOT = Slot(None, "")  # uncapped: nothing to give back


@dataclass(slots=True)
class InFlight:
    counts: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # every tenant that has had a request in flight here

    def enter(self, tenant: str, cap: int | None) -> Slot:
        """A slot for one more of `tenant`'s requests (None: no cap), or a 429 when it has `cap` open."""
        if cap is None:
            return NO_SLOT
        open_now = self.counts.get(tenant, 0)
        if open_now >= cap:
            raise RateLimited(f"too many requests in flight for this key: {cap} at once; retry when one "
                              "has finished", code="concurrency_limit_exceeded",
                              headers={"retry-after": "1", "x-switchyard-limit": "max_concurrent_requests"})
        self.counts[tenant] = open_now + 1
        self.seen.add(tenant)
        return Slot(self, tenant)

    def left(self, tenant: str) -> None:
        open_now = self.counts.get(tenant, 0) - 1
        if open_now > 0:
            self.counts[tenant] = open_now
        else:
            self.counts.pop(tenant, None)

    def gauge(self) -> dict[str, int]:
        """Requests in flight per tenant that has had one in this process, none left open read as 0: a series
        that vanished at zero showed as "no data" on a dashboard. Tenants are the config's and the admin
        API's, so the dict is as bounded as they are."""
        return {tenant: self.counts.get(tenant, 0) for tenant in self.seen}
