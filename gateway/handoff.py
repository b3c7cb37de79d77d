"""What the request path hands to a background writer (the ledger's bills, request records).

A bounded list: `put` appends (no await, no future, no per-item bookkeeping) and wakes the writer
only when the list was empty; the writer `take`s everything waiting at once and says when it is
`done` with it. An `asyncio.Queue` does the same one item at a time (a put, a get and a
task_done per item, each with its own checks and wake-ups), which on the request path cost
more than the bill or record it carried.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[T] = []
        self.taken: list[T] = []  # the batch the writer is working on
        self._waiting = asyncio.Event()  # set while items wait
        self._idle = asyncio.Event()  # set while nothing waits nor is being written
        self._idle.set()

    def put(self, item: T) -> bool:
        """Leave `item` for the writer; False (nothing left) when `limit` items already wait."""
        items = self.items
        if len(items) >= self.limit:
            return False
        items.append(item)
        if len(items) == 1:
            self._waiting.set()
            self._idle.clear()
        return True

    def __len__(self) -> int:
        return len(self.items)

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Until something waits (True), or `timeout_s` passes (False)."""
        if self.items:
            return True
        try:
            await asyncio.wait_for(self._waiting.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def take(self, most: int) -> list[T]:
        """Up to `most` of the waiting items, oldest first; `done` once they are dealt with."""
        items = self.items
        if len(items) <= most:
            self.items, batch = [], items
        else:
            batch, self.items = items[:most], items[most:]
        if not self.items:
            self._waiting.clear()
        self.taken = batch
        return batch

    def done(self) -> None:
        """The batch `take` gave is written (or given up on)."""
        self.taken = []
        if not self.items:
            self._idle.set()

    async def drained(self, timeout_s: float) -> None:
        """Until everything put so far is done (at most `timeout_s`)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            pass
