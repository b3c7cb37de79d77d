"""Real processes for integration tests: a Redis server, the simulated models, the gateway.

Each helper starts what it needs on a free loopback port and stops exactly what it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout_s: float = 15.0, what: str = "service") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up within {timeout_s} s")


def terminate(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not gone within 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        terminate(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(port: int | None = None) -> RedisServer:
    """A fresh Redis server; give `port` to restart one where its clients expect it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; .ci/run installs it (apt-get install redis-server)")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="sy-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    server = RedisServer(port, process, workdir)
    try:
        wait_until(ping, what="redis-server")
    except TimeoutError:
        server.stop()
        raise
    return server


@dataclass
class Simulator:
    process: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT/v1

    def stop(self) -> None:
        terminate(self.process)

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.url.removesuffix("/v1") + "/sim/stats", timeout=5).json())

    def reset(self) -> None:
        httpx.post(self.url.removesuffix("/v1") + "/sim/reset", timeout=5).raise_for_status()

    def received(self) -> list[dict[str, str]]:
        """The headers of the simulator's recent chat-completions requests, oldest first."""
        return list(httpx.get(self.url.removesuffix("/v1") + "/sim/received", timeout=5).json())


def start_simulator(models_file: Path) -> Simulator:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.simulator", "--port", "0", "--models", str(models_file)],
        # stderr goes nowhere: nobody reads the pipe after the ready line, and a full pipe would stall it
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "listening on" in line:
            return Simulator(process, line.strip().rsplit(" ", 1)[-1])
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("the simulator did not start")


class GatewayServer:
    """The real app under uvicorn in a background thread, on a free port: tests reach it over HTTP."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.app = app
        from gateway.api.http_limits import BoundedHttpToolsProtocol

        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, loop="asyncio", lifespan="on", http=BoundedHttpToolsProtocol)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayServer:
        self.thread.start()
        # start-up may import litellm (seconds, more on a loaded machine) before it serves
        wait_until(lambda: self.server.started, timeout_s=60.0, what="gateway")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextlib.contextmanager
def running_gateway(app: Any) -> Iterator[GatewayServer]:
    server = GatewayServer(app).start()
    try:
        yield server
    finally:
        server.stop()
