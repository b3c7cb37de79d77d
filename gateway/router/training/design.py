"""Training-time design matrix: the same featurisation as serving, stacked into scipy CSR.

Uses exactly ``featurize.hash_text``/``weight_and_norm`` and ``text.structural_features``
so a trained weight means the same at serving time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from gateway.router.arrays import F32, F64, I64, Ints
from gateway.router.featurize import HashSpec, hash_text, weight_and_norm
from gateway.router.text import normalise, structural_features


@dataclass(frozen=True)
class Hashed:
    raw: list[tuple[I64, F32, int]]  # hash_text per prompt: (bucket ids, values, word-block length)
    struct: F64  # (n, s)


def hash_prompts(prompts: Sequence[str], spec: HashSpec, progress: bool = True) -> Hashed:
    raw, struct = [], []
    for p in tqdm(prompts, desc="featurise", disable=not progress, leave=False):
        clean = normalise(p)
        raw.append(hash_text(clean, spec))
        struct.append(structural_features(clean))
    return Hashed(raw, np.asarray(struct, dtype=np.float64))


def fit_idf(h: Hashed, rows: Ints, spec: HashSpec) -> F32:
    """Smoothed idf over the given (training) rows."""
    df = np.zeros(spec.dim)
    for i in rows:
        df[h.raw[i][0]] += 1
    return (np.log((1 + len(rows)) / (1 + df)) + 1).astype(np.float32)


def to_csr(h: Hashed, idf: F32, spec: HashSpec) -> sp.csr_matrix:
    indptr, cols, vals = [0], [], []
    for ids, v, n_word in h.raw:
        cols.append(ids)
        vals.append(weight_and_norm(ids, v, n_word, idf, spec))
        indptr.append(indptr[-1] + len(ids))
    x = sp.csr_matrix(
        (np.concatenate(vals), np.concatenate(cols), np.asarray(indptr)), shape=(len(h.raw), spec.dim)
    )
    x.sum_duplicates()  # word and char blocks may share a bucket
    return x


def with_struct(x: sp.csr_matrix, s_std: F64, scale: float) -> sp.csr_matrix:
    """Append standardised structural columns, scaled to sit beside unit-norm n-gram blocks."""
    return sp.hstack([x, sp.csr_matrix(s_std * scale)], format="csr")
