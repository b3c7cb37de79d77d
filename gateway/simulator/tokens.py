"""A deterministic token estimate shared by usage accounting and truncation.

A token is a run of word characters or one punctuation character
(``\\w+|[^\\w\\s]``). It is not any real tokenizer; what matters is that the
simulator's ``usage`` is exactly consistent with the text it returns, and that
callers (tests, the gateway's estimators) can reproduce it with
``count_tokens``.
"""

from __future__ import annotations

import re
from itertools import pairwise

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Number of simulated tokens in ``text``."""
    return len(_TOKEN.findall(text))


def truncate_tokens(text: str, limit: int) -> tuple[str, bool]:
    """The first ``limit`` tokens of ``text`` and whether anything was cut.

    Cutting at the end of a token keeps ``count_tokens`` of the result equal to
    ``limit``: the next character cannot extend that token, or the regex would
    have matched it.
    """
    if limit <= 0:
        return "", bool(_TOKEN.search(text))
    for index, match in enumerate(_TOKEN.finditer(text)):
        if index == limit - 1:
            end = match.end()
            return text[:end], _TOKEN.search(text, end) is not None
    return text, False


def split_pieces(text: str, tokens_per_piece: int) -> list[str]:
    """Split ``text`` into consecutive pieces of about ``tokens_per_piece`` tokens.

    Pieces start at token starts, so the pieces concatenate back to ``text`` and
    their token counts add up to ``count_tokens(text)``.
    """
    starts = [m.start() for m in _TOKEN.finditer(text)][::tokens_per_piece]
    if not starts:
        return [text] if text else []
    starts[0] = 0
    return [text[a:b] for a, b in pairwise([*starts, len(text)])]
