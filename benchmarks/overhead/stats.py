"""What the overhead report and its target checks share: the records, selected and summarised.

Every comparison is made within a round (target minus ``direct`` in the same round and step;
target over ``passthrough-aiohttp`` in the same round) and then summarised over rounds as
``median [min–max]``, so slow drift of the machine cancels instead of favouring whoever ran
in the quiet minute.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks.overhead.targets import TARGETS

Record = dict[str, Any]
BASE = "passthrough-aiohttp"
ORDER = tuple(t.name for t in TARGETS)


def good(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if "error" not in r and not r.get("errors")]


def _index(records: list[Record]) -> dict[tuple[str, str, str, int], Record]:
    return {(str(r["phase"]), str(r["step"]), str(r["target"]), int(r["round"])): r for r in good(records)}


def stat(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "–"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class Summary:
    def __init__(self, results: dict[str, Any]):
        self.records: list[Record] = list(results["records"])
        self.idx = _index(self.records)
        self.rounds = sorted({int(r["round"]) for r in self.records})
        self.targets = [t for t in ORDER if any(r["target"] == t for r in self.records)]

    def steps(self, phase: str, kind: str) -> list[str]:
        seen: list[str] = []
        for r in self.records:
            if r["phase"] == phase and r["kind"] == kind and r["step"] not in seen:
                seen.append(str(r["step"]))
        return seen

    def per_round(self, phase: str, step: str, target: str, fn: Callable[[Record], float]) -> dict[int, float]:
        out = {}
        for rnd in self.rounds:
            rec = self.idx.get((phase, step, target, rnd))
            if rec is not None:
                out[rnd] = fn(rec)
        return out

    def absolute(self, phase: str, step: str, target: str, key: str) -> dict[int, float]:
        out = self.per_round(phase, step, target, lambda r: float(r.get(key, "nan")))
        return {k: v for k, v in out.items() if v == v}  # drop NaN: key absent in that run

    def added(self, phase: str, step: str, target: str, key: str) -> dict[int, float]:
        mine = self.per_round(phase, step, target, lambda r: float(r[key]))
        floor = self.per_round(phase, step, "direct", lambda r: float(r[key]))
        return {k: v - floor[k] for k, v in mine.items() if k in floor}

    def best_rps(self, target: str) -> dict[int, tuple[float, int, Record]]:
        """Per round: the highest req/s at which p99 < 100 ms, its connection count and record."""
        best: dict[int, tuple[float, int, Record]] = {}
        for r in good(self.records):
            if r["phase"] != "throughput" or r["target"] != target or float(r["p99"]) >= 100:
                continue
            rnd, rps = int(r["round"]), float(r["rps"])
            if rnd not in best or rps > best[rnd][0]:
                best[rnd] = (rps, int(r["connections"]), r)
        return best

    def ratio(self, mine: dict[int, float], base: dict[int, float]) -> list[float]:
        return [mine[k] / base[k] for k in mine if base.get(k)]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
