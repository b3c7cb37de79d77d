"""Routing policies: declarative files in, a `Decision` (plan + reasons) out."""

from gateway.policy.calibration import Cutoff
from gateway.policy.decide import Candidate, Decision, Limits, Overrides, PlansBehindOpenCircuits, Routing, decide
from gateway.policy.estimate import (
    Catalog,
    Estimate,
    estimate,
    fit_to_cap,
    max_tokens_within,
    output_ceiling,
    worst_case_billed,
    worst_case_cost,
    worst_case_duration_s,
    worst_case_tokens,
)
from gateway.policy.loader import BoundPolicy, PolicySet, bind_policy, load_policy_file, parse_policy
from gateway.policy.schema import PolicySpec

__all__ = ["BoundPolicy", "Candidate", "Catalog", "Cutoff", "Decision", "Estimate", "Limits", "Overrides",
           "PlansBehindOpenCircuits", "PolicySet", "PolicySpec", "Routing", "bind_policy", "decide", "estimate",
           "fit_to_cap", "load_policy_file", "max_tokens_within", "output_ceiling", "parse_policy",
           "worst_case_billed", "worst_case_cost", "worst_case_duration_s", "worst_case_tokens"]
