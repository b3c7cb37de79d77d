"""A provider that is not OpenAI-compatible, through litellm: Anthropic's Messages API, scripted on a loopback
port, behind a deployment `anthropic/...` whose `api_base` points at it. litellm translates the call there and
the answer (or error) back; the client is the `openai` SDK, which must read what comes back unchanged."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.lab import policies_folder
from tests.support.processes import Simulator, running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream


class _Anthropic(ScriptedHandler):
    """Answers every message with "Paris."; a prompt naming an error (`ERR400`) is answered with it, in the
    envelope Anthropic's errors come in."""

    seen: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Anthropic.seen.append(body)
        if "ERR400" in json.dumps(body["messages"]):
            error = {"type": "error", "error": {"type": "invalid_request_error",
                                                "message": "messages.0.content: the image is too small"}}
            self._send(json.dumps(error).encode(), "application/json", 400)
            return
        if "TOOLONG" in json.dumps(body["messages"]):  # Anthropic's words for a prompt over the context window
            error = {"type": "error", "error": {"type": "invalid_request_error",
                                                "message": "prompt is too long: 210000 tokens > 200000 maximum"}}
            self._send(json.dumps(error).encode(), "application/json", 400)
            return
        if (status := re.search(r"STATUS(\d{3})", json.dumps(body["messages"]))) is not None:  # an error of that status
            kind = {"413": "request_too_large", "529": "overloaded_error"}.get(status.group(1), "api_error")
            error = {"type": "error", "error": {"type": kind, "message": f"status {status.group(1)}"}}
            self._send(json.dumps(error).encode(), "application/json", int(status.group(1)))
            return
        if "DEEP400" in json.dumps(body["messages"]):  # an error body nested past what `json` reads
            self._send(b'{"type": "error", "error": ' + b"[" * 100_000, "application/json", 400)
            return
        answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                  "content": [{"type": "text", "text": "Paris."}], "stop_reason": "end_turn", "stop_sequence": None,
                  "usage": {"input_tokens": 10, "output_tokens": 3}}
        if body.get("tools"):  # a word, then a call of each tool
            answer["content"] += [{"type": "tool_use", "id": f"toolu_{i}", "name": t["name"],
                                   "input": {"city": "Paris"}} for i, t in enumerate(body["tools"])]
            answer["stop_reason"] = "tool_use"
        if body.get("stream"):
            self._send(_events(answer), "text/event-stream")
            return
        self._send(json.dumps(answer).encode(), "application/json")


