"""Processes the benchmark starts: pinned to a core, waited for, measured, and always stopped.

Every child runs in its own session (so the terminal's Ctrl-C reaches only the harness, which
then stops them in order) and is stopped by its process-group id, which is its own PID:
SIGTERM, a grace period, then SIGKILL. ``Processes`` is a context manager; leaving it for any
reason (normal end, exception, KeyboardInterrupt, SIGTERM turned into SystemExit) stops all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: str, nice: int = 0) -> list[str]:
    """Command prefix that runs a program on one core (taskset) at a niceness (nice, if not 0)."""
    return (["nice", "-n", str(nice)] if nice else []) + (["taskset", "-c", core] if core else [])


def default_nice() -> int:
    """-10 when we may raise priority (root): the machine is shared, and unrelated work would
    otherwise preempt the processes being timed. 0 otherwise."""
    return -10 if os.geteuid() == 0 else 0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Processes:
    """Starts children and guarantees they are stopped."""

    logdir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], prefix: list[str], env: dict[str, str | None] | None = None) -> Child:
        """Start prefix + argv (see pinned()); env entries set to None are removed from the environment."""
        cmd = prefix + argv
        log = self.logdir / f"{name}.log"
        with log.open("ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_environment(env or {}),
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, grace_s: float = 8.0) -> None:
        if child.proc.poll() is None:
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(child.pid, signal.SIGKILL)
                child.proc.wait(timeout=10)
        _signal_group(child.pid, signal.SIGKILL)  # leftovers in its group (e.g. worker processes)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            try:
                self.stop(child)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {child.name} (pid {child.pid}): {exc}", file=sys.stderr)

    def __enter__(self) -> Processes:
        self.logdir.mkdir(parents=True, exist_ok=True)
        # Ctrl-C and SIGTERM become exceptions even if the shell started us with them ignored.
        self._previous = (
            signal.signal(signal.SIGTERM, _raise_exit),
            signal.signal(signal.SIGINT, signal.default_int_handler),
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
        signal.signal(signal.SIGTERM, self._previous[0])
        signal.signal(signal.SIGINT, self._previous[1])


def _environment(changes: dict[str, str | None]) -> dict[str, str]:
    merged: dict[str, str | None] = {**os.environ, **changes}
    return {k: v for k, v in merged.items() if v is not None}


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http(child: Child, url: str, timeout_s: float, method: str = "GET") -> None:
    """Poll url until it answers 2xx; fail early, with the child's log, if the child exits."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=2) as r:
                if 200 <= r.status < 300:
                    return
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{child.name} not ready at {url} after {timeout_s:.0f}s ({last}):\n{child.log_tail()}")


def wait_line(child: Child, needle: str, timeout_s: float) -> str:
    """Wait until the child's log contains needle; return that line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in child.log_tail(20000).splitlines():
            if needle in line:
                return line
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not print {needle!r} in {timeout_s:.0f}s:\n{child.log_tail()}")


# ---- accounting: CPU time and peak memory of a process and its descendants ----


def _tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and its descendants, in seconds."""
    total = 0
    for p in _tree(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    """Sum of VmHWM (peak resident set) over pid and its descendants, in MiB."""
    total_kib = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024
