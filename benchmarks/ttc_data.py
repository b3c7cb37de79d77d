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
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro.jsonl"


def load_rows(path: Path, split: str | None = None) -> list[Row]:
    with path.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def load_prices(data: Path) -> dict[str, dict[str, float]]:
    return dict(json.loads((data.parent / "mmlu_pro_prices.json").read_text()))


def has_models(row: Row, names: Sequence[str]) -> bool:
    return all(n in row["models"] for n in names)


@dataclass(frozen=True, slots=True)
class Replay:
    score: float
    cost_usd: float
    agreement: float = 1.0   # share of members behind the chosen answer
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
