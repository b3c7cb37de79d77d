"""An open circuit and a healthy fallback: the policy still has a plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import embedded_config
from gateway.errors import ConstraintUnsatisfiable
from gateway.plans import Single
from gateway.policy import Catalog, PlansBehindOpenCircuits, decide, load_policy_file
from gateway.providers.health import LiveView
from gateway.providers.pricing import prices_for
from gateway.signal import RouteSignal

CONFIG = embedded_config("http://127.0.0.1:9/v1")
CATALOG = Catalog({d.name: d for d in CONFIG.deployments}, prices_for(CONFIG.deployments))
SIGNAL = RouteSignal(0.5, "test", {"small": 0.5, "large": 0.9}, 200, {})


def _policy(tmp_path: Path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_policy_file(path, CONFIG.deployments)


def test_a_single_plan_whose_circuit_is_open_answers_through_its_healthy_fallback(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "candidates:\n  - single: small\nfallbacks: {small: [large]}\n")
    d = decide(policy, SIGNAL, CATALOG, LiveView(open_circuits=frozenset({"small"})))
    assert d.plan.label == "single:small" and d.plan.fallbacks == ("large",)


def test_with_every_fallback_open_too_no_plan_answers_until_a_circuit_closes(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "candidates:\n  - single: small\nfallbacks: {small: [large]}\n")
    with pytest.raises(PlansBehindOpenCircuits) as info:  # the pipeline's 503 with Retry-After, not a 422
        decide(policy, SIGNAL, CATALOG, LiveView(open_circuits=frozenset({"small", "large"})))
    assert info.value.deployments == ("small",)


def test_a_plan_no_constraint_admits_is_a_422_whatever_its_circuit(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "candidates:\n  - single: small\nconstraints: {max_cost_usd: 0.0000001}\n")
    for open_now in (frozenset({"small"}), frozenset()):
        with pytest.raises(ConstraintUnsatisfiable, match="max_cost_usd"):
            decide(policy, SIGNAL, CATALOG, LiveView(open_circuits=open_now))


def test_a_healthy_plan_is_still_preferred_over_an_open_one_with_a_fallback(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "candidates:\n  - single: large\n  - single: small\n"
                               "fallbacks: {large: [small]}\nobjective: {value_usd: 10}\n")
    d = decide(policy, SIGNAL, CATALOG, LiveView(open_circuits=frozenset({"large"})))
    assert d.plan.label == "single:small"


def test_a_cascade_or_best_of_with_a_healthy_deployment_left_still_runs(tmp_path: Path) -> None:
    cascade = _policy(tmp_path, "candidates:\n  - cascade: {steps: [small, large], confidence: logprob}\n")
    assert decide(cascade, SIGNAL, CATALOG, LiveView(open_circuits=frozenset({"small"}))).plan.label \
        == "cascade:small>large"
    with pytest.raises(PlansBehindOpenCircuits):
        decide(cascade, SIGNAL, CATALOG, LiveView(open_circuits=frozenset({"large"})))
    best_of = _policy(tmp_path, "candidates:\n  - best_of: {deployments: [small, large]}\n")
    assert decide(best_of, SIGNAL, CATALOG, LiveView(open_circuits=frozenset({"small"}))).plan.label.startswith(
        "best_of:2")
    with pytest.raises(PlansBehindOpenCircuits):
        decide(best_of, SIGNAL, CATALOG, LiveView(open_circuits=frozenset({"small", "large"})))


def test_a_fallback_outside_allowed_deployments_is_never_called(tmp_path: Path) -> None:
    """allowed_deployments removes plans that would call anything else: a single plan's fallbacks (and
    so its hedge) are calls of the plan, so one the list leaves out is dropped from its chain. Kept, a
    request under `allowed_deployments: [small]` was answered by large whenever small failed or was slow."""
    policy = _policy(tmp_path, "candidates:\n  - single: small\n  - single: large\n"
                               "constraints: {allowed_deployments: [small]}\nfallbacks: {small: [large]}\n")
    d = decide(policy, SIGNAL, CATALOG, LiveView())
    assert d.plan == Single("small") and "large" not in d.plan.reachable
    with pytest.raises(PlansBehindOpenCircuits):  # no allowed fallback takes over from an open circuit
        decide(policy, SIGNAL, CATALOG, LiveView(open_circuits=frozenset({"small"})))
