"""An upstream's usage that leaves out one of its two counts (prompt tokens and a total, no completion
tokens) is no usage to bill by: the answer is billed on the gateway's own count, as one without usage,
whole and streamed. Over real HTTP with the official SDK, against a scripted upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

TEXT = "The answer is forty-two, as the question had it all along."
PARTIAL = {"prompt_tokens": 10, "total_tokens": 25}  # no completion_tokens
_CHUNK = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": "m"}


class _PartialUsage(ScriptedHandler):
    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        if body.get("stream"):
            chunks = [{**_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": TEXT},
                                              "finish_reason": None}]},
                      {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                      {**_CHUNK, "choices": [], "usage": PARTIAL}]
            self._send(b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n",
                       "text/event-stream")
            return
        self._send(orjson.dumps({"id": "chatcmpl-w", "object": "chat.completion", "created": 1700000000,
                                 "model": "m", "usage": PARTIAL, "choices": [{
                                     "index": 0, "message": {"role": "assistant", "content": TEXT},
                                     "finish_reason": "stop"}]}), "application/json")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_PartialUsage) as base:
        rows = [{"name": "partial", "model": "openai/partial", "api_base": base, "tier": "small",
                 "max_retries": 0, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}]
        policies = policies_folder(Path(tmp_path_factory.mktemp("partial")),
                                   {"only": {"candidates": [{"single": "partial"}]}})
        config = parse_config({"deployments": rows, "default_policy": "only"}, "partial")
        with running_gateway(create_app(config, policies_dir=policies, watch_policies_s=None,
                                        watch_router_s=None)) as gw:
            yield gw.base_url + "/v1"


def test_a_whole_answer_whose_usage_leaves_out_its_completion_tokens_is_billed_on_counted_tokens(
        base_url: str) -> None:
    """Its text was billed as 0 completion tokens: the answer's usage said so, and its cost was the prompt's."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
    raw = client.chat.completions.with_raw_response.create(model="partial",
                                                           messages=[{"role": "user", "content": "What is it?"}])
    usage = raw.parse().usage
    assert usage is not None and usage.completion_tokens >= 10
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(
        usage.prompt_tokens * 1e-6 + usage.completion_tokens * 2e-6)


def test_a_stream_whose_usage_leaves_out_its_completion_tokens_ends_with_counted_usage(base_url: str) -> None:
    """The usage chunk was relayed as sent (completion_tokens missing) and billed as 0 completion tokens."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
    chunks = list(client.chat.completions.create(model="partial", stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "What is it?"}]))
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1
    assert usages[0].completion_tokens is not None and usages[0].completion_tokens >= 10
    assert usages[0].total_tokens == usages[0].prompt_tokens + usages[0].completion_tokens
