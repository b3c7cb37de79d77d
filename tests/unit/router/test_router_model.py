"""The shipped router loads offline, is deterministic and behaves like a probability model."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway.router import DEFAULT_ARTIFACT, Assessment, Router, load_router
from gateway.router.consistency import disagreement
from gateway.router.names import model_key
from tests.support.routers import copy_default

PROMPT = "Calculate the integral of x^2 * sin(x) from 0 to pi, then explain each step."


def test_default_artifact_is_small_and_ships_inside_the_package() -> None:
    size = sum(f.stat().st_size for f in DEFAULT_ARTIFACT.iterdir())
    assert DEFAULT_ARTIFACT.parts[-4:-2] == ("gateway", "router")
    assert size < 5_000_000


def test_artifact_loads_with_the_network_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the router must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    r = load_router()
    assert 0.0 <= r.assess(PROMPT).difficulty <= 1.0


def test_serving_does_not_import_training_libraries() -> None:
    code = ("import sys; from gateway.router import load_router; load_router().assess('hi'); "
            "print(','.join(m for m in ('sklearn', 'scipy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_assess_is_deterministic(router: Router) -> None:
    first, second = router.assess(PROMPT), router.assess(PROMPT)
    assert first == second
    assert first.phi == second.phi
    assert load_router().assess(PROMPT) == first


def test_assessment_is_frozen_and_explains_itself(router: Router) -> None:
    a = router.assess(PROMPT)
    assert isinstance(a, Assessment)
    with pytest.raises(AttributeError):
        a.difficulty = 0.5  # type: ignore[misc]
    assert a.category in {"math", "code", "reasoning", "chat", "knowledge"}
    assert "log_chars" in a.features


def test_scaffolding_does_not_change_the_assessment(router: Router) -> None:
    bare = "What is the capital of Australia?"
    wrapped = f"Question:\n{bare}\nAnswer: Let's think step by step."
    assert router.assess(wrapped).difficulty == pytest.approx(router.assess(bare).difficulty)


def test_p_good_rises_with_ability(router: Router) -> None:
    a = router.assess(PROMPT)
    ps = [router.p_good(a, ability=x) for x in (-3.0, -1.0, 0.0, 1.0, 3.0)]
    assert ps == sorted(ps) and ps[0] < ps[-1]
    assert router.p_good(a) == pytest.approx(1.0 / (1.0 + math.exp(a.delta - router.mean_ability)))


def test_difficulty_ranks_by_delta_and_spread_and_older_artifacts_by_delta_alone(tmp_path: Path) -> None:
    router = load_router()
    easy, hard = router.assess("hi"), router.assess(PROMPT)
    assert easy.difficulty < hard.difficulty
    assert hard.difficulty != pytest.approx(1.0 - router.p_good(hard))  # not the 1PL's own difficulty
    copy_default(tmp_path)  # an artifact from before the ranking difficulty: delta's, as it was
    with np.load(tmp_path / "router.npz") as z:
        arrays = {k: z[k] for k in z.files if k not in ("rank_coef", "rank_icpt")}
    np.savez_compressed(tmp_path / "router.npz", **arrays)
    older = load_router(tmp_path)
    a = older.assess(PROMPT)
    assert a.delta == hard.delta and a.difficulty == pytest.approx(1.0 - older.p_good(a))


def test_known_profiles_have_heads_abilities_and_output_lengths(router: Router) -> None:
    names = router.known_profiles()
    # The shipped router knows every shared file's pool (the union, ~100 models).
    assert {"Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct", "gpt-4-1106-preview",
            "codellama-7b", "llama-3.3-nemotron-super-49b-v1", "gpt-4-0314"} <= set(names)
    small, large = router.ability_of("Llama-2-7b-hf"), router.ability_of("gemini-1.5-pro-002")
    assert small is not None and large is not None and small < large
    assert router.ability_of("never-heard-of-it") is None
    assert (router.expected_output_tokens("Meta-Llama-3.1-8B-Instruct") or 0) > 0
    a = router.assess(PROMPT)
    assert 0.0 < router.p_good(a, profile="gemini-1.5-pro-002") < 1.0
    # An unknown profile falls back to the ability scale, never raises.
    assert router.p_good(a, profile="unknown-model") == router.p_good(a)


def test_harder_looking_prompts_score_harder(router: Router) -> None:
    easy = router.assess("What is 2 + 2?").difficulty
    hard = router.assess(
        "A 2.5 kg block slides down a 30 degree incline with kinetic friction coefficient 0.2. "
        "Compute its acceleration and the work done by friction over 4.0 m, in SI units."
    ).difficulty
    assert hard > easy


@pytest.mark.parametrize(("name", "key"), [
    ("Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct"),
    ("together_ai/meta-llama/Meta-Llama-3.1-70B-Instruct", "llama-3.1-70b-instruct"),
    ("Llama-2-7b-hf", "llama-2-7b"),
    ("mistralai/Mistral_7B_Instruct v0.1", "mistral-7b-instruct-v0.1"),
    # what tells two models apart stays: size, version, tuning, date, a tool suffix
    ("gpt-4-0613", "gpt-4-0613"), ("gpt-4-0613+cot", "gpt-4-0613+cot"), ("Meta-Llama-3.1-8B", "llama-3.1-8b"),
])
def test_model_key_drops_only_what_never_tells_two_models_apart(name: str, key: str) -> None:
    assert model_key(name) == key


def test_a_profile_spelt_another_way_is_the_model_the_router_learned(router: Router) -> None:
    a = router.assess(PROMPT)
    hub = "meta-llama/Meta-Llama-3.1-70B-Instruct"
    assert router.knows(hub) and not router.knows("meta-llama/Llama-3.1-405B-Instruct")
    assert router.p_good(a, profile=hub) == router.p_good(a, profile="Meta-Llama-3.1-70B-Instruct")
    assert router.ability_of(hub) == router.ability_of("Meta-Llama-3.1-70B-Instruct")
    assert router.p_good(a, profile=hub) != router.p_good(a)  # not the pool mean an unknown name gets


def test_a_key_two_training_files_spell_differently_mixes_both_heads(router: Router) -> None:
    # MMLU-Pro's Meta-Llama-3.1-8B-Instruct and the mix's llama-3.1-8b-instruct are one model.
    a = router.assess(PROMPT)
    p_mmlu = router.p_good(a, profile="Meta-Llama-3.1-8B-Instruct")
    p_mix = router.p_good(a, profile="llama-3.1-8b-instruct")
    both = router.p_good(a, profile="meta-llama/Llama-3.1-8B-Instruct")
    assert p_mmlu != p_mix and min(p_mmlu, p_mix) < both < max(p_mmlu, p_mix)


def test_a_listed_model_without_heads_is_read_through_its_other_spelling(tmp_path: Path) -> None:
    # A router fitted without MMLU-Pro's rows still lists its models (the data's union), with no heads.
    copy_default(tmp_path)
    meta = json.loads((tmp_path / "router.json").read_text())
    with np.load(tmp_path / "router.npz") as z:
        arrays = {k: z[k] for k in z.files}
    keep = arrays["head_model"] != meta["models"].index("Meta-Llama-3.1-8B-Instruct")
    for k in ("head_coef", "head_icpt", "knn_coef", "head_model", "head_domain"):
        arrays[k] = arrays[k][keep]
    np.savez_compressed(tmp_path / "router.npz", **arrays)
    r = load_router(tmp_path)
    a = r.assess(PROMPT)
    assert r.p_good(a, profile="Meta-Llama-3.1-8B-Instruct") == r.p_good(a, profile="llama-3.1-8b-instruct")
    assert r.p_good(a, profile="Meta-Llama-3.1-8B-Instruct") != r.p_good(a)


def test_a_ranking_difficulty_of_another_width_than_the_latent_is_refused_whole() -> None:
    meta = json.loads((DEFAULT_ARTIFACT / "router.json").read_text())
    with np.load(DEFAULT_ARTIFACT / "router.npz") as z:
        arrays = {k: z[k] for k in z.files}
    assert disagreement(meta, arrays) is None
    assert "rank_coef" in (disagreement(meta, {**arrays, "rank_coef": arrays["rank_coef"][:-1]}) or "")
    del arrays["rank_coef"], arrays["rank_icpt"]
    assert disagreement(meta, arrays) is None  # optional: an older artifact ranks by delta
