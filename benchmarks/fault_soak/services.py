"""The processes a soak runs against: its own redis-server, the simulated models, one gateway.

Everything listens on free loopback ports and is stopped by the PID this module started. Redis
keeps an append-only file synced on every write, so a Redis killed with SIGKILL and restarted on
the same port and directory comes back with every write it acknowledged (the ledger included).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PRICE = {"input_per_mtok": 0.5, "output_per_mtok": 1.5}
# The faulted deployment's model, the healthy fallback's, and the strong model cascades escalate to.
MODELS = [
    {"name": "sim-primary", "ability": 1.0, "ttft_ms": 15, "tokens_per_s": 400, "output_tokens": 40},
    {"name": "sim-backup", "ability": 1.0, "ttft_ms": 25, "tokens_per_s": 400, "output_tokens": 40},
    {"name": "sim-large", "ability": 3.0, "ttft_ms": 40, "tokens_per_s": 300, "output_tokens": 50},
]
DEPLOYMENT_OF = {"sim-primary": "primary", "sim-backup": "backup", "sim-large": "large"}
# A policy per plan kind; the faulted deployment is in each, a healthy one behind it.
POLICIES: dict[str, dict[str, Any]] = {
    "soak-single": {"candidates": [{"single": "primary"}], "fallbacks": {"primary": ["backup"]}},
    "soak-best-of": {"candidates": [{"best_of": {"deployments": ["primary", "backup", "primary"]}}]},
    "soak-cascade": {"candidates": [{"cascade": {"steps": ["primary", "large"], "confidence": "logprob",
                                                 "threshold": 0.5}}]},
    "soak-hedged": {"candidates": [{"single": "primary"}], "fallbacks": {"primary": ["backup"]},
                    "hedge_after_ms": 150},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up within {timeout_s:g} s")


def _stop(process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass
class Redis:
    """A redis-server the soak owns; `kill` and `restart` keep its port and data directory."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self._ping, "redis-server")

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def kill(self) -> None:
        """SIGKILL by PID: no shutdown, no last save; only the synced append-only file survives."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class Simulator:
    models_file: Path
    process: subprocess.Popen[str] | None = None
    url: str = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.simulator", "--port", "0", "--models", str(self.models_file)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            _stop(self.process)
            raise RuntimeError(f"the simulator did not start: {line!r}")
        self.url = line.strip().rsplit(" ", 1)[-1]

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def set_faults(self, model: str, faults: list[dict[str, Any]]) -> None:
        httpx.post(self.root + "/_sim/faults", json={"model": model, "faults": faults}, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(self.root + "/_sim/reset", timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.root + "/_sim/stats", timeout=5).json())

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class Gateway:
    config_file: Path
    log_file: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_file.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_file), "--port",
                 str(self.port), "--log-format", "json", "--log-level", "info"],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: httpx.get(self.url + "/healthz", timeout=1).status_code == 200, "the gateway", 90)

    def rss_mb(self) -> float:
        """Resident memory of the gateway process, from /proc."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS for the gateway")

    def stop(self) -> None:
        _stop(self.process)


def write_models(folder: Path) -> Path:
    models = folder / "models.yaml"
    models.write_text(yaml.safe_dump({"models": MODELS}))
    return models


def write_config(folder: Path, sim_url: str, redis_url: str) -> Path:
    """The gateway's config, and its policies, in `folder`."""
    policies = folder / "policies"
    policies.mkdir(exist_ok=True)
    for f in (ROOT / "routing_policies").glob("*.yaml"):
        shutil.copy(f, policies / f.name)
    for name, spec in POLICIES.items():
        (policies / f"{name}.yaml").write_text(yaml.safe_dump(
            {"description": f"fault soak: {name}", "cache": {"enabled": False}, "timeout_s": 20, **spec}))
    config = folder / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "deployments": [
            _deployment("primary", "sim-primary", sim_url, "small", timeout_s=1.5, max_retries=1),
            _deployment("backup", "sim-backup", sim_url, "small", timeout_s=5, max_retries=1),
            _deployment("large", "sim-large", sim_url, "large", timeout_s=5, max_retries=1),
        ],
        "redis_url": redis_url,
        "policies_dir": str(policies),
    }))
    return config


def _deployment(name: str, model: str, sim_url: str, tier: str, **extra: Any) -> dict[str, Any]:
    # The simulated models continue a trailing assistant message: a broken stream may resume on them.
    return {"name": name, "model": f"openai/{model}", "api_base": sim_url, "tier": tier, "price": PRICE,
            "supports_prefill": True, **extra}
