"""Hashed n-gram features, numpy + stdlib only (request path).

A prompt becomes a sparse vector over ``2**bits`` buckets made of two blocks that share
the space: word unigrams+bigrams and character 3/4/5-grams. Hashes are stable across
processes (zlib.crc32 for words, a fixed multiplicative hash for character n-grams;
never Python's salted ``hash()``), so a trained artifact means the same thing everywhere.

Digits are folded to ``0`` and numbers to a length token before hashing: the router
should learn "a 4-digit number appears", not the number itself.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from gateway.router.arrays import F32, I64, U64

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
_DIGITS = re.compile(r"\d")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BIGRAM_MULT = np.uint64(1000003)
_CHAR_ORDERS = (3, 4, 5)
_CHAR_SEED = {3: np.uint64(0x51ED27), 4: np.uint64(0xA5B35), 5: np.uint64(0x1F3D5B79)}
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


def _word_hashes(lower: str) -> U64:
    toks = [("#" + str(len(t))) if t[0].isdigit() else t for t in _TOKEN.findall(lower)]
    if not toks:
        return np.zeros(0, dtype=np.uint64)
    uni = np.fromiter((zlib.crc32(t.encode()) for t in toks), dtype=np.uint64, count=len(toks))
    bi = uni[:-1] * _BIGRAM_MULT + uni[1:] + np.uint64(0xB16)
    return np.concatenate([uni, bi])


def _char_hashes(lower: str) -> U64:
    folded = _DIGITS.sub("0", " ".join(lower.split()))
    codes = np.frombuffer(folded.encode("utf-8", "ignore"), dtype=np.uint8).astype(np.uint64)
    parts = []
    for n in _CHAR_ORDERS:
        if codes.size < n:
            continue
        h = _CHAR_SEED[n] + np.zeros(codes.size - n + 1, dtype=np.uint64)
        for j in range(n):
            h = h * np.uint64(257) + codes[j : codes.size - n + 1 + j]
        parts.append(h)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _bucketise(h: U64, bits: int) -> tuple[I64, F32]:
    """Mix, fold to buckets and count; returns (bucket ids, sublinear tf)."""
    if h.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    b = ((h * _MIX) >> np.uint64(64 - bits)).astype(np.int64)
    ids, counts = np.unique(b, return_counts=True)
    return ids, (1.0 + np.log(counts)).astype(np.float32)


def hash_text(clean: str, spec: HashSpec) -> tuple[I64, F32, int]:
    """Sparse (ids, values) for a normalised prompt, before idf weighting.

    Returns (ids, values, n_word): the word block comes first and is ``n_word`` long, so
    ``weight_and_norm`` can l2-normalise each block separately after idf.
    """
    lower = clean[:MAX_CHARS].lower()
    wi, wv = _bucketise(_word_hashes(lower), spec.bits)
    ci, cv = _bucketise(_char_hashes(lower), spec.bits)
    return np.concatenate([wi, ci]), np.concatenate([wv, cv]), int(wi.size)


def weight_and_norm(
    ids: I64, vals: F32, n_word: int, idf: F32, spec: HashSpec
) -> F32:
    """Apply idf and l2-normalise each block, scaled by its block weight."""
    v = vals * idf[ids]
    out = np.empty_like(v)
    for sl, w in ((slice(0, n_word), spec.word_weight), (slice(n_word, None), spec.char_weight)):
        blk = v[sl]
        norm = float(np.sqrt(np.dot(blk, blk))) or 1.0
        out[sl] = blk * (w / norm)
    return out
