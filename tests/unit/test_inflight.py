"""Requests in flight per tenant under a cap: a slot is given back once, however often it is released."""

from __future__ import annotations

import pytest

from gateway.errors import RateLimited
from gateway.inflight import NO_SLOT, InFlight


def test_a_tenant_at_its_cap_is_refused_and_others_are_not() -> None:
    inflight = InFlight()
    slots = [inflight.enter("a", 2) for _ in range(2)]
    with pytest.raises(RateLimited) as refused:
        inflight.enter("a", 2)
    assert refused.value.code == "concurrency_limit_exceeded" and refused.value.headers["retry-after"] == "1"
    inflight.enter("b", 2)
    slots[0].release()
    slots[0].release()  # once only: a second release must not free another request's slot
    assert inflight.counts == {"a": 1, "b": 1}
    inflight.enter("a", 2)
    with pytest.raises(RateLimited):
        inflight.enter("a", 2)


def test_uncapped_requests_are_not_counted() -> None:
    inflight = InFlight()
    assert inflight.enter("a", None) is NO_SLOT
    NO_SLOT.release()
    assert inflight.counts == {}


def test_the_last_slot_given_back_forgets_the_tenant() -> None:
    inflight = InFlight()
    inflight.enter("a", 1).release()
    assert inflight.counts == {}


def test_the_gauge_reads_zero_for_a_tenant_with_nothing_in_flight() -> None:
    """Its series vanished from /metrics at zero, and a dashboard showed "no data" for an idle tenant."""
    inflight = InFlight()
    assert inflight.gauge() == {}
    slot = inflight.enter("a", 2)
    inflight.enter("b", 2)
    assert inflight.gauge() == {"a": 1, "b": 1}
    slot.release()
    assert inflight.gauge() == {"a": 0, "b": 1}


def test_every_keyed_caller_is_capped_and_only_an_open_gateways_caller_is_not() -> None:
    from types import SimpleNamespace
    from typing import Any

    from gateway.auth import OPEN_TENANT, Tenant
    from gateway.pipeline import in_flight_cap

    svc: Any = SimpleNamespace(config=SimpleNamespace(max_concurrent_requests_per_tenant=128))
    assert in_flight_cap(svc, OPEN_TENANT) is None
    assert in_flight_cap(svc, Tenant("acme")) == 128  # a config tenant, or an admin-made key's tenant
    assert in_flight_cap(svc, Tenant("acme", max_concurrent_requests=4)) == 4


def test_a_slot_is_given_back_once_the_request_and_every_call_it_left_running_have_ended() -> None:
    inflight = InFlight()
    slot = inflight.enter("a", 2)
    slot.keep()
    slot.keep()  # two calls given up on, still read
    slot.release()
    slot.release()
    assert inflight.counts == {"a": 1}
    slot.let_go()
    assert inflight.counts == {"a": 1}
    slot.let_go()
    slot.let_go()  # more endings than calls cannot free another request's slot
    assert inflight.counts == {}
    NO_SLOT.keep()
    NO_SLOT.let_go()
    assert inflight.counts == {}
