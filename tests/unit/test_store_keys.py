"""Store keys: all built in `gateway.state`, and a tenant's keys (or a deployment's, a policy's) share
one Redis Cluster slot, so the scripts that touch several of them at once run on one node."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.crc import key_slot

import gateway
from gateway import state

# Read and written alone, and spread over the cluster on purpose (see `answer_key`).
UNTAGGED = {"answer_key"}


def _builders() -> dict[str, Callable[..., str]]:
    return {name: fn for name, fn in vars(state).items()
            if inspect.isfunction(fn) and name.endswith("_key") and fn.__module__ == state.__name__}


def _calls(fn: Callable[..., str], **given: Any) -> list[str]:
    """`fn`'s keys for the given arguments, with every key-id variant (the tenant's own and a key's)."""
    params = inspect.signature(fn).parameters
    variants: list[dict[str, Any]] = [{}]
    if "key_id" in params:
        variants = [{"key_id": None}, {"key_id": "0123456789ab"}]
    filler = {"hour": 490_000, "minute": 29_000_000, "bucket": 7, "period_id": "2026-11", "limit": "tpm",
              "request_id": "req-1", "digest": "ab" * 32, "version": "v3", "namespace": "ns"}
    keys = []
    for variant in variants:
        args = {name: given.get(name, variant.get(name, filler.get(name, "x"))) for name in params}
        keys.append(fn(**args))
    return keys


def test_every_builder_names_a_switchyard_key() -> None:
    builders = _builders()
    assert {"spend_key", "window_key", "ledger_key", "request_key", "answer_key"} <= set(builders)
    for fn in builders.values():
        assert all(k.startswith("sy:") for k in _calls(fn, tenant="acme", deployment="large", policy="p"))


def test_a_tenants_keys_share_one_cluster_slot() -> None:
    tenant_keys = [key for name, fn in _builders().items() if name not in UNTAGGED
                   and "tenant" in inspect.signature(fn).parameters for key in _calls(fn, tenant="acme")]
    assert len(tenant_keys) >= 10  # spend, holds, alerts, windows, rate, ledger, request records, ...
    assert {key_slot(k.encode()) for k in tenant_keys} == {key_slot(b"{acme}")}
    other = [k for fn in (state.spend_key, state.ledger_key) for k in _calls(fn, tenant="globex")]
    assert {key_slot(k.encode()) for k in other} == {key_slot(b"{globex}")}


def test_a_deployments_and_a_policys_keys_share_one_slot() -> None:
    windows = {key_slot(state.deployment_window_key("large", limit).encode()) for limit in ("rpm", "tpm")}
    assert len(windows) == 1
    versions = {key_slot(state.policy_audit_key("balanced").encode()),
                key_slot(state.policy_current_key("balanced").encode())}
    assert len(versions) == 1


def test_only_the_state_module_spells_out_store_keys() -> None:
    literal = re.compile(r"""(?<![A-Za-z0-9_`])[rbfu]*["']sy:""")
    root = Path(gateway.__file__).parent
    found = [f"{path.relative_to(root)}:{n}" for path in sorted(root.rglob("*.py")) if path.name != "state.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    assert found == []


def test_a_request_key_names_its_tenant_whatever_the_request_id_holds() -> None:
    """The in-memory store caps request records per tenant by this; a client picks the request id."""
    for rid in ("req_1", "x}:y", "{other}:z", "}:"):
        assert state.request_tenant(state.request_key("alice", rid)) == "alice"
