"""Batch scoring for ``switchyard route --batch``: one JSON line out per prompt in.

Input: any file in the shared data schema; only ``id`` and ``prompt`` are required.
Output rows: ``{"id", "difficulty", "predicted": {model: p_good}}`` for the models listed in
that row's ``models`` (models the router never saw, under any spelling, get the 1PL's P at the
mean trained ability: the same for all of them, so a pair of them is ranked by ``difficulty``)
plus every known profile. The known profiles are always included so
that each row scores the same pairs: routing_eval only ranks by predicted gain when every
row has both models, and a row missing one outcome (gemini misses a few) must not make it
fall back to difficulty for the whole file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

from tqdm import tqdm

from gateway.router.model import Router, load_router
from gateway.router.training.data import DataRow, iter_rows


class ScoredRow(TypedDict):
    id: str | int
    difficulty: float
    predicted: dict[str, float]


def _row_out(router: Router, row: DataRow) -> ScoredRow:
    a = router.assess(str(row["prompt"]))
    names = dict.fromkeys([*(row.get("models") or {}), *router.known_profiles()])
    return {
        "id": row["id"],
        "difficulty": round(a.difficulty, 8),
        "predicted": {m: round(router.p_good(a, profile=m), 8) for m in names},
    }


def score_file(
    in_path: str | Path, out_path: str | Path, router: Router | None = None, progress: bool = True
) -> int:
    """Score every prompt of ``in_path`` into ``out_path`` (JSON lines); returns the count.

    The lines go to a file beside ``out_path`` that replaces it only once every row is scored: a bad
    line stops the run with ``out_path`` as it was (an earlier run's scores kept whole, or no file),
    never half a file that reads as the scores of a shorter input."""
    r = router if router is not None else load_router()
    total = _rows_in(in_path)
    count = 0
    # /dev/stdout, a pipe, a terminal: no file to put in place, so written as it is named. Asked of the name
    # itself: /dev/stdout on a pipe resolves to /proc/PID/fd/pipe:[N], a path that names nothing.
    streamed = Path(out_path).exists() and not Path(out_path).is_file()
    target = Path(out_path).resolve() if Path(out_path).is_symlink() and not streamed else Path(out_path)
    partial = target if streamed else Path(f"{target}.partial")
    # as `train --out` and `logs export --out` do: it failed on "No such file ... OUT.jsonl.partial", a file never named
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial, "w", encoding="utf-8") as out:
            for row in tqdm(iter_rows(in_path), desc="route", unit="prompt", total=total, disable=not progress):
                out.write(json.dumps(_row_out(r, row)) + "\n")
                count += 1
        if not streamed:
            os.replace(partial, target)
    finally:
        if not streamed:
            partial.unlink(missing_ok=True)
    return count


def _rows_in(path: str | Path) -> int | None:
    """How many rows the file holds (its lines that are not blank), for the progress bar's share and time
    left; None for a pipe, which can be read only once (a missing file: the error, before any bar is drawn).
    Counting reads bytes only: ~0.1 s per 100 MB."""
    if Path(path).exists() and not Path(path).is_file():
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
