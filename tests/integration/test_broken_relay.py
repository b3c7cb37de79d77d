"""A relayed stream that breaks in a way nobody planned for (an upstream chunk the gateway cannot read)
still ends its request: its tenant's in-flight slot is given back, over real HTTP with the official SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

# What the second chunk of each deployment's stream holds (besides id, object, created and model); None: the
# connection ends cleanly there, without a finish_reason or [DONE].
SECOND: dict[str, dict[str, object] | None] = {
    "garbled": {"choices": [], "usage": 5},
    "choices-text": {"choices": "oops"},
    "choice-number": {"choices": [1]},
    "index-text": {"choices": [{"index": "zero", "delta": {"content": "x"}}]},
    "delta-text": {"choices": [{"index": 0, "delta": "text"}]},
    "call-index-text": {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "a"}]}}]},
    "call-number": {"choices": [{"index": 0, "delta": {"tool_calls": [1]}}]},
    "call-function-text": {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]},
    "ends-early": None,
    # choice 0 finishes, choice 1 (of n=2) never does, and the connection ends without [DONE]
    "one-of-two-ends": {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"},
                                    {"index": 1, "delta": {"content": "y"}}]},
    # choice 0 finishes, choice 1 (of n=2) never begins, and the connection ends without [DONE]
    "one-of-two-only": {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
}


class _Garbled(ScriptedHandler):
    """Streams a first chunk, then the deployment's second (`SECOND`)."""

    def do_POST(self) -> None:
        model = orjson.loads(self.rfile.read(int(self.headers["content-length"])))["model"]
        head = {"id": "chatcmpl-g", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
        first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                      "finish_reason": None}]}
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b"data: " + orjson.dumps(first) + b"\n\n")
        if (second := SECOND[model]) is not None:
            self.wfile.write(b"data: " + orjson.dumps({**head, **second}) + b"\n\n")
            if model not in ("one-of-two-ends", "one-of-two-only"):
                self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_Garbled) as base:
        rows = [{"name": name, "model": f"openai/{name}", "api_base": base, "tier": "large" if name == "garbled"
                 else "small", "max_retries": 0, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                for name in SECOND]
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


@pytest.mark.parametrize("deployment", [d for d in SECOND if d != "garbled"])
def test_a_chunk_of_the_wrong_shape_or_a_stream_ended_early_is_an_upstream_failure(base_url: str,
                                                                                   deployment: str) -> None:
    """A chunk whose choices, a choice, its index or its delta had the wrong type broke the relay with a
    traceback and cut the client's connection; a stream that ended cleanly before its answer (no
    finish_reason, no [DONE]) was relayed as complete. Each is a failure of the upstream, said in the
    stream as OpenAI says an error."""
    client = openai.OpenAI(base_url=base_url, api_key="sk-one", max_retries=0, timeout=10)
    stream = client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}],
                                            stream=True, n=2 if deployment.startswith("one-of-two") else 1)
    with pytest.raises(openai.APIError) as failed:
        for _chunk in stream:
            pass
    assert f"deployment '{deployment}' failed mid-stream" in failed.value.message



def _failed_streams(base_url: str, deployment: str) -> dict[str, float]:
    metrics = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return {s.labels["status"]: s.value for family in text_string_to_metric_families(metrics) for s in family.samples
            if s.name == "switchyard_requests_total" and s.labels.get("deployment") == deployment}


def test_a_stream_its_upstream_broke_is_counted_as_a_failed_request(base_url: str) -> None:
    """It was counted under status 200, beside the answered ones: an error rate read off the metrics
    missed every upstream failure that came after the first chunk."""
    client = openai.OpenAI(base_url=base_url, api_key="sk-one", max_retries=0, timeout=10)
    before = _failed_streams(base_url, "ends-early")
    with pytest.raises(openai.APIError) as failed:
        for _chunk in client.chat.completions.create(model="ends-early", stream=True,
                                                     messages=[{"role": "user", "content": "hi"}]):
            pass
    assert failed.value.type == "upstream_error" and failed.value.code == "upstream_stream_failed"
    after = _failed_streams(base_url, "ends-early")
    assert after.get("502", 0) == before.get("502", 0) + 1 and after.get("200", 0) == before.get("200", 0)
