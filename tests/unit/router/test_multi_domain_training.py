"""Training over several files with different model pools, and adapting a trained router to new labels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.cli import main as cli_main
from gateway.router import load_router
from gateway.router.consistency import check_artifact
from gateway.router.text import STRUCT_NAMES
from gateway.router.training.data import load_many
from gateway.router.training.train import outcome_targets, rank_head, spread_target, train

SMALL = Path(__file__).resolve().parents[2] / "fixtures" / "routing_small"
MMLU = SMALL / "mmlu_pro.jsonl"
CHAT = SMALL / "arena_chat.jsonl"


def _models(path: Path) -> set[str]:
    return {m for line in path.read_text().splitlines() for m in json.loads(line)["models"]}


def test_loading_several_files_gives_the_union_of_their_pools_with_gaps() -> None:
    data = load_many([MMLU, CHAT])
    assert set(data.models) == _models(MMLU) | _models(CHAT)
    chat_only = data.col("gpt-4-1106-preview")
    assert np.isnan(data.score[data.domain == "mmlu_pro", chat_only]).all()
    assert not np.isnan(data.score[data.domain == "arena_chat", chat_only]).any()


def test_latent_targets_cope_with_models_missing_per_file() -> None:
    data = load_many([MMLU, CHAT])
    z = outcome_targets(data.score, data.domain, 5)
    assert z.shape == (len(data.ids), 5) and np.isfinite(z).all()
    for d in ("mmlu_pro", "arena_chat"):  # the shared difficulty axis is standardised per file
        assert abs(z[data.domain == d, 0].mean()) < 1e-9


def test_router_trained_on_several_files_knows_every_files_models(tmp_path: Path) -> None:
    train([MMLU, CHAT, SMALL / "cruxeval_code.jsonl"], tmp_path / "art", progress=False)
    check_artifact(tmp_path / "art")  # what training writes, `router promote` takes
    r = load_router(tmp_path / "art")
    assert {"Meta-Llama-3.1-8B-Instruct", "gpt-4-1106-preview", "codellama-7b"} <= set(r.known_profiles())
    a = r.assess("What does this Python function return?\n```python\ndef f(x):\n    return x\n```")
    assert 0.0 < r.p_good(a, profile="codellama-7b") < 1.0


def test_structural_features_include_format_free_markers() -> None:
    for name in ("log_chars", "log_code_blocks", "log_latex", "log_list_lines", "opens_with_question_word"):
        assert name in STRUCT_NAMES


def test_train_with_base_adapts_keeps_the_schema_and_scores_unseen_models(tmp_path: Path) -> None:
    base, adapted = tmp_path / "base", tmp_path / "adapted"
    assert cli_main(["train", "--data", str(MMLU), "--out", str(base), "--quiet"]) == 0
    assert cli_main(["train", "--data", str(CHAT), "--base", str(base), "--out", str(adapted), "--quiet"]) == 0
    new_models = _models(CHAT) - _models(MMLU)
    assert new_models and new_models <= set(load_router(adapted).known_profiles())
    check_artifact(adapted)  # an adapted router's meta and arrays still agree: `router promote` takes it

    out = tmp_path / "scores.jsonl"
    assert cli_main(["route", "--batch", str(CHAT), "--out", str(out), "--artifact", str(adapted), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(CHAT.read_text().splitlines())
    for row in rows:
        assert set(row) == {"id", "difficulty", "predicted"} and 0.0 <= row["difficulty"] <= 1.0
        assert _models(CHAT) <= set(row["predicted"])
    # A model the base never saw gets its own head from the new labels, not difficulty alone.
    gains = {round(r["predicted"]["gpt-4-1106-preview"] - (1 - r["difficulty"]), 6) for r in rows}
    assert len(gains) > 1


def test_adapting_keeps_the_base_latent_and_the_base_models_heads(tmp_path: Path) -> None:
    base, adapted = tmp_path / "base", tmp_path / "adapted"
    train(MMLU, base, progress=False)
    train(SMALL / "cruxeval_code.jsonl", adapted, base=base, progress=False)
    before, after = load_router(base), load_router(adapted)
    prompt = json.loads(MMLU.read_text().splitlines()[0])["prompt"]
    a, b = before.assess(prompt), after.assess(prompt)
    assert b.phi[: len(a.phi)] == pytest.approx(a.phi, abs=1e-5) and len(b.phi) > len(a.phi)
    # Only the neighbour memory gained the new prompts: without it, predictions are the base's.
    a, b = replace(a, knn=(), domain_share=()), replace(b, knn=(), domain_share=())
    for m in ("Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct", "gemini-1.5-pro-002"):
        assert after.p_good(b, profile=m) == pytest.approx(before.p_good(a, profile=m), abs=1e-5)


def test_spread_says_per_file_how_much_the_stronger_half_of_its_models_beats_the_weaker() -> None:
    y = np.array([[1.0, 1.0, np.nan, np.nan], [0.0, 1.0, np.nan, np.nan], [0.0, 0.0, np.nan, np.nan],
                  [np.nan, np.nan, 0.2, 0.9], [np.nan, np.nan, 0.5, 0.6], [np.nan, np.nan, 0.4, 0.4]])
    dom = np.array(["a", "a", "a", "b", "b", "b"])
    s = spread_target(y, dom)
    assert s[1] > s[0] == s[2] and s[3] > s[4] > s[5]  # where the stronger model gains most ranks first
    for d in ("a", "b"):
        assert abs(s[dom == d].mean()) < 1e-9 and s[dom == d].std() == pytest.approx(1.0, abs=1e-6)


def test_the_ranking_difficulty_is_half_delta_half_spread_on_deltas_scale() -> None:
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((400, 3))
    dom = np.array(["a"] * 200 + ["b"] * 200)
    # three models, weak to strong: phi[1] is how hard a prompt is for all, phi[0] how much the strongest gains
    logit = np.column_stack([-1.0 - phi[:, 1], -phi[:, 1], 1.0 - phi[:, 1] + 1.5 * phi[:, 0]])
    y = (rng.random((400, 3)) < 1 / (1 + np.exp(-logit))).astype(float)
    gen_coef, gen_icpt = np.array([0.0, 1.0, 0.0]), 0.2  # delta reads phi[1]
    weight = np.ones(400)
    coef, icpt = rank_head(phi, y, dom, weight, gen_coef, gen_icpt)
    delta, rank = phi @ gen_coef + gen_icpt, phi @ coef + icpt
    assert rank.mean() == pytest.approx(delta.mean(), abs=1e-6) and rank.std() < 1.01 * delta.std()
    assert coef[0] > 0.3 and coef[1] == pytest.approx(0.5 * gen_coef[1], abs=0.15)  # spread reads phi[0]
    only_delta, _ = rank_head(phi, y, dom, weight, gen_coef, gen_icpt, w=0.0)
    assert np.allclose(only_delta, gen_coef)
