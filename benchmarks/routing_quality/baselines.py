"""Baselines for ``benchmarks.routing_quality``: a plain TF-IDF ridge (scipy only, no sklearn).

Word unigrams + bigrams of the raw prompt (lower-cased), vocabulary from the training
prompts (min df 2), sublinear tf x smoothed idf, l2-normalised rows; ridge by LSQR. It is
the simplest learned ranker a user could fit on the same labels as the router.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import lsqr

_TOKEN = re.compile(r"\w+")


def _grams(text: str) -> list[str]:
    toks = _TOKEN.findall(text.lower())
    return toks + [a + " " + b for a, b in pairwise(toks)]


@dataclass(frozen=True)
class TfidfRidge:
    vocab: dict[str, int]
    idf: np.ndarray
    coef: np.ndarray
    intercept: float

    def _matrix(self, texts: Sequence[str]) -> sp.csr_matrix:
        return _tfidf(texts, self.vocab, self.idf)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._matrix(texts) @ self.coef) + self.intercept


def _tfidf(texts: Sequence[str], vocab: dict[str, int], idf: np.ndarray) -> sp.csr_matrix:
    indptr, cols, vals = [0], [], []
    for t in texts:
        counts = Counter(g for g in _grams(t) if g in vocab)
        ids = np.fromiter((vocab[g] for g in counts), dtype=np.int64, count=len(counts))
        v = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * idf[ids]
        v /= np.linalg.norm(v) or 1.0
        cols.append(ids)
        vals.append(v)
        indptr.append(indptr[-1] + len(ids))
    return sp.csr_matrix((np.concatenate(vals), np.concatenate(cols), np.asarray(indptr)),
                         shape=(len(texts), len(vocab)))


def fit_tfidf_ridge(texts: Sequence[str], y: np.ndarray, lam: float = 1.0) -> TfidfRidge:
    df: Counter[str] = Counter()
    for t in texts:
        df.update(set(_grams(t)))
    vocab = {g: i for i, g in enumerate(g for g, c in df.items() if c >= 2)}
    idf = np.zeros(len(vocab))
    for g, i in vocab.items():
        idf[i] = np.log((1 + len(texts)) / (1 + df[g])) + 1.0
    x = _tfidf(texts, vocab, idf)
    mu = float(np.mean(y))
    coef = lsqr(x, y - mu, damp=np.sqrt(lam), atol=1e-6, btol=1e-6, iter_lim=500)[0]
    return TfidfRidge(vocab, idf, coef, mu)
