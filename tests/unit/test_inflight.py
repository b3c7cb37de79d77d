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
