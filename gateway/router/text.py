"""Prompt normalisation, structural features and a coarse category guess.

Everything here is pure stdlib and runs on the request path, so it is written for
speed (a handful of pre-compiled regexes, one pass each) rather than linguistic care.

Why strip scaffolding: the router is trained on multiple-choice benchmark prompts
("Question: ... Options: A. ... Answer: Let's think step by step.") but deployed on
chat, code and anything else. Labels like "Options:" and "A." carry no information
about how hard the *content* is, and a model that keys on them learns the file
format instead of difficulty. We keep the option *text* (it is content: numeric
options hint at a calculation) and drop only the labels.
"""

from __future__ import annotations

import math
import re

_SCAFFOLD_LINES = re.compile(
    r"^\s*(?:question|options|choices|answer\s*:\s*let'?s think step by step\.?)\s*:?\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_LEADING_LABEL = re.compile(r"^\s*(?:question|q)\s*:\s*", re.IGNORECASE | re.MULTILINE)
_OPTION_LABEL = re.compile(r"^\s*\(?[A-Ja-j][.)]\s+", re.MULTILINE)
_TRAILING_COT = re.compile(r"answer\s*:\s*let'?s think step by step\.?\s*$", re.IGNORECASE)

_DIGIT = re.compile(r"\d")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_MATH_SYM = re.compile(r"[=+\-*/^<>≤≥∑∫√π±×÷%]|\\(?:frac|sqrt|sum|int|cdot|times)")
# Digits and maths symbols are counted with bytes.translate, one C pass without building a list of
# matches: in UTF-8 an ASCII byte is always an ASCII character, so the ASCII members of \d ([0-9])
# and of the maths class are counted on the bytes, and the regexes run on the few non-ASCII
# characters alone. No match of a LaTeX command overlaps another or a symbol (each starts with a
# backslash and holds none), so those are plain substring counts.
_ASCII_BYTES = bytes(range(128))
_DIGIT_BYTES = b"0123456789"
_MATH_BYTES = b"=+-*/^<>%"
_MATH_WIDE = re.compile(r"[≤≥∑∫√π±×÷]")
_MATH_COMMANDS = ("\\frac", "\\sqrt", "\\sum", "\\int", "\\cdot", "\\times")
# Code markers: plain substring counts plus one regex anchored on rare characters;
# a single alternation with \b and $ was the slowest part of assess() on long prompts.
_CODE_SUBSTRINGS = ("```", "def ", "return ", "class ", "#include", "function", "=>", "import ")
_CODE_LINE_END = re.compile(r"[;{][ \t]*$", re.MULTILINE)
# Word-set lookups instead of big \b-alternation regexes: one findall over the text and
# set membership is several times faster on 2,000-token prompts (p99 budget is 10 ms).
_CONSTRAINT_WORDS = frozenset(
    "must exactly without only ensure format prove explain justify".split()
)
_CONSTRAINT_PHRASES = ("at least", "at most", "should not", "do not", "don't", "no more than", "step by step")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
# On ASCII text, sentence ends are counted as ". " pairs after one byte table maps every end mark
# to "." and every character that \s matches to " " (no two such pairs overlap).
_SENTENCE_BYTES = bytes.maketrans(b"!?\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b".." + b" " * 9)
_WORD = re.compile(r"[A-Za-z]+")
# _WORD's words, read from the UTF-8 bytes: every byte of a non-ASCII character is >= 0x80, so it
# separates words just as the character does, and bytes words are cheaper to make than str ones.
_WORD_BYTES = re.compile(rb"[A-Za-z]+")
_MATH_WORDS = frozenset("calculate compute solve equation integral derivative probability sum product".split())
_REASON_WORDS = frozenset("why because therefore implies infer conclude argument assume".split())
_CODE_WORDS = frozenset("python javascript typescript java rust golang sql function class method code script "
                        "compile bug debug regex api json implement refactor".split())
_PROOF_WORDS = frozenset("prove proof theorem lemma integral derivative".split())
# Open-ended generation ("write a story", "draft an email"): long answers judged on quality,
# unlike a factoid question of the same length.
_CREATIVE_WORDS = frozenset("write story poem essay draft compose create generate rewrite summarize summarise "
                            "describe imagine".split())
_FACTOID_OPENERS = frozenset("what who when where which how why is are does do can name".split())
_CONSTRAINT_BYTES = frozenset(w.encode() for w in _CONSTRAINT_WORDS)
_CREATIVE_BYTES = frozenset(w.encode() for w in _CREATIVE_WORDS)
_FACTOID_BYTES = frozenset(w.encode() for w in _FACTOID_OPENERS)
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s", re.MULTILINE)

STRUCT_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "digit_frac",
    "log_numbers",
    "log_math_symbols",
    "log_code_markers",
    "log_constraint_words",
    "log_questions",
    "log_sentences",
    "mean_word_len",
    "upper_frac",
    "log_lines",
    "log_code_blocks",
    "log_latex",
    "log_list_lines",
    "log_creative_words",
    "opens_with_question_word",
)


def _drop_trailing_cot(text: str) -> str:
    """``_TRAILING_COT.sub("", text)``, tried at one position rather than at every one.

    A match runs to the end of the text and holds "answer" only at its start, so it can only start
    at the last "answer". On ASCII text that is where lower() finds it (IGNORECASE also folds a few
    non-ASCII letters such as U+017F onto ASCII ones, so other text takes the full search)."""
    if not text.isascii():
        return _TRAILING_COT.sub("", text)
    at = text.lower().rfind("answer")
    m = _TRAILING_COT.match(text, at) if at >= 0 else None
    return text if m is None else text[:at] + text[m.end():]


def normalise(text: str) -> str:
    """Return the prompt's content with multiple-choice/CoT scaffolding removed."""
    text = _drop_trailing_cot(text)
    text = _SCAFFOLD_LINES.sub("", text)
    text = _LEADING_LABEL.sub("", text)
    text = _OPTION_LABEL.sub("", text)
    return text.strip()


def _digits_and_maths(clean: str, raw: bytes) -> tuple[int, int]:
    """How many digits and maths symbols (``_DIGIT``, ``_MATH_SYM`` matches) the text holds;
    ``raw`` is the text in UTF-8 (surrogates passed)."""
    n = len(raw)
    digits = n - len(raw.translate(None, _DIGIT_BYTES))
    maths = n - len(raw.translate(None, _MATH_BYTES)) + sum(map(clean.count, _MATH_COMMANDS))
    if not clean.isascii():
        wide = raw.translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass")
        digits += len(_DIGIT.findall(wide))
        maths += len(_MATH_WIDE.findall(wide))
    return digits, maths


def _sentence_ends(clean: str, raw: bytes) -> int:
    """How many ``_SENTENCE_END`` matches the text holds; ``raw`` is the text in UTF-8."""
    if not clean.isascii():
        return len(_SENTENCE_END.findall(clean))
    marked = raw.translate(_SENTENCE_BYTES)
    return marked.count(b". ") + marked.endswith(b".")


def structural_features(clean: str) -> tuple[float, ...]:
    """Cheap, format-agnostic signals of effort: size, numbers, maths, code, constraints.

    Log-scaled counts so that one very long prompt does not dominate a linear model.
    Order matches STRUCT_NAMES.
    """
    n_chars = len(clean)
    raw = clean.encode("utf-8", "surrogatepass")
    words = _WORD_BYTES.findall(raw)
    n_words = len(words)
    letters = sum(map(len, words))
    upper = sum(1 for w in words if w[0] < 91)  # an ASCII letter below 91 is one of A-Z
    lower = clean.lower()
    constraints = creative = 0
    for w in words:  # one pass, one lower() per word (the two word sets are disjoint)
        lw = w.lower()
        if lw in _CONSTRAINT_BYTES:
            constraints += 1
        elif lw in _CREATIVE_BYTES:
            creative += 1
    constraints += sum(lower.count(p) for p in _CONSTRAINT_PHRASES)
    digits, maths = _digits_and_maths(clean, raw)
    return (
        math.log1p(n_chars),
        math.log1p(n_words),
        digits / (n_chars + 1.0),
        math.log1p(len(_NUMBER.findall(clean))),
        math.log1p(maths),
        math.log1p(sum(clean.count(m) for m in _CODE_SUBSTRINGS) + len(_CODE_LINE_END.findall(clean))),
        math.log1p(constraints),
        math.log1p(clean.count("?")),
        math.log1p(_sentence_ends(clean, raw)),
        letters / (n_words + 1.0),
        upper / (n_words + 1.0),
        math.log1p(clean.count("\n")),
        math.log1p(clean.count("```")),
        math.log1p(clean.count("$") + clean.count("\\")),
        math.log1p(len(_LIST_LINE.findall(clean))),
        math.log1p(creative),
        1.0 if words and words[0].lower() in _FACTOID_BYTES else 0.0,
    )


def guess_category(clean: str, feats: tuple[float, ...]) -> str:
    """Coarse task label for explain output only; metrics never read it."""
    named = dict(zip(STRUCT_NAMES, feats, strict=True))
    if named["log_code_markers"] >= math.log1p(2):
        return "code"
    words = set(_WORD.findall(clean[:4000].lower()))
    if len(words & _CODE_WORDS) >= 2 or (words & _CODE_WORDS and named["log_code_markers"] > 0):
        return "code"
    if (named["log_math_symbols"] >= math.log1p(3) or words & _PROOF_WORDS
            or (words & _MATH_WORDS and named["digit_frac"] > 0.02)):
        return "math"
    if words & _REASON_WORDS:
        return "reasoning"
    if named["log_questions"] > 0 or named["log_words"] < math.log1p(60):
        return "knowledge"
    return "chat"
