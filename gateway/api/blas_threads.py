"""One BLAS thread while an app serves.

numpy's OpenBLAS starts a thread per core and splits even a small matrix-vector product across
them. The router's products on the request path are small (a prompt's hashed features times the
latent and neighbour weights; the neighbour similarities), and the event loop is one thread: a
second BLAS thread only adds hand-offs, and when the other core is busy (a second worker, the
upstream, Redis) the hand-off waits for it. Measured on 2 cores with another process busy on the
second one, a 2,000-token prompt's feature product took 12 ms with OpenBLAS's default and 1.6 ms
with one thread; `assess()` 33 ms against 14 ms (README, "Overhead").

Training (`switchyard train`) does not serve an app and keeps every core. The limit is undone when
the last serving app of the process stops (tests run several).
"""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_limits

_lock = threading.Lock()
_serving = 0
_limits: threadpool_limits | None = None


def serving() -> None:
    """An app has started: BLAS calls from this process run on the calling thread."""
    global _serving, _limits
    with _lock:
        if _serving == 0:
            _limits = threadpool_limits(limits=1, user_api="blas")
        _serving += 1


def stopped() -> None:
    """An app has stopped: the last one gives BLAS back its threads."""
    global _serving, _limits
    with _lock:
        _serving = max(0, _serving - 1)
        if _serving == 0 and _limits is not None:
            _limits.restore_original_limits()
            _limits = None
