"""The token details an upstream reports reach the client as it reported them: over real HTTP, with the
official SDK, against an OpenAI-compatible server whose every answer reports reasoning tokens and audio
tokens (`completion_tokens_details`) and cached and audio prompt tokens (`prompt_tokens_details`).

Whatever the way the answer comes (whole, rebuilt from a stream, relayed as a stream, served again
from the cache whole or streamed, or made by a cascade of two calls, whole or replayed as a stream),
the client reads the reasoning tokens the upstream said (summed over a cascade's calls, as
`completion_tokens` is).

OpenAI sends both details objects in every answer, zeros and all, and client code reads
`usage.completion_tokens_details.reasoning_tokens` without a None check: the gateway's answers have both
objects whatever the upstream sent (zeros, nothing, or no usage at all), and carry the Predicted Outputs
counts (`accepted_prediction_tokens`, `rejected_prediction_tokens`), billed as the completion tokens they
are part of."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

USAGE = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50,
         "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 4},
         "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 3}}


# What OpenAI reports for an ordinary answer: both objects, every count zero.
ZEROS = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50,
         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                       "rejected_prediction_tokens": 0}}
BARE = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}  # vLLM, llama.cpp, Ollama: no details
# Predicted Outputs: of the 30 completion tokens, 10 were predicted and accepted, 6 predicted and rejected.
PREDICTED = {**ZEROS, "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 10, "rejected_prediction_tokens": 6}}
# The usage each model's answers report (None: no usage at all, so the gateway counts the tokens).
# Counts that are no counts (text, a negative number, none): billed as no usage at all, on counted tokens.
# (litellm reads the text as a number, with a warning: a negative count is what it passes on.)
GARBLED = {"prompt_tokens": "20", "completion_tokens": -30, "total_tokens": None}
NEGATIVE = {"prompt_tokens": 20, "completion_tokens": -30, "total_tokens": -10}
USAGES: dict[str, Any] = {"zeros": ZEROS, "bare": BARE, "uncounted": None, "predicted": PREDICTED, "garbled": GARBLED,
                          "negative": NEGATIVE}


class _Upstream(ScriptedHandler):
    """Answers every model with "ok", whole or as a stream, reporting `USAGE` (or `USAGES[model]`)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        head = {"id": "chatcmpl-u", "created": 1700000000, "model": body["model"]}
        usage = USAGES.get(body["model"], USAGE)
        said = {"usage": usage} if usage is not None else {}
        if not body.get("stream"):
            self._send(orjson.dumps({**head, "object": "chat.completion", **said, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}),
                "application/json")
            return
        chunk = {**head, "object": "chat.completion.chunk"}
        chunks = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"},
                                         "finish_reason": None}]},
                  {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                  *([{**chunk, "choices": [], "usage": usage}] if usage is not None else [])]
        self._send(b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n",
                   "text/event-stream")



@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    with scripted_upstream(_Upstream) as base:
        price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
        rebuilt = {"whole_answers_as_streams": "always"}  # every whole answer read from a stream and rebuilt
        rows = [{"name": "small", "model": "openai/small", "api_base": base, "tier": "small", "price": price,
                 **rebuilt},
                {"name": "large", "model": "openai/large", "api_base": base, "tier": "large", "price": price,
                 **rebuilt},
                {"name": "whole", "model": "openai/whole", "api_base": base, "price": price,
                 "whole_answers_as_streams": "never"}]
        rows += [{"name": f"{name}-{how}", "model": f"openai/{name}", "api_base": base, "price": price,
                  "whole_answers_as_streams": how} for name in USAGES for how in ("always", "never")]
        rows.append({"name": "negative-litellm", "model": "openai/negative", "api_base": base, "price": price,
                     "backend": "litellm"})
        # No logprobs in the small model's answer: no confidence, so the cascade always escalates.
        steps = {"steps": ["small", "large"], "confidence": "logprob", "threshold": 0.5}
        cascade = {"candidates": [{"cascade": steps}], "cache": {"enabled": False}}
        policies = policies_folder(Path(tmp_path_factory.mktemp("usage")), {"escalating": cascade})
        with running_gateway(create_app(parse_config({"deployments": rows}, "usage details"), policies_dir=policies,
                                        watch_policies_s=None, watch_router_s=None)) as gw:
            yield openai.OpenAI(base_url=gw.base_url + "/v1", api_key="sk-any", max_retries=0)


def _messages() -> list[Any]:
    return [{"role": "user", "content": f"think {uuid.uuid4().hex}"}]


def _details(usage: Any, calls: int = 1) -> None:
    """`usage` says what the upstream reported, over `calls` calls."""
    assert usage is not None and usage.completion_tokens == 30 * calls
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 12 * calls
    assert usage.completion_tokens_details.audio_tokens == 3 * calls
    assert usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens_details.cached_tokens, usage.prompt_tokens_details.audio_tokens) == (8 * calls,
                                                                                                    4 * calls)


def _streamed_usage(client: openai.OpenAI, model: str, messages: list[Any], **extra: Any) -> Any:
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}, **extra))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("ok")
    return next(c.usage for c in chunks if c.usage is not None)


@pytest.mark.parametrize("model", ["small", "whole"])  # rebuilt from the upstream's stream; its own whole answer
def test_a_whole_answer_carries_the_upstreams_reasoning_tokens(client: openai.OpenAI, model: str) -> None:
    answer = client.chat.completions.create(model=model, messages=_messages(),
                                            extra_headers={"x-switchyard-cache": "bypass"})
    _details(answer.usage)


