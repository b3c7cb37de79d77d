"""Which keys share a Redis Cluster slot: those that one script, transaction or batch touches together.

A Redis Cluster refuses a script or transaction whose keys live in different slots (CROSSSLOT).
The gateway's multi-key operations each touch one tenant's or one policy's keys; the rest (cached
answers, the request stream, the ledger's tenant index, router keys) are single-key operations,
free to land anywhere so that they spread over the masters.
"""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from gateway.admission_store import Admission, BudgetHold, Settlement, Window, admit_call, settle_call
from gateway.cache import cache_key
from gateway.state import (
    alerts_key,
    calibration_key,
    cluster_seed_url,
    deployment_window_key,
    holds_key,
    ledger_key,
    ledger_writes_key,
    period_spend_key,
    policy_audit_key,
    policy_current_key,
    rate_key,
    request_key,
    scoped_holds_key,
    spend_key,
    window_key,
)


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize("tenant", ["alice", "team:a", "x{y", "Ünïcode tenant"])
def test_a_tenants_budget_rate_ledger_and_request_keys_share_one_slot(tenant: str) -> None:
    # reserve (Lua): spend, holds, rate window; settle (MULTI): holds, spend
    together = [spend_key(tenant), holds_key(tenant), rate_key(tenant, 29_000_000), rate_key(tenant, 29_000_001),
                request_key(tenant, "req_1"), ledger_key(tenant, 480_000),
                ledger_writes_key(tenant)]  # the ledger's add-once script: writes marker + hour hashes
    assert len({slot(k) for k in together}) == 1


@pytest.mark.parametrize("tenant", ["alice", "team:a"])
def test_one_admission_touches_one_slot_for_a_tenant_and_its_keys(tenant: str) -> None:
    # admit / settle_admission (Lua): the tenant's and its key's budgets, holds, alerts and windows
    together = [spend_key(tenant)]
    for key_id in (None, "0123456789ab"):
        together += [period_spend_key(tenant, key_id, "day:20000"), scoped_holds_key(tenant, key_id),
                     alerts_key(tenant, key_id, "day:20000"), window_key(tenant, key_id, "rpm"),
                     window_key(tenant, key_id, "tpm")]
    assert len({slot(k) for k in together}) == 1


def test_a_deployments_request_and_token_windows_share_one_slot() -> None:
    assert slot(deployment_window_key("small", "rpm")) == slot(deployment_window_key("small", "tpm"))


@pytest.mark.parametrize("tenant", ["alice", "x{y", "a}b"])
def test_a_settlements_mark_sits_in_the_slot_of_what_it_settles(tenant: str) -> None:
    # settle_admission (Lua) marks its id beside the keys it settles: a tenant's, or a deployment's window
    for s in (Settlement("h", 0.1, ((spend_key(tenant), holds_key(tenant), 0),), ((window_key(tenant, None, "tpm"),
                                                                                  1, 5),)),
              Settlement(None, 0.0, (), ((deployment_window_key(tenant, "tpm"), 1, -5),))):
        keys, _ = settle_call(s)
        assert keys[-1].startswith("sy:settled:") and len({slot(k) for k in keys}) == 1


@pytest.mark.parametrize("tenant", ["alice", "x{y", "a}b"])
def test_an_admissions_mark_sits_in_the_slot_of_what_it_admits(tenant: str) -> None:
    # admit (Lua) stores its reply under its id beside the keys it checks: a tenant's, or a deployment's windows
    budget = BudgetHold(spend_key(tenant), holds_key(tenant), alerts_key(tenant, None, "total"), 0.1, 1.0)
    for a in (Admission("h", 60.0, (budget,), (Window(window_key(tenant, None, "rpm"), 10, 1),)),
              Admission("h", 0.0, (), (Window(deployment_window_key(tenant, "rpm"), 10, 1),
                                       Window(deployment_window_key(tenant, "tpm"), 10, 1)))):
        keys, _ = admit_call(a)
        assert keys[-1].startswith("sy:admitted:") and len({slot(k) for k in keys}) == 1


def test_a_policys_audit_list_and_current_pointer_share_one_slot() -> None:
    # record_version (Lua) touches both
    assert slot(policy_audit_key("balanced")) == slot(policy_current_key("balanced"))


def test_different_tenants_spread_over_slots() -> None:
    assert len({slot(spend_key(f"tenant-{i}")) for i in range(50)}) > 40
    # each tenant is calibrated on its own traffic: its buckets sit with its other keys
    assert len({slot(calibration_key("balanced", "v1", f"tenant-{i}", 7)) for i in range(50)}) > 40
    assert len({slot(calibration_key("balanced", "v1", "acme", b)) for b in range(50)}) == 1


def test_cached_answers_are_not_pinned_to_one_slot() -> None:
    # one key per answer, read and written alone: no tag, so one busy tenant's cache spreads out
    keys = [cache_key("default", "auto|v1|x", "alice", {"messages": [{"role": "user", "content": str(i)}]})
            for i in range(50)]
    assert len({slot(k) for k in keys}) > 40


@pytest.mark.parametrize(("url", "seed"), [
    ("redis+cluster://10.0.0.1:7000", "redis://10.0.0.1:7000"),
    ("rediss+cluster://user:pw@redis.internal:6380/0", "rediss://user:pw@redis.internal:6380/0"),
    ("redis://10.0.0.1:7000?cluster=true", "redis://10.0.0.1:7000"),
    ("redis://10.0.0.1:7000?cluster=true&ssl_cert_reqs=none", "redis://10.0.0.1:7000?ssl_cert_reqs=none"),
    ("redis://10.0.0.1:6379/0", None),
    ("redis://10.0.0.1:7000?cluster=True", "redis://10.0.0.1:7000"),  # the value read as a flag, any case
    ("redis://10.0.0.1:7000/0?cluster=1&protocol=3", "redis://10.0.0.1:7000/0?protocol=3"),
    ("redis://10.0.0.1:6379/0?cluster=false", None),
])
def test_a_cluster_url_names_its_seed_node(url: str, seed: str | None) -> None:
    assert cluster_seed_url(url) == seed
