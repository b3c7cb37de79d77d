"""Routing policies: declarative files in, a `Decision` (plan + reasons) out."""

from gateway.policy.decide import Candidate, Decision, Overrides, decide
from gateway.policy.estimate import Catalog, Estimate, estimate
from gateway.policy.loader import BoundPolicy, PolicySet, bind_policy, load_policy_file, parse_policy
from gateway.policy.schema import PolicySpec

__all__ = ["BoundPolicy", "Candidate", "Catalog", "Decision", "Estimate", "Overrides", "PolicySet",
           "PolicySpec", "bind_policy", "decide", "estimate", "load_policy_file", "parse_policy"]
