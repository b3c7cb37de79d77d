"""Router artifacts for version tests: the shipped one, and a copy that predicts differently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gateway.router.model import DEFAULT_ARTIFACT


def copy_default(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for f in ("router.json", "router.npz"):
        shutil.copy(DEFAULT_ARTIFACT / f, directory / f)
    return directory


def variant(directory: Path, k: int = 5) -> Path:
    """The shipped router with fewer neighbours: other bytes, and deterministically other predictions."""
    copy_default(directory)
    meta = json.loads((directory / "router.json").read_text())
    if meta.get("neighbours"):
        meta["neighbours"]["k"] = k
    meta["note"] = f"variant with k={k}"
    (directory / "router.json").write_text(json.dumps(meta, indent=1))
    return directory
