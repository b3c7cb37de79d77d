"""A stream whose answer is whole but whose connection does not end well: every choice has its
finish_reason and the usage chunk has come, then the upstream goes quiet or drops the connection before
`[DONE]`. Over real HTTP with the official SDK, against a scripted upstream."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway, wait_until
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

RELEASE = threading.Event()  # ends every held connection: set when the module's upstream stops
CALLS: dict[str, int] = {}


class _NoDone(ScriptedHandler):
    """A whole answer streamed (its finish_reason and its usage), then no `[DONE]`: the `quiet` deployment
    holds the connection open, the other deployments answer in full."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        model = orjson.loads(self.rfile.read(int(self.headers["content-length"])))["model"]
        CALLS[model] = CALLS.get(model, 0) + 1
        head = {"id": f"chatcmpl-{model}", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
        chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}]},
                  {**head, "choices": [{"index": 0, "delta": {"content": " world"}}]},
                  {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                  {**head, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        if model == "terse":  # its answer, then [DONE]: no finish_reason, no usage
            chunks = chunks[:2]
        for chunk in chunks:
            self._piece(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if model == "quiet":
            RELEASE.wait(10)  # then the connection closes without the stream's last chunk
        else:
            self._piece(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def _piece(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_NoDone) as base:
        rows = [{"name": name, "model": f"openai/{name}", "api_base": base, "tier": tier, "max_retries": 0,
                 "timeout_s": 0.5, "supports_prefill": True, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                for name, tier in (("quiet", "small"), ("next", "large"), ("terse", "small"))]
        policies = policies_folder(Path(tmp_path_factory.mktemp("endings")), {
            "resumable": {"candidates": [{"single": "quiet"}], "fallbacks": {"quiet": ["next"]},
                          "cache": {"enabled": False}}})
        with running_gateway(create_app(parse_config({"deployments": rows}, "endings"), policies_dir=policies,
                                        watch_policies_s=None, watch_router_s=None)) as gw:
            try:
                yield gw.base_url + "/v1"
            finally:
                RELEASE.set()


def _calls(base_url: str) -> dict[str, int]:
    rows = httpx.get(base_url + "/spend", params={"group_by": "deployment"}, timeout=10).json()["data"]
    return {r["deployment"]: int(r["calls"]) for r in rows if r["calls"]}


@pytest.mark.parametrize("model", ["quiet", "router/resumable"])
def test_a_whole_answer_whose_stream_never_says_done_is_relayed_as_it_was_answered(base_url: str,
                                                                                   model: str) -> None:
    """Once every choice had finished and the usage had come, a connection that then went quiet (or
    broke) was taken for a stream broken mid-way: the client read its whole answer and then an error
    event, or, with a fallback that takes a prefill, a second answer "continuing" the finished one
    after its finish_reason and its usage, billed as another call."""
    before = _calls(base_url)
    calls_before = dict(CALLS)
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)

    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and usages[0].completion_tokens == 2
    assert {m: n - calls_before.get(m, 0) for m, n in CALLS.items() if n != calls_before.get(m, 0)} == {"quiet": 1}
    wait_until(lambda: _calls(base_url).get("quiet", 0) - before.get("quiet", 0) == 1, timeout_s=10,
               what="the call billed")
    assert _calls(base_url).get("next", 0) == before.get("next", 0)


def test_an_answer_a_server_ends_with_done_but_never_marks_finished_ends_finished_with_its_usage(
        base_url: str) -> None:
    """`[DONE]` with no finish_reason before it: relayed as it was, the client's stream had no
    finish_reason and, asked for usage, no usage chunk, and the request was logged as its client's leaving."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
    chunks = list(client.chat.completions.create(model="terse", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and usages[0].completion_tokens > 0
