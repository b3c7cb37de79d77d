"""`switchyard serve --workers N`: N processes behind one port, each serving with its own app."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.integration.conftest import sim_config
from tests.support.processes import ROOT, Simulator, free_port, terminate, wait_until


def test_two_workers_share_the_port_and_both_serve(simulator: Simulator, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(sim_config(simulator.url).model_dump(mode="json", exclude_defaults=True)))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port),
         "--workers", "2", "--log-level", "warning"],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(base + "/healthz", timeout=1).status_code == 200, 90, "two workers")
        answered_by: set[int] = set()
        deadline = time.monotonic() + 60
        while len(answered_by) < 2 and time.monotonic() < deadline:
            # a new connection each time: the kernel gives each one to whichever worker accepts it
            with httpx.Client(timeout=10) as client:
                chat = client.post(base + "/v1/chat/completions", json={
                    "model": "small", "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
                assert chat.status_code == 200, chat.text
                answered_by.add(client.get(base + "/readyz").json()["process"])
        assert len(answered_by) == 2
        assert server.pid not in answered_by  # the supervisor only watches; the workers serve
    finally:
        terminate(server)
    assert server.returncode == 0


def test_workers_must_be_at_least_one(tmp_path: Path) -> None:
    got = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", "x.yaml", "--workers", "0"],
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 2 and "--workers must be 1 or more" in got.stderr



def test_workers_far_past_the_cores_are_refused_before_any_starts(tmp_path: Path) -> None:
    # A typo (1000 for 10) started 1000 gateways of ~200 MB each until the OOM killer took the host's others.
    got = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", "x.yaml", "--workers", "1000"],
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 2, got.stderr
    assert "--workers 1000 is more than 4 per CPU core" in got.stderr

def test_a_bad_policy_file_stops_two_workers_as_it_stops_one(simulator: Simulator, tmp_path: Path) -> None:
    # The supervisor forked the workers, each failed on the file, and it restarted them for ever,
    # holding the port; one worker exits at once with one line.
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "bad.yaml").write_text("candidates:\n  - single: no-such-deployment\n")
    config = tmp_path / "gateway.yaml"
    raw = sim_config(simulator.url).model_dump(mode="json", exclude_defaults=True)
    config.write_text(yaml.safe_dump({**raw, "policies_dir": str(policies)}))
    for workers in ("1", "2"):
        got = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port",
                              str(free_port()), "--workers", workers],
                             cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                            "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 2 and "no-such-deployment" in got.stderr, (workers, got.stderr[-500:])
        assert "Traceback" not in got.stderr
