"""The embedded store keeps up to 100,000 cache entries and request records: each must cost about its
length, not the allocation its JSON encoder happened to make (orjson rounds up to several KB)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable

import orjson
import pytest

from gateway.state import MemoryStore

N = 2_000


def _record(i: int) -> bytes:
    # A request record as the request log encodes it (gateway.feedback.build_record), ~450 bytes.
    return orjson.dumps({
        "request_id": f"req_{i:024x}", "time": 1795734480.123, "tenant": "acme", "policy": "balanced",
        "entry": "auto", "plan": "single:small", "deployment": "small", "router_version": "default@32d2eac4cedb",
        "policy_version": "ca256a0628d1", "cost_usd": 1.296e-05, "prompt_tokens": 12, "completion_tokens": 60,
        "counterfactual_usd": 6.3e-05, "category": "general", "difficulty": 0.41,
        "predicted": {"small": 0.81, "large": 0.9}, "prompt_hmac": "ab" * 32,
    })  # fmt: skip


Fill = Callable[[MemoryStore, int], Awaitable[None]]


async def _kept_per_item(fill: Fill) -> float:
    store = MemoryStore()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(N):
            await fill(store, i)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store is not None  # the store (and what it keeps) is alive until here
    return kept / N


async def _cache_entry(store: MemoryStore, i: int) -> None:
    await store.set(f"sy:cache:{i}", _record(i), ttl_s=3600)


async def _request_record(store: MemoryStore, i: int) -> None:
    await store.append_records("sy:requests", [(f"sy:req:acme:{i}", _record(i))], 100_000, 3600)


async def _feedback(store: MemoryStore, i: int) -> None:
    await store.append_records("sy:requests", [(f"sy:req:acme:{i}", b"{}")], 100_000, 3600)
    await store.put_feedback(f"sy:req:acme:{i}", "user", _record(i))


@pytest.mark.parametrize("fill", [_cache_entry, _request_record, _feedback], ids=["cache", "records", "feedback"])
async def test_what_the_memory_store_keeps_costs_about_its_length(fill: Fill) -> None:
    assert len(_record(0)) < 600
    # Its length, the bytes object, the key and the store's own bookkeeping: well under 2 KB.
    # Before values were copied to their size, each cost ~8 KB with orjson 3.13.
    assert await _kept_per_item(fill) < 2_000
