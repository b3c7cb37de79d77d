"""The request-independent half of the candidates' estimates, prepared once per (policy, catalog): the
same decisions as estimating every plan afresh, and never stale when the policy, the deployments or
their health change."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.config import Price
from gateway.policy import Catalog, Overrides, decide
from gateway.policy import prepared as prep
from gateway.policy.estimate import estimate
from gateway.providers.health import LiveView
from gateway.providers.pricing import DeploymentPrice, PriceTier, Rates, prices_for
from tests.support.policy_lab import CATALOG, CONFIG, policy_from, signal

TWO_TIERS = "candidates:\n  - single: small\n  - single: large\nobjective: {value_usd: 0.002}\n"


def _catalog(**changes: object) -> Catalog:
    deployments = [d.model_copy(update=changes) if d.name == "large" else d for d in CONFIG.deployments]
    return Catalog({d.name: d for d in deployments}, prices_for(deployments))


def test_estimates_are_those_of_the_plans_own_estimator(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS)
    rng = random.Random(7)
    for i in range(200):
        s = signal(rng.random(), rng.random(), rng.randint(1, 50_000))
        max_tokens = rng.choice([None, 1, 64, 4096])
        live = LiveView(pace={"large": 0.1 + 3 * rng.random()} if i % 2 else {})
        d = decide(policy, s, CATALOG, live, max_tokens=max_tokens)
        for c in d.candidates:
            assert c.estimate == estimate(c.plan, s, CATALOG, live.pace, max_tokens)


def test_prepared_once_per_policy_and_catalog(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS)
    first = prep.prepared(policy, CATALOG)
    decide(policy, signal(0.2, 0.9), CATALOG, LiveView())
    assert prep.prepared(policy, CATALOG) is first
    assert prep.prepared(policy, _catalog()) is not first
    assert prep.prepared(policy_from(tmp_path, TWO_TIERS), CATALOG) is not first  # a reload: a new policy object


def test_a_changed_policy_is_decided_by_its_new_version(tmp_path: Path) -> None:
    before = policy_from(tmp_path, TWO_TIERS)
    assert decide(before, signal(0.2, 0.9), CATALOG, LiveView()).plan.label == "single:large"
    after = policy_from(tmp_path, TWO_TIERS.replace("0.002", "0.00001"))  # the same file, edited
    assert decide(after, signal(0.2, 0.9), CATALOG, LiveView()).plan.label == "single:small"
    allowed = policy_from(tmp_path, TWO_TIERS + "constraints: {allowed_deployments: [small]}\n")
    d = decide(allowed, signal(0.2, 0.9), CATALOG, LiveView())
    assert d.plan.label == "single:small"
    assert {c.plan.label: c.rejected_by for c in d.candidates}["single:large"] == "allowed_deployments"


def test_changed_deployments_are_priced_and_timed_anew(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "constraints: {latency_slo_ms: 100000}\n")
    s = signal(0.2, 0.9)
    d = decide(policy, s, CATALOG, LiveView())
    large = {c.plan.label: c for c in d.candidates}["single:large"]
    dearer = _catalog(price=Price(input_per_mtok=1000.0, output_per_mtok=1000.0))
    priced = {c.plan.label: c for c in decide(policy, s, dearer, LiveView()).candidates}["single:large"]
    assert priced.estimate.cost_usd > large.estimate.cost_usd
    assert decide(policy, s, dearer, LiveView()).plan.label == "single:small"
    slower = _catalog(expected_tokens_per_s=0.001)
    removed = {c.plan.label: c for c in decide(policy, s, slower, LiveView()).candidates}["single:large"]
    assert removed.rejected_by is not None and removed.rejected_by.startswith("latency_slo_ms")


def test_health_is_read_on_every_decision(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "constraints: {latency_slo_ms: 5000}\n")
    s = signal(0.2, 0.9)
    usual = decide(policy, s, CATALOG, LiveView())
    assert usual.plan.label == "single:large"  # prepared now
    d = decide(policy, s, CATALOG, LiveView(open_circuits=frozenset({"large"})))
    assert d.plan.label == "single:small"
    assert {c.plan.label: c.rejected_by for c in d.candidates}["single:large"] == "circuit_open"
    configured = {c.plan.label: c.estimate.latency_ms for c in usual.candidates}["single:large"]
    pace = 5001 / configured  # observed: this much slower than configured, past the 5 s constraint
    slow = decide(policy, s, CATALOG, LiveView(pace={"large": pace}))
    assert slow.plan.label == "single:small"
    assert {c.plan.label: c.estimate.latency_ms for c in slow.candidates}["single:large"] == \
        pytest.approx(5001)
    assert decide(policy, s, CATALOG, LiveView()).plan.label == "single:large"  # and back


def test_max_tokens_and_headers_are_the_requests_own(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS)
    s = signal(0.2, 0.9)
    short = {c.plan.label: c.estimate for c in decide(policy, s, CATALOG, LiveView(), max_tokens=1).candidates}
    long = {c.plan.label: c.estimate for c in decide(policy, s, CATALOG, LiveView(), max_tokens=4096).candidates}
    assert short["single:large"].cost_usd < long["single:large"].cost_usd
    capped = decide(policy, s, CATALOG, LiveView(), Overrides(max_cost_usd=1e-4), max_tokens=1)
    assert capped.plan.label == "single:small"  # the header's cap, not the policy's prepared limits
    assert {c.plan.label: c.rejected_by for c in capped.candidates}["single:large"].startswith("max_cost_usd")


def test_tiered_prices_are_left_to_the_plans_estimator(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS)
    tiered = {**CATALOG.prices}
    base = tiered["large"]
    tiered["large"] = DeploymentPrice(base.input_per_token, base.output_per_token, "config",
                                      tiers=(PriceTier(100, Rates(1.0, 1.0, 1.0, 1.0, 1.0)),))
    catalog = Catalog(CATALOG.deployments, tiered)
    assert prep.prepared(policy, catalog).fixed(None)[1] is None
    below, above = signal(0.2, 0.9, tokens=50), signal(0.2, 0.9, tokens=500)
    assert decide(policy, below, catalog, LiveView()).candidates[1].estimate.cost_usd < 1
    assert decide(policy, above, catalog, LiveView()).candidates[1].estimate.cost_usd > 500


def test_remembered_settings_are_bounded(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS)
    table = prep.prepared(policy, CATALOG)
    for max_tokens in range(1, 3 * prep.MAX_TOKEN_SETTINGS):
        table.fixed(max_tokens)
    assert len(table._fixed) <= prep.MAX_TOKEN_SETTINGS
