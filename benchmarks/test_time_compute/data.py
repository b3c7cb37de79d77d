"""Recorded outcomes and their replay: what a single call, a vote or a cascade would have scored and cost.

The data holds one recorded answer per model and prompt, so a "vote" is one sample from each of
several models, decided on the recorded answer letters exactly as the executor's `vote` would: the
most frequent letter wins, ties go to the earliest member, a missing letter does not vote (and when
nobody gave a letter the first member's unusable answer is returned, scoring 0).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlu_pro.jsonl"


def load_rows(path: Path, split: str | None = None) -> list[Row]:
    with path.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def load_prices(data: Path, rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """The prices file beside the data, else prices solved from the rows' recorded costs (fixtures)."""
    beside = data.parent / "mmlu_pro_prices.json"
    if beside.exists():
        return dict(json.loads(beside.read_text()))
    return infer_prices(rows)


def infer_prices(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """cost = prompt_tokens·input + output_tokens·output, solved by least squares per model."""
    import numpy as np

    names = sorted({m for r in rows for m in r["models"]})
    prices = {}
    for name in names:
        seen = [r for r in rows if name in r["models"]]
        a = np.array([[r["prompt_tokens"], r["models"][name]["output_tokens"]] for r in seen], dtype=float)
        b = np.array([r["models"][name]["cost_usd"] for r in seen], dtype=float)
        (inp, out), *_ = np.linalg.lstsq(a, b, rcond=None)
        prices[name] = {"input_per_mtok": max(0.0, float(inp) * 1e6), "output_per_mtok": max(0.0, float(out) * 1e6)}
    return prices


def has_models(row: Row, names: Sequence[str]) -> bool:
    return all(n in row["models"] for n in names)


@dataclass(frozen=True, slots=True)
class Replay:
    score: float
    cost_usd: float
    agreement: float = 1.0  # share of members behind the chosen answer
    escalated: bool = False


def replay_single(row: Row, model: str) -> Replay:
    m = row["models"][model]
    return Replay(float(m["score"]), float(m["cost_usd"]))


def replay_vote(row: Row, members: Sequence[str]) -> Replay:
    preds = [row["models"][m].get("pred") or None for m in members]
    cost = sum(float(row["models"][m]["cost_usd"]) for m in members)
    counted = Counter(p for p in preds if p)
    if not counted:
        return Replay(0.0, cost, 1 / len(members))
    top = max(counted.values())
    winner = next(p for p in preds if p and counted[p] == top)  # earliest of the tied
    return Replay(float(winner == row["reference"]), cost, top / len(members))


def replay_cascade(row: Row, members: Sequence[str], escalate_to: str, threshold: float) -> Replay:
    """Vote among members; accept when the agreement share ≥ threshold, else pay for the large model."""
    vote = replay_vote(row, members)
    if vote.agreement >= threshold:
        return vote
    large = replay_single(row, escalate_to)
    return Replay(large.score, vote.cost_usd + large.cost_usd, vote.agreement, escalated=True)
