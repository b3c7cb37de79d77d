"""`switchyard serve --workers N`: N worker processes on one host sharing one listening socket.

uvicorn's supervisor binds the socket once and starts N processes; the kernel hands each new
connection to one of them. Each worker builds its own app (`app`, called once per process) with
its own connections, caches and background tasks: what replicas must agree on (budgets, rate
windows, cached answers, the ledger) needs a `redis_url`, exactly as for replicas on many hosts.
The supervisor restarts a worker that dies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gateway.config import ENV_CONFIG, load_config

_ENV_LOGGING = "SWITCHYARD_WORKER_LOGGING"  # "<level> <format>", from the parent to its workers


def app() -> Any:
    """uvicorn's factory: the app of one worker process, from the config the parent checked."""
    from gateway.api.app import create_app
    from gateway.cli import _setup_logging

    level, _, fmt = os.environ.get(_ENV_LOGGING, "info").partition(" ")
    _setup_logging(level, fmt or None)  # a spawned worker inherits none of its parent's logging set-up
    return create_app(load_config(os.environ[ENV_CONFIG]))


def serve(config_path: str, host: str, port: int, workers: int, log_level: str, log_format: str | None) -> int:
    import uvicorn

    from gateway.api.app import check_start_up
    from gateway.api.http_limits import BoundedHttpToolsProtocol

    config = load_config(config_path)  # a bad config fails here, once, rather than in every worker
    # and so does everything else one worker's start-up checks (a broken router, a bad policy file, two
    # tenants with one key: one line, exit 2), as it does for `--workers 1`: the supervisor restarted
    # each worker that failed on it, for ever, holding the port.
    check_start_up(config)
    os.environ[ENV_CONFIG] = str(Path(config_path).resolve())
    os.environ[_ENV_LOGGING] = f"{log_level} {log_format or ''}".strip()
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uvicorn.run("gateway.workers:app", factory=True, host=host, port=port, workers=workers, loop=loop,
                http=BoundedHttpToolsProtocol, log_level=log_level, access_log=False, log_config=None, lifespan="on",
                timeout_graceful_shutdown=10)
    return 0
