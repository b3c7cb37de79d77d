"""A relayed stream that breaks in a way nobody planned for (an upstream chunk the gateway cannot read)
still ends its request: its tenant's in-flight slot is given back, over real HTTP with the official SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream


class _Garbled(ScriptedHandler):
    """Streams a first chunk, then one whose usage is no object."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        head = {"id": "chatcmpl-g", "object": "chat.completion.chunk", "created": 1700000000, "model": "garbled"}
        first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                      "finish_reason": None}]}
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b"data: " + orjson.dumps(first) + b"\n\n")
        self.wfile.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": 5}) + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_Garbled) as base:
        rows = [{"name": name, "model": "openai/garbled", "api_base": base, "tier": tier, "max_retries": 0,
                 "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                for name, tier in (("garbled", "small"), ("other", "large"))]
        tenants = [{"name": "one", "api_key_sha256": hash_key("sk-one"), "max_concurrent_requests": 1}]
        policies = policies_folder(Path(tmp_path_factory.mktemp("garbled")), {})
        with running_gateway(create_app(parse_config({"deployments": rows, "tenants": tenants}, "garbled"),
                                        policies_dir=policies, watch_policies_s=None, watch_router_s=None)) as gw:
            yield gw.base_url + "/v1"


def test_a_stream_broken_by_an_unreadable_chunk_gives_its_slot_back(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="sk-one", max_retries=0, timeout=10)
    for _ in range(3):  # each after the last has ended: never over a cap of one
        try:
            for _chunk in client.chat.completions.create(model="garbled", messages=[{"role": "user", "content": "hi"}],
                                                         stream=True):
                pass
        except openai.RateLimitError:
            raise
        except openai.APIError:
            pass  # how the broken stream reaches the client is not what this test is about


def test_a_stream_broken_by_an_unreadable_chunk_ends_in_an_openai_style_error(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="sk-one", max_retries=0, timeout=10)
    stream = client.chat.completions.create(model="garbled", messages=[{"role": "user", "content": "hi"}],
                                            stream=True)
    with pytest.raises(openai.APIError) as failed:
        for _chunk in stream:
            pass
    assert "failed mid-stream" in failed.value.message and "invalid stream chunk" in failed.value.message
