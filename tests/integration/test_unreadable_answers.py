"""A whole answer an OpenAI-compatible server sends with status 200 that is no chat completion (an error
envelope, a JSON array, no choices, a choice that is no object), asked for whole or answered whole to a
stream, and a stream from which litellm reads nothing: a failure of the upstream, never a 200 passing it
on (or an empty answer) nor a 500. Over real HTTP with the official SDK, against a scripted upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

ANSWER = {"id": "chatcmpl-w", "object": "chat.completion", "created": 1700000000,
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}
# What each deployment answers, with status 200 and content-type application/json, to every request.
BODIES: dict[str, Any] = {
    "error-envelope": {"error": {"message": "The server had an error while processing your request.",
                                 "type": "server_error"}},
    "array": [1, 2, 3],
    "no-choices": {"id": "x", "object": "chat.completion", "usage": ANSWER["usage"]},
    "empty-choices": {**ANSWER, "choices": []},
    "choice-text": {**ANSWER, "choices": ["Hello"]},
    "message-text": {**ANSWER, "choices": [{"index": 0, "message": "Hello", "finish_reason": "stop"}]},
    "tool-call-text": {**ANSWER, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": ["add"]}}]},
    "fine": ANSWER,
}
_CHUNK = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": "m"}
# What each deployment behind litellm answers (as `openai/<name>`): JSON bodies as above, SSE bodies as
# text/event-stream.
STREAMS: dict[str, Any] = {
    "empty-stream": b"",
    "html-page": "<html><body>502 Bad Gateway</body></html>",
    "envelope": BODIES["error-envelope"],
    # a stream the provider's filter ended before any text: nothing in its delta, but its usage after
    "filtered": b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in (
        {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]},
        {**_CHUNK, "choices": [], "usage": ANSWER["usage"]})) + b"data: [DONE]\n\n",
    "streams": b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in (
        {**_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}]},
        {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**_CHUNK, "choices": [], "usage": ANSWER["usage"]})) + b"data: [DONE]\n\n",
}

# Whole answers of BODIES read through litellm (`backend: litellm`), as `ll-<name>`.
LITELLM_WHOLE = ["error-envelope", "empty-choices"]


class _Whole(ScriptedHandler):
    def do_POST(self) -> None:
        model = orjson.loads(self.rfile.read(int(self.headers["content-length"])))["model"]
        if (sent := STREAMS.get(model)) is not None:
            if isinstance(sent, bytes):
                self._send(sent, "text/event-stream")
            else:
                self._send(sent.encode() if isinstance(sent, str) else orjson.dumps(sent),
                           "text/html" if isinstance(sent, str) else "application/json")
            return
        self._send(orjson.dumps({**BODIES[model], "model": model} if isinstance(BODIES[model], dict)
                                else BODIES[model]), "application/json")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_Whole) as base:
        rows = [{"name": name, "model": f"openai/{name}", "api_base": base, "tier": "large" if name == "fine"
                 else "small", "max_retries": 0, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                for name in BODIES]
        rows += [{"name": f"ll-{name}", "model": f"openai/{name}", "api_base": base, "backend": "litellm",
                  "tier": "small", "max_retries": 0, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                 for name in STREAMS]
        rows += [{"name": f"ll-{name}", "model": f"openai/{name}", "api_base": base, "backend": "litellm",
                  "tier": "small", "max_retries": 0, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                 for name in LITELLM_WHOLE]
        policies = policies_folder(Path(tmp_path_factory.mktemp("whole")), {
            f"to-{name}": {"candidates": [{"single": name}], "fallbacks": {name: ["fine"]},
                           "cache": {"enabled": False}}
            for name in [*BODIES, *(f"ll-{n}" for n in [*STREAMS, *LITELLM_WHOLE])] if name != "fine"})
        with running_gateway(create_app(parse_config({"deployments": rows}, "whole"), policies_dir=policies,
                                        watch_policies_s=None, watch_router_s=None)) as gw:
            yield gw.base_url + "/v1"


UNREADABLE = [name for name in BODIES if name != "fine"]


@pytest.mark.parametrize("deployment", UNREADABLE)
@pytest.mark.parametrize("stream", [False, True])
def test_a_200_that_is_no_answer_is_an_upstream_failure(base_url: str, deployment: str, stream: bool) -> None:
    """Asked for whole, such a body was relayed as a 200 (an error envelope, no choices, a choice that is a
    string), billed as an answer, or was a 500 with a traceback (an array); answered whole to a stream, a
    choice that is no object was a 500 too."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
    with pytest.raises(openai.APIStatusError) as failed:
        answer = client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}],
                                                stream=stream)
        if stream:
            list(answer)  # type: ignore[arg-type]
    assert failed.value.status_code == 502, failed.value.message
    assert failed.value.code == "upstream_failed"
    assert f"deployment '{deployment}' failed: upstream sent" in failed.value.message


@pytest.mark.parametrize("deployment", UNREADABLE)
def test_a_200_that_is_no_answer_is_answered_by_the_fallback(base_url: str, deployment: str) -> None:
    raw = httpx.post(base_url + "/chat/completions", timeout=10, json={
        "model": f"router/to-{deployment}", "messages": [{"role": "user", "content": "hi"}]})
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-switchyard-plan"] == f"single:{deployment}>fallback:fine"
    assert raw.json()["choices"][0]["message"]["content"] == "Hello"


SAYS_NOTHING = ["ll-empty-stream", "ll-html-page", "ll-envelope"]


@pytest.mark.parametrize("deployment", SAYS_NOTHING)
def test_a_stream_litellm_reads_nothing_from_is_an_upstream_failure(base_url: str, deployment: str) -> None:
    """litellm ends a stream it read no chunk from (an empty body; an HTML page or an error envelope sent
    with status 200) with a finish_reason of its own: relayed, the client read an empty answer, finished
    with `stop`, billed for its prompt, and no fallback was asked."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as failed:
        list(client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}],
                                            stream=True))
    assert failed.value.status_code == 502, failed.value.message
    assert f"deployment '{deployment}' failed: stream ended before any chunk" in failed.value.message
    with httpx.stream("POST", base_url + "/chat/completions", timeout=30, json={
            "model": f"router/to-{deployment}", "messages": [{"role": "user", "content": "hi"}],
            "stream": True}) as raw:
        assert raw.headers["x-switchyard-plan"] == f"single:{deployment}>fallback:fine"


@pytest.mark.parametrize(("deployment", "text", "finish"), [("ll-streams", "Hello", "stop"),
                                                            ("ll-filtered", "", "content_filter")])
def test_a_stream_through_litellm_that_says_something_is_relayed(base_url: str, deployment: str, text: str,
                                                                 finish: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
    chunks = list(client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [finish]
    assert [c.usage.completion_tokens for c in chunks if c.usage is not None] == [1]


@pytest.mark.parametrize("deployment", [f"ll-{name}" for name in LITELLM_WHOLE])
def test_a_200_that_is_no_answer_through_litellm_is_an_upstream_failure(base_url: str, deployment: str) -> None:
    """litellm raises an error envelope sent with status 200 as a 422 of its own making (taken for the request's
    fault: a 400 blaming the client, and no fallback asked) and passes an answer without choices on (a 200 with
    nothing in it, billed): as on the direct path, either is a failure of the upstream."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502, failed.value.message
    assert f"deployment '{deployment}' failed: upstream sent" in failed.value.message
    raw = httpx.post(base_url + "/chat/completions", timeout=30, json={
        "model": f"router/to-{deployment}", "messages": [{"role": "user", "content": "hi"}]})
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-switchyard-plan"] == f"single:{deployment}>fallback:fine"
