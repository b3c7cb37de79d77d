"""Hashed n-gram features, numpy + stdlib only (request path).

A prompt becomes a sparse vector over ``2**bits`` buckets made of two blocks that share
the space: word unigrams+bigrams and character 3/4/5-grams. Hashes are stable across
processes (zlib.crc32 for words, a fixed multiplicative hash for character n-grams;
never Python's salted ``hash()``), so a trained artifact means the same thing everywhere.

Digits are folded to ``0`` and numbers to a length token before hashing: the router
should learn "a 4-digit number appears", not the number itself.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from gateway.router.arrays import F32, I64, U64

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
# _TOKEN on ASCII text, as bytes: there \s is [\t\n\x0b\x0c\r\x1c-\x1f ] and \d is [0-9]. A bytes
# token goes to crc32 as it is (the str path encodes each one), and the pass itself is faster.
_TOKEN_ASCII = re.compile(rb"[a-z]+|[0-9]+|[^\t\n\x0b\x0c\r\x1c-\x1f a-z0-9]")
_DIGITS = re.compile(r"\d")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BIGRAM_MULT = np.uint64(1000003)
_CHAR_SEED = {3: 0x51ED27, 4: 0xA5B35, 5: 0x1F3D5B79}
_FOLD_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_ASCII_BYTES = bytes(range(128))
_B257 = np.uint64(257)
_B257_2 = np.uint64(257 * 257)
# seed_n * 257**n mod 2**64: the part of an n-gram's hash that its bytes do not change.
_SEED_TERM = {n: np.uint64(seed * 257**n % 2**64) for n, seed in _CHAR_SEED.items()}
# Long prompts cost linear time; past this many characters the extra text says little
# about difficulty that the first part did not, so we cap it to keep p99 bounded.
MAX_CHARS = 12_000


@dataclass(frozen=True)
class HashSpec:
    """How text maps to buckets; stored in the artifact so training and serving agree."""

    bits: int = 17
    char_weight: float = 1.0
    word_weight: float = 1.0

    @property
    def dim(self) -> int:
        return 1 << self.bits


def _word_hashes(lower: str) -> list[U64]:
    """Word unigram then bigram hashes (empty list for a text without tokens)."""
    if lower.isascii():
        raw = [(b"#%d" % len(t)) if 47 < t[0] < 58 else t for t in _TOKEN_ASCII.findall(lower.encode("ascii"))]
        n, crcs = len(raw), map(zlib.crc32, raw)
    else:
        toks = [("#" + str(len(t))) if t[0].isdigit() else t for t in _TOKEN.findall(lower)]
        n, crcs = len(toks), map(zlib.crc32, map(str.encode, toks))
    if not n:
        return []
    uni = np.fromiter(crcs, dtype=np.uint64, count=n)  # no list in between
    bi = uni[:-1] * _BIGRAM_MULT
    bi += uni[1:]
    bi += np.uint64(0xB16)
    return [uni, bi]


def _char_codes(lower: str) -> bytes:
    """The text the character n-grams read: whitespace runs as one space, every digit as ``0``."""
    spaced = " ".join(lower.split())
    raw = spaced.encode("utf-8", "ignore")
    # Unless a non-ASCII character is a digit to \d (rare: Arabic-Indic, fullwidth...), the regex
    # would change ASCII digits alone, and in UTF-8 those are the bytes 0-9: a byte table folds them
    # in one C pass, where the regex pass was a tenth of assess() on long prompts.
    if spaced.isascii() or not _DIGITS.search(raw.translate(None, _ASCII_BYTES).decode("utf-8")):
        return raw.translate(_FOLD_DIGITS)
    return _DIGITS.sub("0", spaced).encode("utf-8", "ignore")


def _char_hashes(lower: str) -> list[U64]:
    """Character 3-, 4- and 5-gram hashes, in that order.

    Each order's hash is ``seed_n * 257**n + poly_n`` (mod 2**64), ``poly_n`` being the n-gram's
    bytes read as base-257 digits. ``poly_{n+1}`` extends ``poly_n`` by one byte, so the three
    orders take five array passes instead of twelve (a short prompt pays per numpy call).
    """
    codes = np.frombuffer(_char_codes(lower), dtype=np.uint8).astype(np.uint64)
    size = codes.size
    if size < 3:
        return []
    poly = codes[: size - 2] * _B257_2 + codes[1 : size - 1] * _B257 + codes[2:]
    parts = [poly + _SEED_TERM[3]]
    for n in (4, 5):
        if size < n:
            break
        poly = poly[:-1] * _B257 + codes[n - 1 :]
        parts.append(poly + _SEED_TERM[n])
    return parts


def _distinct_counts(keys: I64) -> tuple[I64, I64]:
    """Sorted distinct keys and how often each occurs: np.unique's answer without its
    general-purpose overhead, which was most of the hashing time on a short prompt. Sorts
    ``keys`` in place (the caller's own scratch array: no copy); array methods rather than
    np.sort and np.flatnonzero, which wrap the same calls in Python frames a short prompt pays for."""
    s = keys
    s.sort()
    n = s.size
    edge = np.empty(n + 1, dtype=bool)  # edge[i]: a new key starts at i (or i == n)
    edge[0] = edge[n] = True
    np.not_equal(s[1:], s[:-1], out=edge[1:n])
    at = edge.nonzero()[0]
    return s[at[:-1]], at[1:] - at[:-1]


def hash_text(clean: str, spec: HashSpec) -> tuple[I64, F32, int]:
    """Sparse (ids, values) for a normalised prompt, before idf weighting.

    Returns (ids, values, n_word): the word block comes first and is ``n_word`` long, so
    ``weight_and_norm`` can l2-normalise each block separately after idf. Within a block ids
    are sorted and distinct; values are the sublinear term frequency 1 + log(count).
    """
    lower = clean[:MAX_CHARS].lower()
    words = _word_hashes(lower)
    # Every hash in one array, bucketed in place (each numpy call costs a short prompt
    # microseconds): one sort for both blocks, char buckets offset by dim so that they sort after
    # every word bucket, and the number of distinct word buckets is where the char block starts.
    parts = [*words, *_char_hashes(lower)]
    hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    hashes *= _MIX
    hashes >>= np.uint64(64 - spec.bits)
    hashes[sum(map(len, words)):] += np.uint64(spec.dim)
    keys, counts = _distinct_counts(hashes.view(np.int64))  # buckets < 2**63: the same integers
    n_word = int(keys.searchsorted(spec.dim))
    return keys & (spec.dim - 1), (1.0 + np.log(counts)).astype(np.float32), n_word


def weight_and_norm(
    ids: I64, vals: F32, n_word: int, idf: F32, spec: HashSpec
) -> F32:
    """Apply idf and l2-normalise each block, scaled by its block weight."""
    v = vals * idf.take(ids)
    for blk, w in ((v[:n_word], spec.word_weight), (v[n_word:], spec.char_weight)):
        # float32 sqrt as np.sqrt gives it: a double sqrt rounded to float32 is the same number
        # (53 >= 2 * 24 + 2 bits), without a ufunc call on a scalar
        norm = float(np.float32(math.sqrt(blk @ blk))) or 1.0
        blk *= np.float32(w / norm)  # a view: scales v in place
    return v
