"""Whether an artifact's `router.json` and `router.npz` describe the same router, before it is promoted.

`load_router` reads any artifact whose arrays have the names it needs, and the smoke prompts only
reach the heads and rows those prompts happen to use: an artifact listing no models, one model
more or fewer than its arrays were fitted for, or a head scoring a model past its list loaded,
passed, and was promoted to every replica (a model missing from the list is scored by the pool
mean, a misaligned list gives one model's head and ability to another). These are the shapes the
serving side relies on (`gateway.router.model`), checked whole; a model may lack a head (training
gives none to a model its rows never saw).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gateway.router.arrays import Loaded
from gateway.router.artifact import ArtifactError


def check_artifact(directory: str | Path) -> None:
    """Raise ArtifactError naming the directory and the first disagreement, if any. The artifact
    is expected to load (`load_router`): what it lacks altogether is reported there."""
    root = Path(directory)
    meta = json.loads((root / "router.json").read_text(encoding="utf-8"))
    with np.load(root / "router.npz") as z:
        arrays: dict[str, Loaded] = {k: z[k] for k in z.files}
    try:
        problem = disagreement(meta, arrays)
    except (KeyError, TypeError, ValueError) as exc:  # a field the serving side does not read itself
        problem = f"router.json or router.npz lacks or mistypes {exc}"
    if problem:
        raise ArtifactError(f"{root}: {problem}")


def disagreement(meta: Mapping[str, Any], arrays: Mapping[str, Loaded]) -> str | None:
    """The first way `meta` and `arrays` disagree, in words; None when they agree."""
    models = meta.get("models")
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        return "router.json: models must be a list of model names"
    if not models:
        return "router.json lists no models: there is nothing to route between"
    if len(set(models)) != len(models):
        twice = next(m for i, m in enumerate(models) if m in models[:i])
        return f"router.json lists model '{twice}' twice"
    m = len(models)
    if (got := arrays["theta"].shape) != (m,):
        return f"router.npz holds abilities (theta) of shape {got} for the {m} models router.json lists"
    return _latent(meta, arrays) or _heads(meta, arrays, m) or _neighbours(meta, arrays, m) or _finite(arrays)


def _shape(arrays: Mapping[str, Loaded], name: str, want: tuple[int, ...]) -> str | None:
    got = arrays[name].shape
    return None if got == want else f"router.npz: {name} has shape {got}, router.json implies {want}"


def _latent(meta: Mapping[str, Any], arrays: Mapping[str, Loaded]) -> str | None:
    t, rows, n_struct = int(meta["latent_dims"]), 1 << int(meta["hash_spec"]["bits"]), len(meta["struct_names"])
    for name, want in (("idf", (rows,)), ("w", (rows, t)), ("w_struct", (n_struct, t)), ("s_mean", (n_struct,)),
                       ("s_std", (n_struct,)), ("bias", (t,)), ("gen_coef", (t,)), ("rank_coef", (t,))):
        if name == "rank_coef" and name not in arrays:  # optional: older artifacts rank by delta
            continue
        if problem := _shape(arrays, name, want):
            return problem
    if arrays["head_coef"].ndim != 2 or arrays["head_coef"].shape[1] != t:
        return f"router.npz: head_coef has shape {arrays['head_coef'].shape}, not (heads, {t}) (latent_dims)"
    return None


def _heads(meta: Mapping[str, Any], arrays: Mapping[str, Loaded], m: int) -> str | None:
    heads = arrays["head_coef"].shape[0]
    for name in ("head_icpt", "knn_coef", "head_model", "head_domain"):
        if name in arrays and (problem := _shape(arrays, name, (heads,))):
            return problem
    head_model = arrays["head_model"] if "head_model" in arrays else np.arange(heads)
    if heads and not (0 <= int(head_model.min()) and int(head_model.max()) < m):
        return f"router.npz: a head scores model {int(head_model.max())}, past the {m} models router.json lists"
    n_domains = max(len(meta.get("domains", [])), 1)
    if heads and "head_domain" in arrays and not (0 <= int(arrays["head_domain"].min())
                                                 and int(arrays["head_domain"].max()) < n_domains):
        return f"router.npz: a head belongs to training file {int(arrays['head_domain'].max())}, " \
               f"past the {n_domains} router.json lists"
    return None


def _neighbours(meta: Mapping[str, Any], arrays: Mapping[str, Loaded], m: int) -> str | None:
    if not meta.get("neighbours") or "knn_emb" not in arrays:
        return None  # served without neighbours, as `load_router` does
    n = arrays["knn_emb"].shape[0]
    if problem := _shape(arrays, "knn_outcomes", (n, m)):
        return problem
    if "knn_domain" in arrays and (problem := _shape(arrays, "knn_domain", (n,))):
        return problem
    proj = (1 << int(meta["neighbours"]["bits"]), arrays["knn_emb"].shape[1])
    if problem := _shape(arrays, "knn_proj", proj):
        return problem
    return None if "knn_coef" in arrays else "router.npz has neighbours but no knn_coef for its heads"


def _finite(arrays: Mapping[str, Loaded]) -> str | None:
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            return f"router.npz: {name} holds a value that is not a finite number"
    return None
