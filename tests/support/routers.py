"""Router artifacts for version tests: the shipped one, and a copy that predicts differently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from gateway.router.model import DEFAULT_ARTIFACT

# Ways an artifact's meta and arrays can disagree while it still loads and passes the smoke prompts.
MISMATCHES = ("no models", "one model fewer than its arrays", "one model more than its arrays", "a model listed twice",
              "theta for fewer models", "a head for a model past the list", "latent_dims of another shape",
              "fewer hash rows than hash_spec", "a non-finite ability")


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


def mismatched(directory: Path, damage: str) -> None:
    """Damage an artifact's meta or arrays so that they no longer describe the same router: every one
    of these loaded and passed the smoke prompts, and was promoted."""
    meta = json.loads((directory / "router.json").read_text())
    with np.load(directory / "router.npz") as z:
        arrays = {k: z[k] for k in z.files}
    if damage == "no models":
        meta["models"] = []
    elif damage == "one model fewer than its arrays":
        meta["models"] = meta["models"][:-1]
    elif damage == "one model more than its arrays":
        meta["models"] = [*meta["models"], "extra-model"]
    elif damage == "a model listed twice":
        meta["models"] = [meta["models"][0], *meta["models"][:-1]]
    elif damage == "theta for fewer models":
        arrays["theta"] = arrays["theta"][:-1]
    elif damage == "a head for a model past the list":
        arrays["head_model"] = arrays["head_model"].copy()
        arrays["head_model"][-1] = len(meta["models"])
    elif damage == "latent_dims of another shape":
        meta["latent_dims"] += 1
    elif damage == "fewer hash rows than hash_spec":
        arrays["idf"], arrays["w"] = arrays["idf"][:1000], arrays["w"][:1000]
    elif damage == "a non-finite ability":
        arrays["theta"] = arrays["theta"].copy()
        arrays["theta"][0] = np.nan
    (directory / "router.json").write_text(json.dumps(meta))
    np.savez_compressed(directory / "router.npz", **arrays)
