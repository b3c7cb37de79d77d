"""What a prompt asks, as the simulator sees it: its truth and its difficulty.

Both are pure functions of the text, stable across processes (hashes are
blake2b, never Python's salted ``hash()``), so tests and benchmarks can predict
every answer. The rules are listed in the package docstring.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Literal

TruthKind = Literal["number", "choice", "span"]

# A wrong span answer is one of the few words after the truth in this ring.
SPAN_WORDS: tuple[str, ...] = (
    "amber",
    "basalt",
    "cobalt",
    "delta",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "indigo",
    "juniper",
    "kestrel",
    "lantern",
    "meadow",
    "nickel",
    "orchid",
    "quartz",
)
_SPAN_DISTRACTORS = 4

_TIMES = "\u00d7"  # the multiplication sign, spelled out so no reader mistakes it for x
_NUMBER = r"-?\d{1,12}"
_EXPR = rf"{_NUMBER}(?:\s*[-+*{_TIMES}]\s*{_NUMBER}){{1,7}}"
_ARITHMETIC = re.compile(
    rf"(?:what\s+is|what's|compute|calculate|evaluate)\s+({_EXPR})|({_EXPR})\s*[=?]",
    re.IGNORECASE,
)
_LEADING_NUMBER = re.compile(rf"\s*({_NUMBER})")
_OPERATION = re.compile(rf"\s*([-+*{_TIMES}])\s*({_NUMBER})")
_OPTION = re.compile(r"^[ \t]*\(?([A-J])[.)][ \t]+\S", re.MULTILINE)

_WORD = re.compile(r"[^\W\d_]+")
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")
_MATH_SYMBOLS = re.compile(rf"[-+*/^=<>{_TIMES}\u00f7\u221a\u2211\u222b\u03c0]")
_HARD_PHRASES = re.compile(
    r"\b(prove|proof|derive|derivation|step by step|explain why|theorem|integral|"
    r"derivative|optimi[sz]e|algorithm|complexity|implement|debug)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```|^[ \t]*(?:def|class|import|#include|function)\b", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Truth:
    """The right answer to a prompt and the wrong answers a model may give."""

    kind: TruthKind
    answer: str
    distractors: tuple[str, ...]


def stable_hash(*parts: str) -> int:
    """A 64-bit hash of ``parts`` that is the same in every process."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def stable_uniform(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    return stable_hash(*parts) / 2.0**64


def truth_of(text: str) -> Truth:
    """The truth of a user message: arithmetic, else a choice letter, else a span."""
    number = _arithmetic_answer(text)
    if number is not None:
        offsets = (1, -1, 2, -2)
        return Truth("number", str(number), tuple(str(number + d) for d in offsets))
    letters = list(dict.fromkeys(_OPTION.findall(text)))
    if len(letters) >= 2:
        answer = letters[stable_hash("choice", text) % len(letters)]
        return Truth("choice", answer, tuple(x for x in letters if x != answer))
    index = stable_hash("span", text) % len(SPAN_WORDS)
    ring = SPAN_WORDS[index:] + SPAN_WORDS[:index]
    return Truth("span", ring[0], ring[1 : 1 + _SPAN_DISTRACTORS])


def _arithmetic_answer(text: str) -> int | None:
    match = _ARITHMETIC.search(text)
    if match is None:
        return None
    expression = match.group(1) or match.group(2)
    first = _LEADING_NUMBER.match(expression)
    assert first is not None  # the expression regex starts with a number
    # Sum of products: '*' binds tighter than '+' and '-'.
    total, product = 0, int(first.group(1))
    for op, raw in _OPERATION.findall(expression, first.end()):
        value = int(raw)
        if op not in "+-":
            product *= value
        else:
            total += product
            product = value if op == "+" else -value
    return total + product


def difficulty_of(text: str) -> float:
    """How hard ``text`` is for the simulated models, on a logit scale.

    ``P(correct) = sigmoid(ability - difficulty)``; roughly -2 for "hi",
    -1 for a short factual question, around 2 for "prove ... step by step"
    and up to 5 for long technical prompts with code.
    """
    words = len(_WORD.findall(text))
    score = -2.0 + 0.5 * math.log2(1.0 + words / 4.0)
    score += 0.25 * min(len(_NUMBERS.findall(text)), 8)
    score += 0.15 * min(len(_MATH_SYMBOLS.findall(text)), 10)
    phrases = {m.lower() for m in _HARD_PHRASES.findall(text)}
    score += 1.0 * min(len(phrases), 3)
    if _CODE.search(text):
        score += 1.0
    return max(-3.0, min(5.0, score))
