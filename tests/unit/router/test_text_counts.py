"""Structural features count digits and maths symbols with byte tables on ASCII text; the counts
must be the regexes' counts on any text, or a router trained on one would read the other wrong."""

from __future__ import annotations

import math
import random
import re

import pytest

from gateway.router.text import STRUCT_NAMES, structural_features

_DIGIT = re.compile(r"\d")
_MATH_SYM = re.compile(r"[=+\-*/^<>≤≥∑∫√π±×÷%]|\\(?:frac|sqrt|sum|int|cdot|times)")


def _texts() -> list[str]:
    rnd = random.Random(11)
    pieces = ["\\frac", "\\sqrt", "\\sum", "\\int", "\\intercal", "\\cdot", "\\times", "\\\\sum", "x=1", "a<b>c",
              "3.14", "50%", "2^10", "a-b*c/d+e", "≤", "∑", "٣", "²", "é", " ", "\n", "word", "Q?"]
    out = ["", "plain words only", "12 + 3 = 15", "\\frac{1}{2} \\times 3", "x ≤ 5 and ∑ x", "٣ + ٤ = ٧"]
    for _ in range(300):
        out.append("".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 30))))
    return out


@pytest.mark.parametrize("text", _texts())
def test_digit_and_maths_counts_are_the_regex_counts(text: str) -> None:
    feats = dict(zip(STRUCT_NAMES, structural_features(text), strict=True))
    assert feats["digit_frac"] == len(_DIGIT.findall(text)) / (len(text) + 1.0)
    assert feats["log_math_symbols"] == math.log1p(len(_MATH_SYM.findall(text)))
