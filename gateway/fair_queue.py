"""A bounded queue shared fairly between keys (tenants): what shadow evaluation waits in.

One FIFO per key, served in turn (round robin), so that a key with many items waiting delays
another key's next item by at most one item of its own. The bound is on all items together; when
it is reached, a new item pushes out the newest item of the key holding the most, unless its own
key already holds as many (then the new item is the one dropped): a key flooding the queue keeps
at most its share of it once others need room, and alone it may use all of it. Items taken and
not yet `done` count against their key's `running` bound: one key's slow items cannot hold every
worker while other keys' items wait.

Single event loop, no locks: `put` never waits (it is called on the request path), `get` waits
for an item whose key is under its bound.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self, size: int, running: int) -> None:
        self.size = size
        self.running = running  # items of one key taken and not yet done, at most
        self._waiting: OrderedDict[str, deque[T]] = OrderedDict()  # keys with items, in serving order
        self._taken: dict[str, int] = {}
        self._count = 0
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return self._count

    def put(self, key: str, item: T) -> T | None:
        """Queue `item` under `key`; return the item dropped to make room (maybe `item`), else None."""
        mine = self._waiting.get(key)
        dropped: T | None = None
        if self._count >= self.size:
            fullest = max(self._waiting, key=lambda k: len(self._waiting[k]))
            if len(self._waiting[fullest]) <= (len(mine) if mine else 0):
                return item
            dropped = self._waiting[fullest].pop()  # its newest: the oldest of a key waited longest
            self._count -= 1
            if not self._waiting[fullest]:
                del self._waiting[fullest]
        self._waiting.setdefault(key, deque()).append(item)
        self._count += 1
        self._wake.set()
        return dropped

    def _take(self) -> tuple[str, T] | None:
        for key, items in self._waiting.items():
            if self._taken.get(key, 0) < self.running:
                item = items.popleft()
                self._count -= 1
                del self._waiting[key]
                if items:  # to the back of the line: every other key is served first
                    self._waiting[key] = items
                self._taken[key] = self._taken.get(key, 0) + 1
                return key, item
        return None

    async def get(self) -> tuple[str, T]:
        """The next item in turn whose key is under its running bound; call `done(key)` after it."""
        while (got := self._take()) is None:
            self._wake.clear()  # nothing ready: wait for a `put` or a `done`
            await self._wake.wait()
        return got

    def done(self, key: str) -> None:
        left = self._taken[key] - 1
        if left:
            self._taken[key] = left
        else:
            del self._taken[key]
        self._wake.set()
