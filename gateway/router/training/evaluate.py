"""Score a dataset with a router and compute pair metrics the way routing_eval.py ranks.

Shared by ``train`` (validation report) and ``benchmarks.routing_quality``. Needs only numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from gateway.router.arrays import F64, Bools, Floats
from gateway.router.model import Router
from gateway.router.training.data import RoutingData
from gateway.router.training.metrics import PairMetrics, pair_metrics

# The pair each shared data file is judged on (and a second MMLU-Pro pair).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (
    ("Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"),
    ("Phi-3-mini-4k-instruct", "gemini-1.5-pro-002"),
    ("Mistral-7B-Instruct-v0.1", "gpt-4-1106-preview"),
    ("codellama-7b", "gpt-4-0613"),
    ("mistral-7b-instruct-v0.3", "llama-3.3-nemotron-super-49b-v1"),
    ("gpt-3.5-turbo", "gpt-4-0314"),
)


@dataclass(frozen=True)
class Scored:
    difficulty: F64  # (n,)
    p_good: F64  # (n, m) for data.models (unknown models: from difficulty alone)


def score_data(router: Router, data: RoutingData, progress: bool = True) -> Scored:
    n, m = len(data.prompts), len(data.models)
    diff, p = np.zeros(n), np.zeros((n, m))
    for i, prompt in enumerate(tqdm(data.prompts, desc="assess", disable=not progress, leave=False)):
        a = router.assess(prompt)
        diff[i] = a.difficulty
        p[i] = [router.p_good(a, profile=name) for name in data.models]
    return Scored(diff, p)


def rank_score(scored: Scored, weak: int, strong: int) -> F64:
    """routing_eval's rule: predicted gain strong - weak when it varies, else difficulty."""
    gain = scored.p_good[:, strong] - scored.p_good[:, weak]
    return gain if np.unique(np.round(gain, 9)).size > 1 else scored.difficulty


def pair_rows(data: RoutingData, weak: int, strong: int) -> Bools:
    return ~np.isnan(data.score[:, weak]) & ~np.isnan(data.score[:, strong])


def eval_pair(data: RoutingData, score: Floats, weak: str, strong: str) -> PairMetrics:
    """Pair metrics for any per-prompt score (router, baseline or oracle)."""
    jw, js = data.col(weak), data.col(strong)
    ok = pair_rows(data, jw, js)
    return pair_metrics(
        score[ok], data.score[ok, jw], data.score[ok, js],
        np.nan_to_num(data.cost[ok, jw]), np.nan_to_num(data.cost[ok, js]),
    )


def pick_pairs(data: RoutingData) -> list[tuple[str, str]]:
    """The default pairs that have rows here, else the weakest -> strongest model by accuracy."""
    pairs = [p for p in DEFAULT_PAIRS if p[0] in data.models and p[1] in data.models
             and pair_rows(data, data.col(p[0]), data.col(p[1])).any()]
    # Only models with a score somewhere: an all-null column's mean is NaN, which sorts last, as the strongest.
    scored = np.nonzero(~np.isnan(data.score).all(axis=0))[0]
    if pairs or scored.size < 2:
        return pairs
    order = scored[np.argsort(np.nanmean(data.score[:, scored], axis=0))]
    return [(data.models[order[0]], data.models[order[-1]])]


def report_pairs(
    router: Router, data: RoutingData, pairs: Sequence[tuple[str, str]] | None = None, progress: bool = True
) -> dict[str, dict[str, float]]:
    scored = score_data(router, data, progress)
    out = {}
    for weak, strong in pairs if pairs is not None else pick_pairs(data):
        score = rank_score(scored, data.col(weak), data.col(strong))
        out[f"{weak}->{strong}"] = eval_pair(data, score, weak, strong).as_dict()
    return out
