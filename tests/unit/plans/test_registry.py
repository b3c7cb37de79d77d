"""One table of plan kinds: policy files, binding, metrics and the executor all go through it."""

from __future__ import annotations

import pytest

from gateway.plans import KEYS, KINDS, BestOfN, Cascade, Single
from gateway.policy.schema import CandidateSpec, PolicySpec


def test_each_kind_is_registered_under_its_plan_type_and_its_policy_file_key() -> None:
    assert {t: k.key for t, k in KINDS.items()} == {Single: "single", BestOfN: "best_of", Cascade: "cascade"}
    assert all(KEYS[k.key] is k and k.plan.kind == k.key for k in KINDS.values())


def test_a_candidate_in_a_policy_file_is_exactly_one_registered_kind() -> None:
    assert list(CandidateSpec.model_fields) == list(KEYS)
    spec = PolicySpec.model_validate({"candidates": [{"single": "small"}, {"best_of": {"deployment": "small"}},
                                                     {"cascade": {"steps": ["small", "large"]}}]})
    assert [c.kind()[0].key for c in spec.candidates] == ["single", "best_of", "cascade"]
    with pytest.raises(ValueError, match="a candidate is exactly one of single, best_of, cascade"):
        PolicySpec.model_validate({"candidates": [{"single": "small", "cascade": {"steps": ["a", "b"]}}]})
