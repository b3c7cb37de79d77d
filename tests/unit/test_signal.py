"""What the router tells the policy about a request."""

from __future__ import annotations

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
    assert remembering.recall.cache_info().hits == 1
    assert set(first.quality) == {"small", "large"} and 0 <= first.difficulty <= 1
