"""What the router tells the policy about a request."""

from __future__ import annotations

import tracemalloc

from gateway.config import embedded_config
from gateway.messages import count_messages, count_text, routing_counts
from gateway.router import load_router
from gateway.signal import RememberingRouter, assess

DEPLOYMENTS = embedded_config("http://127.0.0.1:9/v1").deployments


def test_routes_on_the_last_user_turn_with_the_system_prompt() -> None:
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "answer"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]}]
    text, tokens, _ = routing_counts(messages)
    assert text == "Be terse.\nsecond"
    # the whole prompt, counted as billing counts it: every message's text plus the chat framing
    assert tokens == count_messages(messages) == count_text("Be terse.\nfirst\nanswer\nsecond") + 4 * 4 + 3


def test_a_remembered_assessment_is_the_same_assessment() -> None:
    plain = load_router()
    remembering = RememberingRouter(plain, size=8)
    messages = [{"role": "user", "content": "Prove that sqrt(2) is irrational."}]
    first = assess(remembering, messages, DEPLOYMENTS)
    again = assess(remembering, messages, DEPLOYMENTS)
    assert first == again == assess(plain, messages, DEPLOYMENTS)
    assert remembering.hits == 1
    assert set(first.quality) == {"small", "large"} and 0 <= first.difficulty <= 1


def test_the_memory_of_prompts_does_not_keep_their_text() -> None:
    # Routed text runs to 12,000 characters: kept as keys, 4,096 prompts of emoji held 216 MB a worker.
    remembering = RememberingRouter(load_router(), size=4096)
    remembering.assess("warm up")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100):
            remembering.recall("tenant", f"{i} " + "\N{GRINNING FACE}" * 11_990)
        per_prompt = (tracemalloc.get_traced_memory()[0] - before) / 100
    finally:
        tracemalloc.stop()
    assert per_prompt < 10_000  # an assessment's own size (~4.6 KB), not the 48 KB of its text
    assert remembering.recall("tenant", "99 " + "\N{GRINNING FACE}" * 11_990) is not None
    assert remembering.hits == 1


def test_the_memory_forgets_the_least_recently_used_prompt() -> None:
    remembering = RememberingRouter(load_router(), size=2)
    first = remembering.assess("first")
    remembering.assess("second")
    assert remembering.assess("first") is first  # used again: now the most recent
    remembering.assess("third")  # pushes out "second", not "first"
    assert remembering.assess("first") is first and remembering.hits == 2
    remembering.assess("second")
    assert remembering.hits == 2
