"""The hashed n-gram features are a file format: a trained artifact's weights are indexed by them, so
the request path's vectorised hashing must give exactly what the scheme says. The reference below
spells the scheme out one n-gram at a time, in plain Python integers."""

from __future__ import annotations

import itertools
import math
import random
import re
import zlib
from collections import Counter

import numpy as np
import pytest

from gateway.router.featurize import MAX_CHARS, HashSpec, hash_text

_M64 = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15
_SEEDS = {3: 0x51ED27, 4: 0xA5B35, 5: 0x1F3D5B79}


def _bucket(h: int, bits: int) -> int:
    return ((h * _MIX) & _M64) >> (64 - bits)


def reference(clean: str, spec: HashSpec) -> tuple[list[int], list[float], int]:
    lower = clean[:MAX_CHARS].lower()
    toks = ["#" + str(len(t)) if t[0].isdigit() else t for t in re.findall(r"[a-z]+|\d+|[^\sa-z\d]", lower)]
    uni = [zlib.crc32(t.encode()) for t in toks]
    words = uni + [(a * 1000003 + b + 0xB16) & _M64 for a, b in itertools.pairwise(uni)]
    codes = re.sub(r"\d", "0", " ".join(lower.split())).encode("utf-8", "ignore")
    chars = []
    for n, seed in _SEEDS.items():
        for i in range(len(codes) - n + 1):
            h = seed
            for c in codes[i : i + n]:
                h = (h * 257 + c) & _M64
            chars.append(h)
    ids: list[int] = []
    vals: list[float] = []
    for block in (words, chars):
        counts = Counter(_bucket(h, spec.bits) for h in block)
        for b in sorted(counts):
            ids.append(b)
            vals.append(1.0 + math.log(counts[b]))
    return ids, vals, len(Counter(_bucket(h, spec.bits) for h in words))


def _texts() -> list[str]:
    rnd = random.Random(7)
    fixed = ["", "a", "ab", "abc", "abcd", "hi", "Say hi.", "What is the capital of France?", "12 345 6789",
             "   \n\t ", "é", "日本語のテキスト", "def f(x):\n    return x ** 2  # 3.14", "a a a a a a a a"]
    alphabet = "ab cd1\n.,é日?"
    # ASCII texts take a byte-table path for digits; \x1c and \x0b are whitespace to str.split,
    # and ٣ (a digit to \d) and ² (not one) keep the non-ASCII path honest.
    ascii_rich = "ab 0123456789\t\n\x0b\x1c.,#=?"
    every_ascii = "".join(map(chr, range(128)))  # ASCII text is tokenised as bytes
    return fixed + ["12\x1c34 5٣6²", "x\x0b9 9"] + [
        "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 40)))
        for chars in (alphabet, ascii_rich, every_ascii) for _ in range(200)
    ]


@pytest.mark.parametrize("bits", [17, 10])
def test_hashing_matches_the_scheme_one_ngram_at_a_time(bits: int) -> None:
    spec = HashSpec(bits=bits)
    for text in _texts():
        ids, vals, n_word = hash_text(text, spec)
        want_ids, want_vals, want_n_word = reference(text, spec)
        assert ids.dtype == np.int64 and vals.dtype == np.float32
        assert n_word == want_n_word, text
        assert ids.tolist() == want_ids, text
        assert vals.tolist() == pytest.approx(want_vals, rel=1e-6), text


def test_text_past_the_cap_is_ignored() -> None:
    spec = HashSpec()
    base = "word " * (MAX_CHARS // 5)
    a, b = hash_text(base + "tail", spec), hash_text(base + "other tail entirely", spec)
    assert a[0].tolist() == b[0].tolist() and a[2] == b[2]
