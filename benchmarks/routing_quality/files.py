"""The files the routing-quality benchmark scores, their judged pairs and fixed reference figures."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
# Written by ``all_pairs.py`` into the results folder; the report quotes it when it is there.
ALL_PAIRS_MD = "routing_all_pairs.md"
# Written by ``halves.py``: adaptation scored over random halves of each file's train split.
HALVES_MD = "routing_halves.md"
# Written by ``halves.py --halves 20 --share 0.79``: the same at the proportions of train and validation.
RESPLITS_MD = "routing_resplits.md"
# Written by ``seeds.py``: the in-domain router's validation APGR over the fit's seeds.
SEEDS_MD = "routing_seeds.md"
# file -> (weak, strong): the pair each file is judged on.
FILES: dict[str, tuple[str, str]] = {
    "mmlu_pro": ("Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"),
    "arena_chat": ("Mistral-7B-Instruct-v0.1", "gpt-4-1106-preview"),
    "cruxeval_code": ("codellama-7b", "gpt-4-0613"),
    "llmrouter_mixed": ("mistral-7b-instruct-v0.3", "llama-3.3-nemotron-super-49b-v1"),
    "theoremqa_stem": ("gpt-3.5-turbo", "gpt-4-0314"),
}
# The router shipped before this report's multi-domain training (validation APGR, same pairs).
PREVIOUS = {"mmlu_pro": 0.565, "arena_chat": 0.480, "cruxeval_code": 0.520,
            "llmrouter_mixed": 0.694, "theoremqa_stem": 0.592}
