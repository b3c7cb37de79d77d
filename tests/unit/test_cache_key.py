"""The cache key: the whole question, who answers it, and which version of the policy decided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cache import ExactCache
from gateway.config import embedded_config
from gateway.policy import Overrides, load_policy_file
from gateway.state import MemoryStore

DEPLOYMENTS = embedded_config("http://127.0.0.1:9/v1").deployments
BASE: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0}


def _key(request: dict[str, Any], *, entry: str = "router/balanced", pinned: str | None = None,
         version: str = "v1", tenant: str = "t", cache: ExactCache | None = None) -> str:
    cache = cache or ExactCache(MemoryStore(), DEPLOYMENTS, "ns")
    return cache.key(entry, pinned, version, tenant, request)


@pytest.mark.parametrize("extra", [
    {"reasoning_effort": "high"},
    {"top_k": 5},
    {"repetition_penalty": 1.2},
    {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
    {"function_call": "auto"},
    {"guided_json": {"type": "object"}},
    {"response_format": {"type": "json_object"}},
    {"max_tokens": 5},
    {"n": 2},
    {"service_tier": "flex"},
    {"some_future_field": True},
])
def test_requests_differing_in_any_answer_field_do_not_share_an_entry(extra: dict[str, Any]) -> None:
    assert _key({**BASE, **extra}) != _key(BASE)


@pytest.mark.parametrize("extra", [
    {"user": "someone"},
    {"stream": True},
    {"stream": True, "stream_options": {"include_usage": True}},
    {"metadata": {"team": "a"}},
    {"store": True},
    {"model": "router/balanced"},  # the resolved entry is in the key, not how it was named
])
def test_requests_differing_only_in_delivery_or_bookkeeping_share_an_entry(extra: dict[str, Any]) -> None:
    assert _key({**BASE, **extra}) == _key(BASE)


def test_the_key_is_independent_of_field_order() -> None:
    reordered = {"temperature": 0.0, "messages": BASE["messages"], "model": "auto"}
    assert _key(reordered) == _key(BASE)


def test_the_key_separates_tenants_entries_and_policy_versions() -> None:
    key = _key(BASE)
    assert key.startswith("sy:cache:ns:t:")
    assert _key(BASE, tenant="other") != key
    assert _key(BASE, entry="router/cost-saver") != key
    assert _key(BASE, version="v2") != key


def test_a_pinned_deployment_whose_model_changed_does_not_serve_the_old_answers() -> None:
    before = ExactCache(MemoryStore(), DEPLOYMENTS, "ns")
    changed = [d.model_copy(update={"model": "openai/sim-small-v2"}) if d.name == "small" else d
               for d in DEPLOYMENTS]
    after = ExactCache(MemoryStore(), changed, "ns")
    assert _key(BASE, entry="small", pinned="small", cache=before) != \
        _key(BASE, entry="small", pinned="small", cache=after)
    # the other deployment's entries are untouched by it
    assert _key(BASE, entry="large", pinned="large", cache=before) == \
        _key(BASE, entry="large", pinned="large", cache=after)
    # a policy may send to any deployment, so its entries follow any change
    assert _key(BASE, cache=before) != _key(BASE, cache=after)


def _policy_file(folder: Path, text: str) -> Path:
    path = folder / "p.yaml"
    path.write_text(text)
    return path


POLICY = "candidates:\n  - single: small\n  - single: large\nobjective:\n  value_usd: 0.002\n"


def test_editing_a_policy_changes_its_version_and_so_the_key(tmp_path: Path) -> None:
    first = load_policy_file(_policy_file(tmp_path, POLICY), DEPLOYMENTS)
    edited = load_policy_file(_policy_file(tmp_path, POLICY.replace("0.002", "0.02")), DEPLOYMENTS)
    assert len(first.version) == 12 and first.version != edited.version
    assert _key(BASE, version=first.version) != _key(BASE, version=edited.version)


def test_a_policy_version_ignores_formatting_and_comments(tmp_path: Path) -> None:
    first = load_policy_file(_policy_file(tmp_path, POLICY), DEPLOYMENTS)
    reformatted = "# cheap first\nobjective: {value_usd: 0.002}\ncandidates: [{single: small}, {single: large}]\n"
    assert load_policy_file(_policy_file(tmp_path, reformatted), DEPLOYMENTS).version == first.version


def test_headers_that_tighten_the_policy_are_in_the_key() -> None:
    cache = ExactCache(MemoryStore(), DEPLOYMENTS, "ns")
    plain = cache.key("router/balanced", None, "v1", "t", BASE)
    assert cache.key("router/balanced", None, "v1", "t", BASE, Overrides()) == plain
    keys = {plain, *(cache.key("router/balanced", None, "v1", "t", BASE, o) for o in (
        Overrides(max_cost_usd=0.001), Overrides(max_cost_usd=0.002), Overrides(latency_slo_ms=500),
        Overrides(max_cost_usd=0.001, latency_slo_ms=500)))}
    assert len(keys) == 5
