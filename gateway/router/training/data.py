"""Reading routing data in the shared schema into dense arrays (training/benchmarks only).

Rows need ``id`` and ``prompt``; ``models`` ({name: {score, cost_usd, output_tokens}}),
``split`` and ``prompt_tokens`` are optional. Missing outcomes become NaN so that every
consumer must decide explicitly how to treat them.

Several files load into one table (``load_many``): the model columns are the union of the
files' pools, a model a file does not have is NaN on its rows, and ``domain`` records which
file each row came from (its stem), because outcomes are only comparable within a file.
"""

from __future__ import annotations

import codecs
import json
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict, cast

import numpy as np

from gateway.errors import InputError
from gateway.router.arrays import F64, Bools, Ints, Strs


class ModelResult(TypedDict, total=False):
    """One model's recorded outcome on a prompt; any field may be absent or null."""

    score: float | None
    cost_usd: float | None
    output_tokens: float | None


class DataRow(TypedDict):
    """One line of a file in the shared data schema."""

    id: str | int
    prompt: str
    split: NotRequired[str | None]
    prompt_tokens: NotRequired[float | None]
    models: NotRequired[dict[str, ModelResult] | None]


@dataclass(frozen=True)
class RoutingData:
    ids: list[str]
    prompts: list[str]
    split: Strs  # "train" | "validation"
    prompt_tokens: F64  # NaN if absent
    models: list[str]
    score: F64  # (n, m), NaN = no result
    cost: F64  # (n, m) recorded cost_usd, NaN = no result
    out_tokens: F64  # (n, m) recorded output tokens, NaN = no result
    domain: Strs  # the source file's stem, per row

    def subset(self, mask: Bools | Ints) -> RoutingData:
        idx = np.nonzero(mask)[0]
        return RoutingData(
            ids=[self.ids[i] for i in idx],
            prompts=[self.prompts[i] for i in idx],
            split=self.split[idx],
            prompt_tokens=self.prompt_tokens[idx],
            models=self.models,
            score=self.score[idx],
            cost=self.cost[idx],
            out_tokens=self.out_tokens[idx],
            domain=self.domain[idx],
        )

    def col(self, model: str) -> int:
        return self.models.index(model)


def iter_rows(path: str | Path, labels: bool = False) -> Iterator[DataRow]:
    """The file's rows, each checked for the fields every reader needs (`id`, `prompt`, and `models`
    as an object of objects): a bad line is an InputError naming the file and the line. `labels`: the
    models' numbers are read too (training, evaluation), so each must be in its range; scoring prompts
    (`route --batch`) reads none of them, and a label it never reads does not stop it."""
    with open(path, "rb") as f:  # decoded line by line, so a bad byte is an error naming its line
        for n, raw in enumerate(f, 1):
            if n == 1:  # a byte-order mark, which Windows editors and PowerShell write: not part of the JSON
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: line {n} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
            if line.strip():
                yield _row(path, n, line, labels)


def _row(path: str | Path, n: int, line: str, labels: bool) -> DataRow:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise InputError(f"{path}: line {n} is not JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{path}: line {n} is nested too deeply to read") from None
    if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("prompt"), str):
        raise InputError(f"{path}: line {n} needs an 'id' and a string 'prompt' (the routing-data schema)")
    if not _is_text(row["prompt"]):
        raise InputError(f"{path}: line {n}: 'prompt' has an unpaired surrogate escape (\\ud800-\\udfff), "
                         "which is no character (the gateway refuses such a body as invalid JSON)")
    if labels and (row.get("split") or None) not in _SPLITS:  # empty: as absent, as `load_data` reads it
        # any other value was in neither split: its row silently left out of training and validation alike
        raise InputError(f"{path}: line {n}: 'split' must be \"train\", \"validation\" or absent (a hash of the "
                         f"id picks), got {json.dumps(row['split'])[:32]}")
    tokens = row.get("prompt_tokens")
    if labels and tokens is not None and not (_is_number(tokens) and math.isfinite(tokens) and tokens >= 0):
        # read as the prompt's length (costs, features): a string stopped training in a traceback
        raise InputError(f"{path}: line {n}: 'prompt_tokens' must be a number, 0 or more, or null, "
                         f"got {json.dumps(tokens)[:32]}")
    models = row.get("models")
    if models is not None and not (isinstance(models, dict) and
                                   all(r is None or isinstance(r, dict) for r in models.values())):
        raise InputError(f"{path}: line {n}: 'models' must be an object of {{model: {{score, cost_usd}}}}")
    for model, rec in (models or {}).items():
        for key in _NUMBERS:
            value = (rec or {}).get(key)
            if value is not None and not _is_number(value):
                raise InputError(f"{path}: line {n}: models.{str(model)[:64]}.{key} must be a number or null, "
                                 f"got {json.dumps(value)[:32]}")
            low, high, says = _RANGES[key]
            if labels and value is not None and not (math.isfinite(value) and low <= value <= high):
                # a score of 2.5 or a negative cost trains without complaint into heads and costs no one means
                raise InputError(f"{path}: line {n}: models.{str(model)[:64]}.{key} must be {says}, "
                                 f"got {value!r}"[:200])
    return cast(DataRow, row)


