"""The simulator's pure rules: tokens, truth, difficulty, answers, model files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway.simulator import (
    DEFAULT_MODELS,
    SPAN_WORDS,
    SimConfigError,
    SimModel,
    count_tokens,
    difficulty_of,
    load_models,
    p_correct,
    truth_of,
)
from gateway.simulator.answers import compose, draw_answer, logprobs_payload
from gateway.simulator.protocol import RequestError, parse_chat_call
from gateway.simulator.tokens import split_pieces, truncate_tokens

ARITHMETIC = "What is 17 + 25?"
CHOICES = "Which colour is the sky?\nA. red\nB) blue\n(C) green\nD. plaid"
PROOF = "Prove that there are infinitely many primes. Explain why, step by step."


def test_count_tokens_counts_words_and_punctuation() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hi") == 1
    assert count_tokens("The answer is 42.") == 5
    assert count_tokens("  don't   stop!  ") == 5


def test_truncation_keeps_exactly_the_requested_tokens() -> None:
    text = "The answer is -42. Because it is, obviously."
    for limit in range(1, count_tokens(text) + 1):
        cut, truncated = truncate_tokens(text, limit)
        assert count_tokens(cut) == limit
        assert text.startswith(cut)
        assert truncated == (limit < count_tokens(text))


def test_stream_pieces_add_up_to_the_text() -> None:
    text = "The answer is B. This follows from reading the question."
    pieces = split_pieces(text, 4)
    assert "".join(pieces) == text
    assert sum(count_tokens(p) for p in pieces) == count_tokens(text)
    assert all(count_tokens(p) <= 4 for p in pieces)


def test_arithmetic_truth_is_the_number() -> None:
    assert truth_of(ARITHMETIC).answer == "42"
    assert truth_of("Please compute 2 + 3 * 4 - 10 for me").answer == "4"
    assert truth_of("calculate 3*-2").answer == "-6"
    assert truth_of("7 \u00d7 6 = ?").answer == "42"


def test_wrong_numbers_are_near_the_truth_but_different() -> None:
    truth = truth_of(ARITHMETIC)
    assert truth.kind == "number"
    assert set(truth.distractors) == {"41", "43", "40", "44"}


def test_choice_truth_is_one_of_the_offered_letters_and_stable() -> None:
    truth = truth_of(CHOICES)
    assert truth.kind == "choice"
    assert truth.answer in "ABCD"
    assert sorted((truth.answer, *truth.distractors)) == ["A", "B", "C", "D"]
    assert truth_of(CHOICES) == truth


def test_span_truth_is_pinned_across_processes() -> None:
    # blake2b, not the salted hash(): these values must never change between runs.
    assert truth_of("hi").answer == "fjord"
    assert truth_of("What is the capital of France?").answer == "basalt"
    truth = truth_of("Tell me a story")
    assert truth.kind == "span" and truth.answer in SPAN_WORDS
    assert truth.answer not in truth.distractors


def test_harder_prompts_have_higher_difficulty() -> None:
    code = "```python\ndef f(xs):\n    return sorted(xs)\n```\nDebug this algorithm and explain why."
    ladder = ["hi", "What is the capital of France?", ARITHMETIC, PROOF, code]
    scores = [difficulty_of(text) for text in ladder]
    assert scores == sorted(scores)
    assert scores[0] < -1.5 and scores[3] > 1.5


def test_difficulty_is_clamped() -> None:
    huge = "Prove and derive the theorem step by step. " + "1 + 2 = 3 " * 500
    assert difficulty_of(huge) == 5.0
    assert difficulty_of("") == -2.0


def test_correctness_probability_is_sigmoid_of_ability_minus_difficulty() -> None:
    assert p_correct(1.0, 1.0) == 0.5
    assert math.isclose(p_correct(2.5, 0.0), 1 / (1 + math.exp(-2.5)))
    assert 0.0 <= p_correct(-800.0, 0.0) < 1e-300


def test_a_wrong_answer_differs_from_the_truth_and_carries_low_confidence() -> None:
    truth = truth_of(CHOICES)
    wrong = draw_answer(truth, 0.7, u_correct=0.9, u_pick=0.5)
    right = draw_answer(truth, 0.7, u_correct=0.1, u_pick=0.5)
    assert not wrong.correct and wrong.token != truth.answer
    assert right.correct and right.token == truth.answer
    assert math.isclose(right.confidence, 0.7)
    assert math.isclose(wrong.confidence, 0.3 / 3)


def test_logprobs_describe_the_answer_token() -> None:
    answer = draw_answer(truth_of(ARITHMETIC), 0.9, u_correct=0.0, u_pick=0.0)
    entry = logprobs_payload(answer, top_logprobs=2)["content"][0]
    assert entry["token"] == "42"
    assert math.isclose(math.exp(entry["logprob"]), 0.9)
    assert entry["top_logprobs"][0]["token"] == "42"
    assert len(entry["top_logprobs"]) == 2


def test_content_has_the_model_length_and_states_the_answer() -> None:
    answer = draw_answer(truth_of(ARITHMETIC), 1.0, 0.0, 0.0)
    done = compose(answer, output_tokens=60, max_tokens=None, stop=())
    assert done.content.startswith("The answer is 42.")
    assert done.completion_tokens == count_tokens(done.content) == 60
    assert done.finish_reason == "stop"


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    answer = draw_answer(truth_of(ARITHMETIC), 1.0, 0.0, 0.0)
    done = compose(answer, output_tokens=60, max_tokens=7, stop=())
    assert done.completion_tokens == count_tokens(done.content) == 7
    assert done.finish_reason == "length"


def test_stop_sequences_cut_the_content() -> None:
    answer = draw_answer(truth_of(ARITHMETIC), 1.0, 0.0, 0.0)
    done = compose(answer, output_tokens=60, max_tokens=None, stop=("zzz", "."))
    assert done.content == "The answer is 42"
    assert done.completion_tokens == 4 and done.finish_reason == "stop"


def test_short_models_still_state_the_whole_answer() -> None:
    answer = draw_answer(truth_of(ARITHMETIC), 1.0, 0.0, 0.0)
    assert compose(answer, output_tokens=1, max_tokens=None, stop=()).content == "The answer is 42."


def test_default_models_span_small_to_large() -> None:
    by_name = {m.name: m for m in DEFAULT_MODELS}
    small, large = by_name["sim-small"], by_name["sim-large"]
    assert (small.ability, small.ttft_ms, small.tokens_per_s, small.output_tokens) == (0.0, 20, 200, 60)
    assert (large.ability, large.ttft_ms, large.tokens_per_s, large.output_tokens) == (2.5, 60, 80, 80)


def test_model_files_load_into_frozen_models(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - {name: tiny, ability: -1, ttft_ms: 0, fail_first: 2}\n")
    (model,) = load_models(path)
    assert model == SimModel("tiny", ability=-1.0, ttft_ms=0, fail_first=2)
    with pytest.raises(AttributeError):
        model.ability = 3.0  # type: ignore[misc]


def test_model_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - {name: a, ability: 1}\n  - {name: b, ability: 1, ttft: 5}\n")
    with pytest.raises(SimConfigError, match=r"bad\.yaml: models\[1\]\.ttft: Extra inputs"):
        load_models(path)


def test_model_files_reject_duplicates_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("models:\n  - {name: a, ability: 1}\n  - {name: a, ability: 2}\n")
    with pytest.raises(SimConfigError, match="duplicate"):
        load_models(path)
    path.write_text("models:\n  - {name: a, ability: 1, error_rate: 2}\n")
    with pytest.raises(SimConfigError, match=r"models\[0\]\.error_rate"):
        load_models(path)
    with pytest.raises(SimConfigError, match=r"missing\.yaml"):
        load_models(tmp_path / "missing.yaml")


def test_models_built_in_code_are_validated_too() -> None:
    with pytest.raises(ValueError, match="ttft_ms"):
        SimModel("a", ability=0.0, ttft_ms=-1)


@pytest.mark.parametrize(("asked", "reported"), [(None, None), ("auto", "default"), ("priority", "priority"),
                                                 ("flex", "flex"), ("default", "default")])
def test_an_answer_reports_the_service_tier_it_was_asked_for(asked: str | None, reported: str | None) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "service_tier": asked}
    assert parse_chat_call(body).service_tier == reported


def test_an_unknown_service_tier_is_refused_as_openai_does() -> None:
    with pytest.raises(RequestError) as refused:
        parse_chat_call({"model": "m", "messages": [{"role": "user", "content": "hi"}], "service_tier": "gold"})
    assert refused.value.param == "service_tier"


def test_audio_parts_are_billed_as_prompt_tokens_and_reported_apart() -> None:
    """10 tokens a second at 8 kbit/s: a 30 KB clip is 300 prompt tokens, in `prompt_tokens_details`."""
    from gateway.simulator.answers import usage_of

    clip = {"type": "input_audio", "input_audio": {"data": "SUQz" * 10_000, "format": "mp3"}}
    text = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    heard = parse_chat_call({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                                                       clip]}]})
    assert heard.audio_prompt_tokens == 300
    assert heard.prompt_tokens == parse_chat_call({"model": "m", "messages": [text]}).prompt_tokens + 300
    usage = usage_of(heard.prompt_tokens, [], heard.audio_prompt_tokens)
    assert usage["prompt_tokens_details"]["audio_tokens"] == 300
    assert "prompt_tokens_details" not in usage_of(5, [])
