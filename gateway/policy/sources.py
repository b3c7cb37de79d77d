"""Where policy files come from: the policies shipped with the package, overlaid by the user's folder.

The shipped policies have one source, `routing_policies/*.yaml` of the source tree; the wheel carries
the same files as `gateway/policy/defaults/` (pyproject maps the folder into the package). The user's
folder (`policies_dir`, `$SWITCHYARD_POLICIES_DIR`, else `./routing_policies` when it exists) overrides
a shipped policy by file name and adds its own. A shipped policy is optional: when it names a
deployment or tier the config lacks it is skipped, while the user's own files must all be valid. A
user file byte-identical to the shipped one of its name (a copy, or the source tree itself) still
counts as shipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ENV_POLICIES_DIR, GatewayConfig
from gateway.errors import ConfigError

_HERE = Path(__file__).resolve().parent
_PACKAGED = _HERE / "defaults"  # present in an installed wheel
_SOURCE_TREE = _HERE.parents[1] / "routing_policies"  # running from a checkout


def shipped_policies_dir() -> Path:
    return _PACKAGED if _PACKAGED.is_dir() else _SOURCE_TREE


def user_policies_dir(config: GatewayConfig) -> Path | None:
    """The folder the user edits: configured, else ./routing_policies, else none (shipped policies only)."""
    if config.policies_dir:
        return Path(config.policies_dir)
    here = Path.cwd() / "routing_policies"
    return here if here.is_dir() else None


def policy_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        # Said where the path came from: set in the environment, it was nowhere in the config the operator read
        from_env = os.environ.get(ENV_POLICIES_DIR)
        source = f"${ENV_POLICIES_DIR}" if from_env and Path(from_env) == folder else "policies_dir"
        raise ConfigError(f"{folder}: policy folder not found (named by {source})")
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def same_name(paths: list[Path]) -> dict[str, list[Path]]:
    """Policy names defined by more than one of `paths` (`dup.yaml` beside `dup.yml`): which one is in
    force would depend on which was read last."""
    by_name: dict[str, list[Path]] = {}
    for path in paths:
        by_name.setdefault(path.stem, []).append(path)
    return {name: files for name, files in by_name.items() if len(files) > 1}


def two_files(name: str, files: list[Path]) -> str:
    return f"{' and '.join(str(f) for f in files)} both define policy '{name}': keep one"


@dataclass(frozen=True, slots=True)
class PolicyFile:
    path: Path
    shipped: bool  # skipped with a warning, rather than fatal, when this config cannot bind it


def policy_sources(user_dir: Path | None, shipped_dir: Path | None) -> dict[str, PolicyFile]:
    """Policy name → the file that defines it; the user's file wins over the shipped one."""
    files: dict[str, PolicyFile] = {}
    if shipped_dir is not None and shipped_dir.is_dir():
        files = {p.stem: PolicyFile(p, shipped=True) for p in policy_files(shipped_dir)}
    user = policy_files(user_dir) if user_dir is not None else []
    for name, twice in same_name(user).items():
        raise ConfigError(two_files(name, twice))
    for path in user:
        shipped = files.get(path.stem)
        files[path.stem] = PolicyFile(path, shipped is not None and _same_bytes(shipped.path, path))
    return files


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False
