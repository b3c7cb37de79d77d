"""What a simulated model answers: the draw, the completion text, its logprobs.

Pure functions; the server supplies the uniform numbers (stable hashes at
temperature 0, an RNG otherwise) so this module has no randomness of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .models import MAX_OUTPUT_TOKENS
from .prompts import Truth
from .structured import Shape, json_content, tool_call
from .tokens import count_tokens, truncate_tokens

_FILLER_WORDS = (
    "This follows from reading the question carefully and checking each step against "
    "the facts that are given so the result above is consistent with every constraint "
    "we can verify without further assumptions about the problem"
).split()
_LOGPROB_FLOOR = 1e-9


def _build_filler(tokens: int) -> tuple[str, tuple[int, ...]]:
    """A long explanation-like text and the end offset of each of its tokens."""
    text = ""
    ends: list[int] = []
    words = 0
    while len(ends) < tokens:
        if words and words % 12 == 0 and not text.endswith("."):
            text += "."  # a period now and then keeps it text-like
        else:
            word = _FILLER_WORDS[words % len(_FILLER_WORDS)]
            text += (" " + word.capitalize() if text.endswith(".") else " " + word) if text else word
            words += 1
        ends.append(len(text))
    return text, tuple(ends)


_FILLER, _FILLER_ENDS = _build_filler(MAX_OUTPUT_TOKENS)


@dataclass(frozen=True, slots=True)
class Answer:
    """One drawn answer and the model's probability over the candidates."""

    token: str
    correct: bool
    confidence: float
    candidates: tuple[tuple[str, float], ...]  # most likely first


@dataclass(frozen=True, slots=True)
class Completion:
    """The text of one choice, why it ended and its simulated token count."""

    content: str
    finish_reason: str
    completion_tokens: int
    answer: Answer
    tool_calls: tuple[dict[str, Any], ...] = ()  # then ``content`` is empty and finish_reason "tool_calls"


def p_correct(ability: float, difficulty: float) -> float:
    """``sigmoid(ability - difficulty)``."""
    x = ability - difficulty
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def draw_answer(truth: Truth, p: float, u_correct: float, u_pick: float) -> Answer:
    """Correct when ``u_correct < p``; otherwise a distractor picked by ``u_pick``.

    The wrong mass ``1 - p`` is spread evenly over the distractors, so a wrong
    answer's confidence is ``(1 - p) / len(distractors)``.
    """
    wrong_each = (1.0 - p) / len(truth.distractors)
    candidates = ((truth.answer, p), *((d, wrong_each) for d in truth.distractors))
    ranked = tuple(sorted(candidates, key=lambda c: -c[1]))
    if u_correct < p:
        return Answer(truth.answer, True, p, ranked)
    token = truth.distractors[int(u_pick * len(truth.distractors)) % len(truth.distractors)]
    return Answer(token, False, wrong_each, ranked)


def compose(answer: Answer, output_tokens: int, max_tokens: int | None, stop: tuple[str, ...]) -> Completion:
    """ "The answer is X." plus filler up to ``output_tokens``, then stop and max_tokens."""
    sentence = f"The answer is {answer.token}."
    used = count_tokens(sentence)
    extra = min(output_tokens - used, len(_FILLER_ENDS))
    text = f"{sentence} {_FILLER[: _FILLER_ENDS[extra - 1]]}" if extra > 0 else sentence
    tokens = used + max(extra, 0)
    finish = "stop"
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
        tokens = count_tokens(text)
    if max_tokens is not None and tokens > max_tokens:
        text, _ = truncate_tokens(text, max_tokens)
        tokens, finish = max_tokens, "length"
    return Completion(text, finish, tokens, answer)


def compose_shaped(answer: Answer, shape: Shape, output_tokens: int, max_tokens: int | None,
                   stop: tuple[str, ...]) -> Completion:
    """The answer in the form asked for: a tool call, JSON, or prose (``compose``).

    A tool call's tokens are those of its name and arguments; JSON is cut by ``max_tokens`` like
    prose (finish_reason ``length``, as real models do) but never by stop sequences.
    """
    if shape.tool is not None:
        call = tool_call(shape.tool, answer.token)
        tokens = count_tokens(call["function"]["name"] + call["function"]["arguments"])
        return Completion("", "tool_calls", tokens, answer, (call,))
    if shape.json_schema is None and not shape.json_object:
        return compose(answer, output_tokens, max_tokens, stop)
    text = json_content(shape, answer.token)
    tokens, finish = count_tokens(text), "stop"
    if max_tokens is not None and tokens > max_tokens:
        text, _ = truncate_tokens(text, max_tokens)
        tokens, finish = max_tokens, "length"
    return Completion(text, finish, tokens, answer)


def continue_after(prefill: str, own: Completion, consistent: list[Completion]) -> Completion:
    """What a model given the start of an answer (`prefill`) writes next: only the rest.

    The rest of the first of its own completion and then `consistent` (the same prose for the other
    candidate answers) that begins with `prefill`, so a partial "The answer is 42. This" goes on
    as an answer of 42; when none does, filler up to the length `own` would have had.
    """
    if own.tool_calls:
        return own  # a tool call is not prose to continue
    for full in (own, *consistent):
        if full.content.startswith(prefill):
            rest = full.content[len(prefill):]
            return Completion(rest, full.finish_reason, count_tokens(rest), full.answer)
    left = own.completion_tokens - count_tokens(prefill)
    rest = " " + _FILLER[: _FILLER_ENDS[min(left, len(_FILLER_ENDS)) - 1]] if left > 0 else ""
    return Completion(rest, own.finish_reason, count_tokens(rest), own.answer)


def usage_of(prompt_tokens: int, completions: list[Completion], audio_prompt_tokens: int = 0) -> dict[str, Any]:
    """OpenAI ``usage``: completion tokens summed over all choices; a prompt's audio tokens (counted in
    ``prompt_tokens``) in ``prompt_tokens_details.audio_tokens``, as OpenAI reports them."""
    completion_tokens = sum(c.completion_tokens for c in completions)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if audio_prompt_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": audio_prompt_tokens}
    return usage


def logprobs_payload(answer: Answer, top_logprobs: int) -> dict[str, Any]:
    """``choices[i].logprobs`` covering the answer token only."""
    top = [_entry(token, prob) for token, prob in answer.candidates[:top_logprobs]]
    head = _entry(answer.token, answer.confidence)
    head["top_logprobs"] = top
    return {"content": [head], "refusal": None}


def _entry(token: str, prob: float) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": math.log(max(prob, _LOGPROB_FLOOR)),
        "bytes": list(token.encode()),
    }
