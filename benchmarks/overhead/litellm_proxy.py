"""The LiteLLM proxy as a comparison target, in a virtual environment of its own.

``ensure_venv()`` creates ``~/.cache/switchyard-bench/litellm-venv`` (or ``$SWITCHYARD_BENCH_CACHE``)
once and installs ``litellm[proxy]`` into it with pip, excluding 1.82.7 and 1.82.8 (those two
releases shipped a credential stealer and must never be installed). The proxy runs with a
generated config (``openai/`` models with ``api_base`` on the benchmark's upstream), no
database, one worker, a master key (it refuses to start without one; the load generators send it)
and ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no network at start).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.overhead.loadgen import API_KEY

DEFAULT_SPEC = "litellm[proxy]!=1.82.7,!=1.82.8"
BANNED = ("1.82.7", "1.82.8")


def cache_dir() -> Path:
    root = os.environ.get("SWITCHYARD_BENCH_CACHE") or str(Path.home() / ".cache" / "switchyard-bench")
    return Path(root)


def venv_dir() -> Path:
    return cache_dir() / "litellm-venv"


def litellm_binary() -> Path:
    return venv_dir() / "bin" / "litellm"


def installed_version() -> str | None:
    python = venv_dir() / "bin" / "python"
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def ensure_venv(spec: str = DEFAULT_SPEC, log: Path | None = None) -> str:
    """Create the venv and install litellm[proxy] if needed; return the installed version."""
    if not all(f"!={v}" in spec.replace(" ", "") or "==" in spec for v in BANNED):
        raise ValueError(f"litellm spec {spec!r} must exclude {', '.join(BANNED)}")
    version = installed_version()
    if version and litellm_binary().exists():
        _refuse_banned(version)
        return version
    venv = venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"creating {venv} and installing {spec!r} (one-off, a minute or two)...", file=sys.stderr)
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True, stdout=out, stderr=out, timeout=600)
        subprocess.run([*pip, spec], check=True, stdout=out, stderr=out, timeout=1200)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    version = installed_version()
    if not version:
        raise RuntimeError(f"litellm did not install into {venv}; see {log}")
    _refuse_banned(version)
    return version


def _refuse_banned(version: str) -> None:
    if version in BANNED:
        raise RuntimeError(f"litellm {version} is a compromised release; delete {venv_dir()} now")


def write_config(path: Path, upstream_v1: str) -> Path:
    models = []
    for name in ("sim-small", "sim-large"):
        models.append(
            f"""  - model_name: {name}
    litellm_params:
      model: openai/{name}
      api_base: {upstream_v1}
      api_key: sk-bench-upstream
      timeout: 60"""
        )
    path.write_text(
        "model_list:\n" + "\n".join(models) + "\nlitellm_settings:\n  drop_params: true\n  request_timeout: 60\n"
    )
    return path


def command(config: Path, port: int) -> list[str]:
    return [
        str(litellm_binary()), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip


ENV: dict[str, str | None] = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "DATABASE_URL": None,
    "LITELLM_MASTER_KEY": API_KEY,
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
}