def test_a_streamed_answer_carries_them_and_so_does_its_cached_replay(client: openai.OpenAI) -> None:
    messages = _messages()
    _details(_streamed_usage(client, "small", messages, temperature=0))  # relayed, then cached
    again = client.chat.completions.with_raw_response.create(model="small", messages=messages, temperature=0)
    assert again.headers["x-switchyard-cache"] == "hit"
    _details(again.parse().usage)  # the cached answer, whole
    _details(_streamed_usage(client, "small", messages, temperature=0))  # and replayed as a stream


def test_a_cascades_answer_sums_them_over_its_calls(client: openai.OpenAI) -> None:
    answer = client.chat.completions.with_raw_response.create(model="router/escalating", messages=_messages())
    assert answer.headers["x-switchyard-plan"].endswith(":escalated")
    _details(answer.parse().usage, calls=2)
    _details(_streamed_usage(client, "router/escalating", _messages()), calls=2)


def _openai_shaped(usage: Any, prompt: tuple[int, int] = (0, 0), completion: tuple[int, int, int, int] = (0, 0, 0, 0)
                   ) -> None:
    """Both details objects are there, as OpenAI sends them, with these counts (cached and audio prompt
    tokens; reasoning, audio, accepted and rejected prediction tokens)."""
    assert usage is not None and usage.prompt_tokens_details is not None and usage.completion_tokens_details is not None
    p, c = usage.prompt_tokens_details, usage.completion_tokens_details
    assert (p.cached_tokens, p.audio_tokens) == prompt
    assert (c.reasoning_tokens, c.audio_tokens, c.accepted_prediction_tokens,
            c.rejected_prediction_tokens) == completion


@pytest.mark.parametrize("how", ["always", "never"])  # rebuilt from the upstream's stream; its own whole answer
@pytest.mark.parametrize("name", ["zeros", "bare", "uncounted"])
def test_every_answer_has_both_details_objects_whatever_the_upstream_sent(client: openai.OpenAI, name: str,
                                                                          how: str) -> None:
    model, messages = f"{name}-{how}", _messages()
    _openai_shaped(client.chat.completions.create(model=model, messages=messages, temperature=0).usage)
    _openai_shaped(_streamed_usage(client, model, _messages()))  # relayed
    again = client.chat.completions.with_raw_response.create(model=model, messages=messages, temperature=0)
    assert again.headers["x-switchyard-cache"] == "hit"
    _openai_shaped(again.parse().usage)  # the cached answer, whole
    _openai_shaped(_streamed_usage(client, model, messages, temperature=0))  # and replayed as a stream


def test_a_streamed_answers_cached_replay_has_both_objects(client: openai.OpenAI) -> None:
    messages = _messages()
    _openai_shaped(_streamed_usage(client, "bare-always", messages, temperature=0))  # relayed, then cached
    _openai_shaped(client.chat.completions.create(model="bare-always", messages=messages, temperature=0).usage)
    _openai_shaped(_streamed_usage(client, "bare-always", messages, temperature=0))


@pytest.mark.parametrize("how", ["always", "never"])
def test_predicted_outputs_counts_reach_the_client_and_are_billed_as_completion_tokens(client: openai.OpenAI,
                                                                                     how: str) -> None:
    model, messages = f"predicted-{how}", _messages()
    answer = client.chat.completions.with_raw_response.create(model=model, messages=messages, temperature=0)
    _openai_shaped(answer.parse().usage, completion=(0, 0, 10, 6))
    # 20 prompt tokens at $1/Mtok, 30 completion tokens (the 6 rejected among them) at $2/Mtok: no more, no less.
    assert float(answer.headers["x-switchyard-cost-usd"]) == pytest.approx(20e-6 + 30 * 2e-6)
    _openai_shaped(_streamed_usage(client, model, _messages()), completion=(0, 0, 10, 6))  # relayed
    _openai_shaped(client.chat.completions.create(model=model, messages=messages, temperature=0).usage,
                   completion=(0, 0, 10, 6))  # cached
    _openai_shaped(_streamed_usage(client, model, messages, temperature=0), completion=(0, 0, 10, 6))  # replayed


def test_a_stream_whose_upstream_sent_no_usage_ends_with_the_counted_usage_it_is_billed(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="uncounted-always", messages=_messages(), stream=True,
                                                 stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    cost = (last.model_extra or {})["switchyard"]["cost_usd"]
    assert cost == pytest.approx(last.usage.prompt_tokens * 1e-6 + last.usage.completion_tokens * 2e-6)
    plain = list(client.chat.completions.create(model="uncounted-always", messages=_messages(), stream=True))
    assert all(c.usage is None for c in plain)  # not asked for: not sent


@pytest.mark.parametrize("name", ["garbled-always", "garbled-never", "negative-always", "negative-litellm"])
def test_a_stream_whose_upstream_sent_counts_that_are_no_counts_ends_with_the_counted_usage_it_is_billed(
        client: openai.OpenAI, name: str) -> None:
    """Such usage is billed as none (on counted tokens); relayed as it came, the client read text and a
    negative count for its tokens and a cost of 0 beside them, unlike its bill."""
    messages = _messages()  # no temperature: never cached
    chunks = list(client.chat.completions.create(model=name, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    usages = [c for c in chunks if c.usage is not None]
    assert len(usages) == 1 and usages[0].choices == []
    usage = usages[0].usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    cost = (usages[0].model_extra or {})["switchyard"]["cost_usd"]
    assert cost == pytest.approx(usage.prompt_tokens * 1e-6 + usage.completion_tokens * 2e-6)
    whole = client.chat.completions.with_raw_response.create(model=name, messages=messages)
    assert float(whole.headers["x-switchyard-cost-usd"]) == pytest.approx(cost)  # billed alike, whole or streamed
