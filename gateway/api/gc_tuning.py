"""The cyclic garbage collector, set for a server's steady state while an app serves.

CPython collects its youngest generation every 700 net container allocations, and every
collection of the oldest one walks every object alive. On the gateway that meant a young
collection every ~4 requests (a request in flight holds hundreds of containers until it ends;
spans waiting for their export batch and records waiting for their writer live a little longer),
and full collections that walked the ~110,000 objects made at start-up (the tokenizer, litellm,
the router, the policies), none of which is ever garbage: about 6% of the instructions of an
`auto` request (benchmarks/overhead/inprocess.py under callgrind; README, "Overhead").

So while an app serves: what is alive once it has started is frozen (`gc.freeze`: left out of
every collection; a frozen object that later becomes cyclic garbage, such as a policy replaced by
a reload, is reclaimed only when the app stops), and the youngest generation is collected every
`YOUNG_THRESHOLD` net allocations. Both are undone when the last serving app of the process stops
(tests run several).
"""

from __future__ import annotations

import gc
import threading

YOUNG_THRESHOLD = 10_000  # a collection then finds what a few hundred requests left in cycles

_lock = threading.Lock()
_serving = 0
_before: tuple[int, int, int] = gc.get_threshold()


def serving() -> None:
    """An app has started: freeze what is alive, collect the young generation less often."""
    global _serving, _before
    with _lock:
        if _serving == 0:  # the first app: what a later one adds at start-up is collected as usual
            _before = gc.get_threshold()
            if _before[0]:  # 0: automatic collection is off, and stays so
                gc.set_threshold(max(YOUNG_THRESHOLD, _before[0]), *_before[1:])
            gc.freeze()
        _serving += 1


def serving_apps() -> int:
    return _serving


def stopped() -> None:
    """An app has stopped: the last one gives the collector back its settings and frozen objects."""
    global _serving
    with _lock:
        _serving = max(0, _serving - 1)
        if _serving == 0:
            gc.set_threshold(*_before)
            gc.unfreeze()
