"""Pure pieces of the request path: SSE replay/accumulation and the cache key."""

from __future__ import annotations

from gateway.cache import cache_key, is_cacheable
from gateway.providers.base import Usage
from gateway.providers.pricing import format_usd
from gateway.streaming import Accumulator, replay

BODY = {"id": "c1", "created": 1, "model": "m", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is 42. " * 5},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 30, "total_tokens": 33}}


def test_replay_then_accumulate_gives_back_the_same_answer() -> None:
    acc = Accumulator()
    chunks = list(replay(BODY, include_usage=True))
    for c in chunks:
        acc.add(c)
    assert chunks[-1]["usage"] == BODY["usage"] and chunks[-1]["choices"] == []
    assert acc.finished
    rebuilt = acc.body(Usage(3, 30))
    assert rebuilt["choices"][0]["message"]["content"] == BODY["choices"][0]["message"]["content"]
    assert rebuilt["usage"] == BODY["usage"]


def test_replay_without_usage_sends_no_usage_chunk() -> None:
    assert all("usage" not in c for c in replay(BODY, include_usage=False))


def test_only_deterministic_or_opted_in_requests_are_cacheable() -> None:
    assert is_cacheable({"temperature": 0}, None)
    assert not is_cacheable({"temperature": 0.7}, None)
    assert not is_cacheable({}, None)
    assert is_cacheable({"temperature": 0.7}, "force")
    assert not is_cacheable({"temperature": 0}, "bypass")


def test_cache_key_depends_on_what_changes_the_answer_only() -> None:
    base = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    key = cache_key("ns", "router/balanced", "t", base)
    assert key.startswith("sy:cache:ns:t:")
    assert cache_key("ns", "router/balanced", "t", {**base, "stream": True, "user": "u"}) == key
    assert cache_key("ns", "router/balanced", "t", {**base, "max_tokens": 5}) != key
    assert cache_key("ns", "router/balanced", "other", base) != key
    assert cache_key("ns", "router/cost-saver", "t", base) != key


def test_costs_print_in_fixed_point() -> None:
    assert format_usd(0.0) == "0"
    assert format_usd(3.42e-05) == "0.0000342"
    assert format_usd(1.5) == "1.5"
