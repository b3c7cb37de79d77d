"""Batch scoring and training work end to end on a 30-row cut of the data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import InputError
from gateway.router import load_router
from gateway.router.batch import score_file
from gateway.router.consistency import check_artifact
from gateway.router.training.train import train


def test_batch_writes_one_scored_line_per_prompt(small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    assert score_file(small_data, out, progress=False) == 30
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    first_in = json.loads(small_data.read_text().splitlines()[0])
    assert rows[0]["id"] == first_in["id"]
    assert set(first_in["models"]) <= set(rows[0]["predicted"])
    assert all(0.0 <= r["difficulty"] <= 1.0 for r in rows)


def test_batch_makes_the_folder_its_out_file_goes_in(small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores" / "today.jsonl"  # an error named "today.jsonl.partial", which no one asked for
    assert score_file(small_data, out, progress=False) == 30
    assert [p.name for p in out.parent.iterdir()] == ["today.jsonl"]


@pytest.mark.parametrize("earlier", [None, '{"id": "an earlier run"}\n'])
def test_a_bad_line_leaves_the_output_as_it_was_not_half_written(tmp_path: Path, earlier: str | None) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "prompt": "hi"}\n{"id": 2, "prompt": "Say hi."}\nnot json\n')
    out = tmp_path / "scores.jsonl"
    if earlier is not None:
        out.write_text(earlier)
    with pytest.raises(InputError, match="line 3 is not JSON"):
        score_file(src, out, progress=False)
    assert (out.read_text() if out.exists() else None) == earlier  # two lines of scores were left
    assert [p.name for p in tmp_path.iterdir()] == ["in.jsonl"] + (["scores.jsonl"] if earlier else [])


def test_unseen_models_are_scored_from_difficulty_alone(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "x", "prompt": "Write a haiku about routers.",
                               "models": {"brand-new-7b": {}, "gemini-1.5-pro-002": {}}}) + "\n"
                   + json.dumps({"id": "y", "prompt": "no models field"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert score_file(src, out, progress=False) == 2
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    router = load_router()
    # the 1PL at the pool's mean ability; the row's difficulty is what ranks a pair of such models
    assert first["predicted"]["brand-new-7b"] == pytest.approx(router.p_good(router.assess("Write a haiku about "
                                                                                         "routers.")), abs=1e-6)
    known = len(load_router().known_profiles())
    assert len(first["predicted"]) == known + 1 and len(second["predicted"]) == known  # known profiles always


def test_training_writes_a_loadable_artifact(small_data: Path, tmp_path: Path) -> None:
    report = train(small_data, tmp_path / "art", progress=False)
    assert report["n_validation"] == 8 and report["pairs"]
    check_artifact(tmp_path / "art")  # its meta and arrays agree: `router promote` takes it
    r = load_router(tmp_path / "art")
    assert 0.0 <= r.assess("Hello there").difficulty <= 1.0
    assert len(r.known_profiles()) == 28  # one file: that file's pool


def test_training_on_two_models_writes_a_loadable_artifact(tmp_path: Path) -> None:
    """What `switchyard logs export` writes holds the deployments' two router profiles: their outcomes have
    fewer principal components than the latent asks for, and router.json said 10 columns where the arrays
    held 5, so route, promote and serve refused what train had reported written."""
    import random

    from gateway.router.serving import load_checked

    rng = random.Random(1)
    rows = []
    for i in range(120):
        hard = rng.random()
        rows.append(json.dumps({"id": f"x{i}", "prompt": f"Question {i}: explain {rng.randint(1, 999)} things",
                                "split": "validation" if i % 5 == 0 else "train",
                                "models": {"Meta-Llama-3.1-8B-Instruct": {"score": float(hard < 0.5)},
                                           "Meta-Llama-3.1-70B-Instruct": {"score": float(hard < 0.8)}}}))
    data = tmp_path / "two.jsonl"
    data.write_text("\n".join(rows) + "\n")
    train(data, tmp_path / "art", progress=False)
    router = load_checked(tmp_path / "art")  # what `router promote` and a replica load
    assert set(router.known_profiles()) == {"Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"}



def test_route_batch_shows_how_far_it_is_through_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": f"question {i}"}) + "\n\n" for i in range(3)))
    assert score_file(src, tmp_path / "out.jsonl", progress=True) == 3
    assert "3/3" in capsys.readouterr().err  # a share and time left, not a bare count (blank lines not rows)
    with pytest.raises(FileNotFoundError):
        score_file(tmp_path / "missing.jsonl", tmp_path / "out.jsonl", progress=True)
    assert capsys.readouterr().err == ""  # no bar drawn for a file that is not there


def test_route_batch_writes_through_a_symlinked_out_to_the_file_it_names(tmp_path: Path) -> None:
    src, real, link = tmp_path / "in.jsonl", tmp_path / "scores.jsonl", tmp_path / "latest.jsonl"
    src.write_text(json.dumps({"id": "x", "prompt": "hi"}) + "\n")
    real.write_text("old\n")
    link.symlink_to(real)
    assert score_file(src, link, progress=False) == 1
    assert link.is_symlink() and json.loads(real.read_text())["id"] == "x"
