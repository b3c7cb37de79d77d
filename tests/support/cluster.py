"""A real Redis Cluster for tests: three masters on free loopback ports, no replicas, nothing on disk."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from tests.support.processes import terminate, wait_until


@dataclass
class RedisCluster:
    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workdir: str = ""

    @property
    def url(self) -> str:
        """One seed node; the client discovers the others from it."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-c", "-p", str(self.ports[0]), *args],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout

    def stop(self) -> None:
        for process in self.processes:
            terminate(process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too: an ephemeral port from the OS
    can be above 55535, where the bus port does not exist."""
    while True:
        port = random.randint(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port


def _cluster_ok(port: int) -> bool:
    out = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True,
                         timeout=5).stdout
    return "cluster_state:ok" in out


def start_redis_cluster(masters: int = 3) -> RedisCluster:
    """Start `masters` redis-server processes in cluster mode and join them with `redis-cli --cluster create`."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are needed: apt-get install redis-server")
    cluster = RedisCluster([cluster_port() for _ in range(masters)], workdir=tempfile.mkdtemp(prefix="sy-cluster-"))
    try:
        for port in cluster.ports:
            cluster.processes.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"{cluster.workdir}/nodes-{port}.conf", "--cluster-node-timeout", "2000",
                 "--save", "", "--appendonly", "no", "--dir", cluster.workdir, "--daemonize", "no",
                 "--loglevel", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in cluster.ports:
            wait_until(lambda p=port: subprocess.run([cli, "-p", str(p), "ping"], capture_output=True, text=True,
                                                      timeout=2).stdout.strip() == "PONG", what="redis-server")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in cluster.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       capture_output=True, text=True, timeout=30, check=True)
        for port in cluster.ports:
            wait_until(lambda p=port: _cluster_ok(p), what="redis cluster")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def keys_by_node(cluster: RedisCluster, pattern: str = "sy:*") -> dict[int, list[str]]:
    """Each master's keys matching `pattern`: shows where the gateway's keys landed."""
    out: dict[int, list[str]] = {}
    for port in cluster.ports:
        listed: Any = subprocess.run(["redis-cli", "-p", str(port), "--scan", "--pattern", pattern],
                                     capture_output=True, text=True, timeout=10).stdout
        out[port] = sorted(k for k in listed.splitlines() if k)
    return out
