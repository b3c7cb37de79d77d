"""The gateway as a user gets it: a wheel installed into a fresh environment, the CLI run against
configs the shipped policies do not fit, and what a real server logs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.api.app import create_app
from gateway.config import embedded_config
from tests.support.processes import ROOT, GatewayServer, Simulator, free_port, terminate, wait_until

CLI = [sys.executable, "-m", "gateway.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """`pip wheel .` of exactly what the package is built from, installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("gateway", "routing_policies"):
        shutil.copytree(ROOT / name, src / name, ignore=junk)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)],
                   check=True, env=env, timeout=300, capture_output=True)
    wheel = next((tmp / "dist").glob("switchyard-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                   check=True, env=env, timeout=300, capture_output=True)
    return Installed(wheel, venv / "bin")


def test_an_installed_wheel_routes_from_a_folder_without_policies(installed: Installed, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SWITCHYARD_POLICIES_DIR")}
    out = subprocess.run([str(installed.bin / "switchyard"), "route", "hi"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "policy balanced → single:small" in out.stdout
    where = subprocess.run([str(installed.bin / "python"), "-c", "import gateway; print(gateway.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert str(installed.bin.parent) in where.stdout  # the wheel's code ran, not the checkout's


def test_an_installed_wheel_runs_the_demo_from_a_folder_without_policies(installed: Installed, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SWITCHYARD_POLICIES_DIR")}
    port = free_port()
    proc = subprocess.Popen([str(installed.bin / "switchyard"), "demo", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        wait_until(lambda: _healthy(f"http://127.0.0.1:{port}/healthz") or proc.poll() is not None,
                   timeout_s=60, what="demo")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        terminate(proc)
    assert resp.status_code == 200 and resp.headers["x-switchyard-plan"] == "single:small"


def test_the_wheel_ships_the_default_policies_byte_for_byte(installed: Installed) -> None:
    prefix = "gateway/policy/defaults/"
    with zipfile.ZipFile(installed.wheel) as whl:
        shipped = {n[len(prefix):]: whl.read(n) for n in whl.namelist() if n.startswith(prefix)}
    source = {p.name: p.read_bytes() for p in (ROOT / "routing_policies").glob("*.yaml")}
    assert shipped == source and shipped


def test_the_wheel_holds_every_module_of_the_package(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gateway").rglob("*.py")}
    assert modules - names == set()


def test_the_wheel_ships_the_dashboard_page_and_its_assets(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
    assets = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gateway" / "dashboard" / "static").iterdir()}
    assert assets and assets - names == set()


def _write_config(tmp_path: Path, price: float, tiers: tuple[str, ...] = ("small", "large")) -> Path:
    lines = ["deployments:"]
    for tier in tiers:
        lines += [f"  - name: {tier}", f"    model: openai/sim-{tier}", "    api_base: http://127.0.0.1:9/v1",
                  f"    tier: {tier}", f"    price: {{input_per_mtok: {price}, output_per_mtok: {price}}}"]
    path = tmp_path / "gw.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_policy_check_reports_an_unsatisfiable_example_instead_of_crashing(tmp_path: Path) -> None:
    config = _write_config(tmp_path, price=5000.0)  # every plan is over balanced's $0.05 cap
    out = subprocess.run([*CLI, "policy", "check", "routing_policies", "--config", str(config)],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "balanced.yaml: examples[0]: expected single:small, got no plan (" in out.stderr
    assert "max_cost_usd" in out.stderr or "cost" in out.stderr


def test_route_with_a_config_without_a_large_tier_skips_the_shipped_policies_it_cannot_use(tmp_path: Path) -> None:
    config = _write_config(tmp_path, price=0.1, tiers=("small",))
    policies = tmp_path / "routing_policies"
    policies.mkdir()
    (policies / "mine.yaml").write_text("candidates:\n  - single: small\n")
    out = subprocess.run([*CLI, "route", "--policy", "mine", "--config", str(config), "hi"],
                         capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "policy mine → single:small" in out.stdout


class _Exploding:
    """A router with a bug: every request fails inside the gateway."""

    def assess(self, text: str) -> object:
        raise RuntimeError("router bug")

    def p_good(self, *args: object, **kwargs: object) -> float:
        return 0.5


class _Tracebacks(logging.Handler):
    """Every record with a traceback, whichever logger (ours or the server's) writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def test_a_500_traceback_is_logged_once() -> None:
    app = create_app(embedded_config("http://127.0.0.1:9/v1"), router=_Exploding(),  # type: ignore[arg-type]
                     watch_policies_s=None)
    server = GatewayServer(app)  # configures uvicorn's logging: attach only after it
    tracebacks = _Tracebacks()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]  # "uvicorn" does not propagate to root
    for lg in loggers:
        lg.addHandler(tracebacks)
    try:
        server.start()
        resp = httpx.post(server.base_url + "/v1/chat/completions", headers={"x-request-id": "req-boom"},
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        time.sleep(0.2)  # the server logs after the response is out
    finally:
        server.stop()
        for lg in loggers:
            lg.removeHandler(tracebacks)
    assert resp.status_code == 500 and resp.json()["error"]["type"] == "server_error"
    assert resp.headers["x-request-id"] == "req-boom"
    assert "router bug" not in resp.text
    assert len(tracebacks.records) == 1
    assert "POST /v1/chat/completions" in tracebacks.records[0].getMessage()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_litellm_does_not_log_prompts_at_debug_level(simulator: Simulator, tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "mine.yaml").write_text("candidates:\n  - single: small\n")
    (tmp_path / "gw.yaml").write_text(
        f"deployments:\n  - {{name: small, model: openai/sim-small, api_base: '{simulator.url}', backend: litellm,"
        " price: {input_per_mtok: 0.1, output_per_mtok: 0.1}}\n"
        f"default_policy: mine\npolicies_dir: {tmp_path / 'policies'}\n")
    port = free_port()
    env = {k: v for k, v in ENV.items() if k != "SWITCHYARD_LOG_PROMPTS"}
    log = (tmp_path / "gateway.log").open("w+")
    proc = subprocess.Popen([*CLI, "serve", "--config", str(tmp_path / "gw.yaml"), "--port", str(port),
                             "--log-level", "debug"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        wait_until(lambda: _healthy(f"http://127.0.0.1:{port}/healthz"), timeout_s=60, what="gateway")
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                          json={"model": "small", "messages": [{"role": "user", "content": "PROMPT-MARKER-7f3"}]})
        assert resp.status_code == 200
        answer = resp.json()["choices"][0]["message"]["content"]
    finally:
        terminate(proc)
    log.seek(0)
    text = log.read()
    log.close()
    assert "DEBUG" in text  # the gateway did log at debug level
    assert "PROMPT-MARKER-7f3" not in text and answer not in text
