"""Final-answer extraction for voting: pluggable extractors, most specific first.

An extractor turns a completion's text into a normalised answer key (a multiple-choice letter, a
number, a short span) or None. `extract_answer` tries them in order; when none applies the key
is None and the selector falls back (see `selectors.vote`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

Extractor = Callable[[str], str | None]

# Upper-case letters only: "the answer is a number" must not read as option A.
_LETTER = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?:?\s*(?:(?i:option)\s*)?\(?([A-J])\)?(?![\w])")
_BARE_LETTER = re.compile(r"^\s*\(?([A-J])\)?\.?\s*$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*(.+?)(?:[.\n]|$)", re.IGNORECASE)


def choice_letter(text: str) -> str | None:
    """'The answer is (B).' / 'Answer: b' / a bare 'C' → 'B' / 'B' / 'C'."""
    found = _LETTER.search(text) or _BARE_LETTER.match(text)
    return found.group(1) if found else None


def number(text: str) -> str | None:
    """The number stated as the answer, else the last number in the text, normalised ('1,000.0' → '1000')."""
    stated = _ANSWER_IS.search(text)
    pool = _NUMBER.findall(stated.group(1)) if stated else []
    pool = pool or _NUMBER.findall(text)
    if not pool:
        return None
    value = float(pool[-1 if not stated else 0].replace(",", ""))
    return str(int(value)) if value.is_integer() else f"{value:g}"


def short_span(text: str, max_words: int = 6, max_chars: int = 48) -> str | None:
    """A short free-text answer, lower-cased with punctuation and articles removed. Chinese and Japanese are
    written without spaces, so each of their (wide) characters counts as a word, and a span is short in
    characters too (Thai, long compounds): else a whole sentence was one word, and a whole answer is no label
    (`selectors._key` names an answer no extractor reads by a digest)."""
    stated = _ANSWER_IS.search(text)
    span = stated.group(1) if stated else text
    words = [w for w in re.sub(r"[^\w\s]", " ", span.lower()).split() if w not in {"a", "an", "the"}]
    if not 0 < len(words) <= max_words:
        return None
    key = " ".join(words)
    counted = sum(max(1, sum(unicodedata.east_asian_width(c) in "WF" for c in w)) for w in words)
    return key if counted <= max_words and len(key) <= max_chars else None


DEFAULT_EXTRACTORS: tuple[Extractor, ...] = (choice_letter, number, short_span)


# How much of an answer's end is read for its final answer: where a worked answer states it. The extractors
# run on the event loop, and reading all of a very long answer (an upstream's that never ends) held it, and
# every request on the worker, for seconds per sample (about 10 s for 50 MB).
ANSWER_TAIL_CHARS = 4096
# And of its start: where an answer that explains itself after stating it ("The answer is (B). Because...")
# states it. Read at its end only, such an answer was keyed by the last number of its explanation.
ANSWER_HEAD_CHARS = 4096


def extract_answer(text: str, extractors: Sequence[Extractor] = DEFAULT_EXTRACTORS) -> str | None:
    """The answer key of `text`, read from its first `ANSWER_HEAD_CHARS` and last `ANSWER_TAIL_CHARS`
    characters (an answer stated in both: the first)."""
    if len(text) > ANSWER_HEAD_CHARS + ANSWER_TAIL_CHARS:
        text = text[:ANSWER_HEAD_CHARS] + "\n" + text[-ANSWER_TAIL_CHARS:]
    for extractor in extractors:
        key = extractor(text)
        if key is not None:
            return key
    return None