def _events(answer: dict[str, Any]) -> bytes:
    """`answer` as Anthropic streams it: the message without its content, each block's text or tool input in
    one delta, then the stop reason and output tokens."""
    started = {**answer, "content": [], "stop_reason": None, "usage": {**answer["usage"], "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": started})]
    for i, block in enumerate(answer["content"]):
        if block["type"] == "text":
            start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        else:  # a tool call: its input in one piece
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}),
                   ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}),
                   ("content_block_stop", {"type": "content_block_stop", "index": i})]
    events += [("message_delta", {"type": "message_delta", "usage": {"output_tokens": answer["usage"]["output_tokens"]},
                                  "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None}}),
               ("message_stop", {"type": "message_stop"})]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


@pytest.fixture
def anthropic() -> Iterator[str]:
    _Anthropic.seen = []
    with scripted_upstream(_Anthropic) as base:
        yield base.removesuffix("/v1")


@pytest.fixture
def client(anthropic: str, simulator: Simulator, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[openai.OpenAI]:
    """`claude` and `claude-large` on the scripted Anthropic (and `claude-own-price`, priced by its config), `sim`
    on the simulator, and the policies
    `claude-first` (`claude`, falling back to `sim`) and `claude-vote` (best of 3 of `claude`)."""
    monkeypatch.setenv("SY_TEST_ANTHROPIC_KEY", "sk-ant-test")
    deployment = {"name": "claude", "model": "anthropic/claude-haiku-4-5", "api_base": anthropic, "tier": "small",
                  "api_key_env": "SY_TEST_ANTHROPIC_KEY", "timeout_s": 5, "max_retries": 0}
    sim = {"name": "sim", "model": "openai/sim-small", "api_base": simulator.url, "tier": "sim",
           "price": {"input_per_mtok": 1, "output_per_mtok": 1}}
    own_price = {**deployment, "name": "claude-own-price", "price": {"input_per_mtok": 0.5, "output_per_mtok": 1}}
    config = parse_config({"deployments": [deployment, {**deployment, "name": "claude-large", "tier": "large"}, sim,
                                           own_price]}, "litellm providers")
    policies = policies_folder(tmp_path, {
        "claude-first": {"description": "claude, else the simulator", "candidates": [{"single": "claude"}],
                         "fallbacks": {"claude": ["sim"]}, "cache": {"enabled": False}},
        "claude-vote": {"description": "a vote of claude's samples", "cache": {"enabled": False},
                        "candidates": [{"best_of": {"deployment": "claude", "n": 3, "selector": "vote"}}]}})
    app = create_app(config, policies_dir=policies, watch_policies_s=None, watch_router_s=None)
    with running_gateway(app) as gw:
        yield openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)


def test_a_request_anthropic_rejects_is_told_what_anthropic_said(client: openai.OpenAI) -> None:
    """litellm keeps a non-OpenAI provider's error body only on the error it raised from (its `message`), not
    as a `body` or a readable response: such a 400 said "upstream answered 400" and no more."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "ERR400"}])
    assert refused.value.body["message"] == (  # type: ignore[index]
        "deployment 'claude' rejected the request: upstream answered 400: messages.0.content: the image is too small")


def test_a_prompt_over_the_context_window_is_refused_as_openai_refuses_it(client: openai.OpenAI) -> None:
    """Anthropic says "prompt is too long" with no code; code written for OpenAI looks for
    `context_length_exceeded` (to shorten the conversation and ask again), and read `upstream_rejected`."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "TOOLONG"}])
    assert (refused.value.code, refused.value.param) == ("context_length_exceeded", "messages")
    assert "prompt is too long" in refused.value.message


def test_an_error_body_nested_too_deep_to_read_is_a_400_saying_nothing_of_it(client: openai.OpenAI) -> None:
    """The provider's error body is read as JSON for its message; one nested deeper than `json` reads raised
    RecursionError out of the error's classification, and the client read a 500 for a 400 of the provider."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "DEEP400"}])
    assert refused.value.body["message"] == "deployment 'claude' rejected the request: upstream answered 400"  # type: ignore[index]


@pytest.mark.parametrize("status", [529, 504, 413])
def test_an_error_status_anthropic_answers_is_told_as_it_answered_it(client: openai.OpenAI, status: int) -> None:
    """litellm raises some of Anthropic's statuses as others of its own: its 529 `overloaded_error` as a 500,
    its 413 as a 400, and a 504 (answered at once) as a timeout of its own, told "timed out after 5 s" with a
    504 of the gateway's. The direct path tells each as the upstream answered it, and so does this one."""
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": f"STATUS{status}"}])
    assert failed.value.status_code == 502
    assert failed.value.message.endswith(f"deployment 'claude' failed: upstream answered {status}")


def test_a_field_the_provider_does_not_take_is_named_and_its_fallback_answers(client: openai.OpenAI) -> None:
    """litellm refuses, before sending anything, an OpenAI field its provider has no counterpart for (Anthropic
    takes no `seed` or `store`), with status 400: the client read "upstream answered 400" (not even sent), and a
    routed request went no further, as if every deployment would refuse it, where its fallback takes it."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], seed=7)
    assert "`seed`" in refused.value.body["message"]  # type: ignore[index]
    assert (refused.value.code, refused.value.param) == ("unsupported_parameter", "seed")  # as OpenAI names it
    assert _Anthropic.seen == []
    raw = client.chat.completions.with_raw_response.create(
        model="router/claude-first", messages=[{"role": "user", "content": "hi"}], seed=7, store=False)
    assert raw.headers["x-switchyard-model"] == "sim"
    assert raw.parse().choices[0].message.content


def test_a_vote_of_samples_from_a_provider_without_n_draws_one_call_each(client: openai.OpenAI) -> None:
    """A best-of plan asks a deployment that takes `n` for all its samples in one call. Anthropic takes no `n`,
    which litellm refuses before sending: every request of such a policy failed with a 400 for a field the
    client never sent. A litellm deployment whose provider takes no `n` is taken as `supports_n: false`."""
    raw = client.chat.completions.with_raw_response.create(
        model="router/claude-vote", messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert raw.headers["x-switchyard-plan"] == "best_of:3:claude:vote"
    assert raw.parse().choices[0].message.content == "Paris."
    assert len(_Anthropic.seen) == 3
    with pytest.raises(openai.BadRequestError) as refused:  # pinned, it answers one choice per call
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], n=2)
    assert refused.value.body["param"] == "n"  # type: ignore[index]


def test_a_streamed_answer_s_usage_states_only_the_cost_it_is_billed(client: openai.OpenAI) -> None:
    """litellm prices a stream's usage itself (`usage.cost`, from its cost map): relayed beside the gateway's
    `switchyard.cost_usd`, a deployment priced by its config read two costs, the one it is not billed first."""
    chunks = list(client.chat.completions.create(model="claude-own-price", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}],
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris."
    last = chunks[-1]
    assert last.usage is not None and (last.usage.prompt_tokens, last.usage.completion_tokens) == (10, 3)
    assert "cost" not in last.usage.model_dump()
    assert last.model_extra is not None and last.model_extra["switchyard"]["cost_usd"] == pytest.approx(8e-6)


def test_an_answer_s_message_can_be_sent_back_as_openai_shapes_messages(client: openai.OpenAI) -> None:
    """litellm adds `provider_specific_fields` to a message (and an `index` to a whole answer's tool calls),
    which the openai SDK sends back with the message as the next turn; a deployment that checks messages
    strictly (Groq's) refused the conversation's next request when it went there."""
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("a", "b")]
    asked = {"model": "claude", "messages": [{"role": "user", "content": "weather?"}], "tools": tools}
    whole = client.chat.completions.create(**asked).choices[0].message  # type: ignore[call-overload]
    with client.chat.completions.stream(**asked) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
        streamed = stream.get_final_completion().choices[0].message
    for message in (whole, streamed):
        sent_back = message.model_dump(exclude_unset=True)
        assert "provider_specific_fields" not in sent_back
        calls = [(c["id"], c["function"]["name"]) for c in sent_back["tool_calls"]]
        assert calls == [("toolu_0", "a"), ("toolu_1", "b")]
    assert all(set(c) == {"id", "type", "function"} for c in whole.model_dump(exclude_unset=True)["tool_calls"])


def test_litellm_fetches_nothing_of_its_own_for_a_call(client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that needs one of Anthropic's beta headers (structured outputs, thinking) had litellm fetch their
    list from GitHub the first time, with a blocking GET on the event loop: where the network drops outbound
    traffic every request in flight waited its 5 s timeout. litellm runs in its offline mode, on the copies
    it ships, as it does for its cost map."""
    from litellm import anthropic_beta_headers_manager as beta

    fetched: list[str] = []

    def fetch(url: str, timeout: int = 5) -> object:
        fetched.append(url)
        raise OSError("no network in this test")

    monkeypatch.setattr(beta, "_BETA_HEADERS_CONFIG", None)  # as in a new process: not read yet
    monkeypatch.setattr(beta.GetAnthropicBetaHeadersConfig, "fetch_remote_beta_headers_config", staticmethod(fetch))
    answer = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": {
            "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
            "additionalProperties": False}}})
    assert answer.choices[0].message.content == "Paris."
    assert fetched == []
