"""On ASCII text, structural features count digits and maths symbols with byte tables and normalise
looks for the trailing chain-of-thought line at one position; the answers must be the regexes' on
any text, or a router trained on one would read the other wrong."""

from __future__ import annotations

import math
import random
import re

import pytest

from gateway.router import text as router_text
from gateway.router.text import STRUCT_NAMES, normalise, structural_features

_DIGIT = re.compile(r"\d")
_MATH_SYM = re.compile(r"[=+\-*/^<>≤≥∑∫√π±×÷%]|\\(?:frac|sqrt|sum|int|cdot|times)")


def _texts() -> list[str]:
    rnd = random.Random(11)
    pieces = ["\\frac", "\\sqrt", "\\sum", "\\int", "\\intercal", "\\cdot", "\\times", "\\\\sum", "x=1", "a<b>c",
              "3.14", "50%", "2^10", "a-b*c/d+e", "≤", "∑", "٣", "３", "²", "é", "’", "😀", "\ud800", " ", "\n", "word",
              "Q?"]
    out = ["", "plain words only", "12 + 3 = 15", "\\frac{1}{2} \\times 3", "x ≤ 5 and ∑ x", "٣ + ٤ = ٧"]
    for _ in range(300):
        out.append("".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 30))))
    return out


@pytest.mark.parametrize("text", _texts())
def test_digit_and_maths_counts_are_the_regex_counts(text: str) -> None:
    feats = dict(zip(STRUCT_NAMES, structural_features(text), strict=True))
    assert feats["digit_frac"] == len(_DIGIT.findall(text)) / (len(text) + 1.0)
    assert feats["log_math_symbols"] == math.log1p(len(_MATH_SYM.findall(text)))


def test_trailing_chain_of_thought_is_dropped_as_the_regex_drops_it() -> None:
    """normalise tries the trailing "Answer: Let's think step by step." at the last "answer" only."""
    trailing = re.compile(r"answer\s*:\s*let'?s think step by step\.?\s*$", re.IGNORECASE)
    rnd = random.Random(5)
    pieces = ["Answer:", "answer :", "ANSWER", " Let's think step by step.", "lets think step by step", "\n", " ",
              "Let's Think Step By Step", "x", "answer: let's think step by step.", ".", "answers", "ſtep", "é"]
    texts = ["Q\nAnswer: Let's think step by step.", "Answer: Let's think step by step. Answer: no",
             "answer: let's think step by step.\n", "Answer: Let's think ſtep by step."]
    texts += ["".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12))) for _ in range(3000)]
    for text in texts:
        assert normalise(text) == normalise_reference(text, trailing), text


def normalise_reference(text: str, trailing: re.Pattern[str]) -> str:
    text = trailing.sub("", text)
    for pattern in (router_text._SCAFFOLD_LINES, router_text._LEADING_LABEL, router_text._OPTION_LABEL):
        text = pattern.sub("", text)
    return text.strip()


def test_sentence_ends_are_the_regex_count() -> None:
    ends = re.compile(r"[.!?](?:\s|$)")
    rnd = random.Random(3)
    marks = [*".!?. \t\n\r\x0b\x0c\x1c\x1d\x1e\x1fab", "\u00a0", "é", "\u2028", "。"]
    texts = ["Hi. There! Ok?", "end.", "end.\n", "a..b. c", "x.\x1cy", "x.\u00a0y"]
    texts += ["".join(rnd.choice(marks) for _ in range(rnd.randint(0, 20))) for _ in range(5000)]
    for text in texts:
        feats = dict(zip(STRUCT_NAMES, structural_features(text), strict=True))
        assert feats["log_sentences"] == math.log1p(len(ends.findall(text))), repr(text)


def reference_features(clean: str) -> tuple[float, ...]:
    """structural_features as first written: one regex pass per count, words as str."""
    t = router_text
    words = t._WORD.findall(clean)
    n_words, lower = len(words), clean.lower()
    constraints = creative = 0
    for w in words:
        if w.lower() in t._CONSTRAINT_WORDS:
            constraints += 1
        elif w.lower() in t._CREATIVE_WORDS:
            creative += 1
    constraints += sum(lower.count(p) for p in t._CONSTRAINT_PHRASES)
    return (
        math.log1p(len(clean)), math.log1p(n_words), len(_DIGIT.findall(clean)) / (len(clean) + 1.0),
        math.log1p(len(t._NUMBER.findall(clean))), math.log1p(len(_MATH_SYM.findall(clean))),
        math.log1p(sum(clean.count(m) for m in t._CODE_SUBSTRINGS) + len(t._CODE_LINE_END.findall(clean))),
        math.log1p(constraints), math.log1p(clean.count("?")), math.log1p(len(t._SENTENCE_END.findall(clean))),
        sum(map(len, words)) / (n_words + 1.0), sum(1 for w in words if w[0].isupper()) / (n_words + 1.0),
        math.log1p(clean.count("\n")), math.log1p(clean.count("```")),
        math.log1p(clean.count("$") + clean.count("\\")), math.log1p(len(t._LIST_LINE.findall(clean))),
        math.log1p(creative), 1.0 if words and words[0].lower() in t._FACTOID_OPENERS else 0.0,
    )


def test_every_structural_feature_is_the_regex_definitions() -> None:
    rnd = random.Random(17)
    pieces = ["What", "must", "Write", "a story", "EXPLAIN", "don't", "at least", " ", "\n", "\t", "- ", "1) ", "```",
              "def ", "x = 1;", "{", "$x$", "\\frac", "≤", "٣", "é", "’", "K", "ſ", "日本", "😀", "\ud800", "3.14", "?",
              "!", ".", "Why", "how", "ÉCRIRE", "naïve", "\u00a0", "\x1c"]
    texts = ["", "What is 2+2?", "Write a poem.", "é", "Kelvin"]
    texts += ["".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 40))) for _ in range(3000)]
    for text in texts:
        assert structural_features(text) == reference_features(text), repr(text)