_SPLITS = (None, "train", "validation")  # a row's `split`: absent (None) means `hash_split` picks
_NUMBERS = ("score", "cost_usd", "output_tokens")  # what `load_data` reads of each model's record
_RANGES = {"score": (0.0, 1.0, "from 0 to 1"), "cost_usd": (0.0, math.inf, "0 or more"),
           "output_tokens": (0.0, math.inf, "0 or more")}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text(value: str) -> bool:
    """Can `value` be written as UTF-8? Python's JSON reader takes a lone `\\ud800` escape, which the
    featurizer cannot encode: the row would stop scoring or training in a traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def hash_split(row_id: str) -> str:
    """Deterministic 80/20 split for files without a ``split`` field."""
    return "validation" if zlib.crc32(row_id.encode()) % 5 == 0 else "train"


def _field(rec: Mapping[str, object] | None, key: str) -> float:
    if not rec or rec.get(key) is None:
        return float("nan")
    return float(cast(float, rec[key]))


def load_data(path: str | Path) -> RoutingData:
    rows = list(iter_rows(path, labels=True))
    models = sorted({m for r in rows for m in (r.get("models") or {})})
    n, m = len(rows), len(models)
    arrays = {k: np.full((n, m), np.nan) for k in ("score", "cost_usd", "output_tokens")}
    for i, r in enumerate(rows):
        recs = r.get("models") or {}
        for j, name in enumerate(models):
            for key, arr in arrays.items():
                arr[i, j] = _field(recs.get(name), key)
    return RoutingData(
        ids=[str(r["id"]) for r in rows],
        prompts=[str(r["prompt"]) for r in rows],
        split=np.array([r.get("split") or hash_split(str(r["id"])) for r in rows]),
        prompt_tokens=np.array([_field(r, "prompt_tokens") for r in rows]),
        models=models,
        score=arrays["score"],
        cost=arrays["cost_usd"],
        out_tokens=arrays["output_tokens"],
        domain=np.array([Path(path).stem] * n),
    )


def load_many(paths: Sequence[str | Path]) -> RoutingData:
    """Several files as one table over the union of their model pools (NaN where a file
    has no result for a model)."""
    parts = [load_data(p) for p in paths]
    if len(parts) == 1:
        return parts[0]
    models = sorted({m for d in parts for m in d.models})

    def widen(d: RoutingData, a: F64) -> F64:
        out = np.full((a.shape[0], len(models)), np.nan)
        out[:, [models.index(m) for m in d.models]] = a
        return out

    return RoutingData(
        ids=[i for d in parts for i in d.ids],
        prompts=[p for d in parts for p in d.prompts],
        split=np.concatenate([d.split for d in parts]),
        prompt_tokens=np.concatenate([d.prompt_tokens for d in parts]),
        models=models,
        score=np.vstack([widen(d, d.score) for d in parts]),
        cost=np.vstack([widen(d, d.cost) for d in parts]),
        out_tokens=np.vstack([widen(d, d.out_tokens) for d in parts]),
        domain=np.concatenate([d.domain for d in parts]),
    )
