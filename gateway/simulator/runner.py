"""Running the simulator: in-process (``start``) or blocking on uvloop (``run``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import uvloop
from aiohttp import web

from .models import SimModel
from .server import build_app

# Closing should not wait long for streams a test abandoned mid-way.
_SHUTDOWN_TIMEOUT_S = 1.0
_BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator serving on ``host:port``; ``url`` is the OpenAI base URL."""

    host: str
    port: int
    _runner: web.AppRunner

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start(
    models: Sequence[SimModel], host: str = "127.0.0.1", port: int = 0, *, seed: int = 0
) -> RunningSimulator:
    """Serve ``models`` on the running loop; ``port=0`` picks a free port."""
    runner = web.AppRunner(build_app(models, seed=seed), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=_BACKLOG)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return RunningSimulator(host, bound_port, runner)


def run(models: Sequence[SimModel], host: str = "127.0.0.1", port: int = 9000, *, seed: int = 0) -> None:
    """Serve until SIGTERM or SIGINT, on uvloop, printing the listening line."""
    uvloop.run(_serve_until_signalled(models, host, port, seed))


async def _serve_until_signalled(models: Sequence[SimModel], host: str, port: int, seed: int) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    simulator = await start(models, host, port, seed=seed)
    try:
        # Launchers (tests, the demo) wait for exactly this line.
        print(f"switchyard-simulator listening on {simulator.url}", flush=True)
        await stopped.wait()
    finally:
        await simulator.close()
