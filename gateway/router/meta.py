"""The shape of ``router.json``, the JSON half of a router artifact (``router.npz`` holds the arrays).

Written by ``training.train`` (and ``training.adapt``), read by ``model.load_router``.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class HashSpecMeta(TypedDict):
    """``featurize.HashSpec`` as stored."""

    bits: int
    char_weight: float
    word_weight: float


class NeighboursMeta(TypedDict):
    bits: int
    k: int
    smooth: float
    power: float


class DomainHeads(TypedDict):
    """Which head candidate an adaptation chose for a new file, and the cross-validated scores."""

    heads: str
    cv_pair_apgr: dict[str, float]


class Adaptation(TypedDict):
    n_train: int
    new_models: int
    new_domains: NotRequired[list[DomainHeads]]


class ValidationReport(TypedDict):
    n_validation: int
    pairs: dict[str, dict[str, float]]  # "weak->strong" -> PairMetrics.as_dict()


class ArtifactMeta(TypedDict):
    version: int
    hash_spec: HashSpecMeta
    struct_names: list[str]
    latent_dims: int
    ridge_lambda: float
    models: list[str]
    n_train: int
    # Absent from artifacts older than the neighbours, several training files, or adaptation.
    neighbours: NotRequired[NeighboursMeta]
    domains: NotRequired[list[str]]
    expected_output_tokens: NotRequired[dict[str, float]]
    adapted: NotRequired[list[Adaptation]]
    validation_report: NotRequired[ValidationReport]
