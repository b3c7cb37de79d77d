"""Pure pieces of the request path: SSE replay/accumulation and the cache key."""

from __future__ import annotations

from typing import Any

from gateway.cache import cache_key, is_cacheable
from gateway.providers.base import Usage, openai_shaped
from gateway.providers.pricing import format_usd
from gateway.streaming import Accumulator, Choices, replay

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
    assert rebuilt["usage"] == openai_shaped(BODY["usage"])  # the same counts, both details objects added


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


def test_a_whole_answer_rebuilt_from_a_stream_keeps_what_the_server_would_have_answered_whole() -> None:
    """Whole answers on the direct path are read from upstream streams: their reasoning, refusal,
    citations and service tier reach the client as a whole answer's would."""
    acc = Accumulator()
    head = {"id": "c1", "model": "m", "service_tier": "default"}
    for delta in ({"role": "assistant", "reasoning_content": "let me "}, {"reasoning_content": "think"},
                  {"content": "Paris", "annotations": [{"type": "url_citation", "url_citation": {"url": "u"}}]},
                  {"refusal": "no"}):
        acc.add({**head, "choices": [{"index": 0, "delta": delta}]})
    body = acc.body(Usage(3, 4))
    message = body["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"], message["refusal"]) == ("Paris", "let me think", "no")
    assert message["annotations"] == [{"type": "url_citation", "url_citation": {"url": "u"}}]
    assert body["service_tier"] == "default" and "reasoning" not in message


def test_a_stream_of_n_choices_is_answered_only_once_n_of_them_finished() -> None:
    def chunk(index: int, finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": index, "delta": {"content": "x"}, "finish_reason": finish}]}

    two = Choices(2)
    two.add(chunk(0))
    two.add(chunk(0, "stop"))
    assert not two.answered  # choice 1 may begin only now: a stall here is a broken stream, not an end
    two.add(chunk(1))
    assert not two.answered
    two.add(chunk(1, "stop"))
    assert two.answered
    one = Choices()
    one.add(chunk(0, "stop"))
    assert one.answered


def test_an_answer_ended_by_done_alone_is_marked_finished_as_what_it_did() -> None:
    choices = Choices(2)
    choices.add({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]})
    choices.add({"id": "c", "model": "m", "choices": [
        {"index": 1, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f"}}]}}]})
    ending = choices.ended({"id": "c", "model": "m"})
    assert ending == {"id": "c", "model": "m", "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}, {"index": 1, "delta": {}, "finish_reason": "tool_calls"}]}
    assert choices.answered and choices.ended({}) is None
