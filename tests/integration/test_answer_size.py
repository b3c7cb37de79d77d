"""A whole answer larger than the gateway reads (`direct._MAX_BODY`) is a failed call, not one held in memory
whatever its size: an upstream that sent gigabytes grew the gateway with it. Over real HTTP with the official
SDK, against a scripted upstream, with the limit lowered to 1 MiB so that the test sends little."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from gateway.providers import direct
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

LIMIT = 1 << 20


def _answer(text: str) -> bytes:
    return orjson.dumps({"id": "chatcmpl-h", "object": "chat.completion", "created": 1700000000, "model": "m",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


class _Sizes(ScriptedHandler):
    """`stated` sends 2 MiB with its length; `unstated` sends 2 MiB without one (read to the connection's
    end); `fits` sends a short answer."""

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        if body["model"] == "fits":
            self._send(_answer("The answer is 42."), "application/json")
            return
        payload = _answer("x" * (2 * LIMIT))
        try:  # the gateway stops reading past its limit and closes the connection
            if body["model"] == "stated":
                self._send(payload, "application/json")
                return
            self.send_response(200)  # HTTP/1.0 without a length: the body ends when the connection closes
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch, scripted_upstream(_Sizes) as base:
        patch.setattr(direct, "_MAX_BODY", LIMIT)
        rows = [{"name": name, "model": f"openai/{name}", "api_base": base, "tier": tier, "max_retries": 2,
                 "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                for name, tier in (("stated", "small"), ("unstated", "small"), ("fits", "large"))]
        policies = policies_folder(Path(tmp_path_factory.mktemp("sizes")), {
            "saved": {"candidates": [{"single": "unstated"}], "fallbacks": {"unstated": ["fits"]},
                      "cache": {"enabled": False}}})
        with running_gateway(create_app(parse_config({"deployments": rows}, "sizes"), policies_dir=policies,
                                        watch_policies_s=None, watch_router_s=None)) as gw:
            yield gw.base_url + "/v1"


@pytest.mark.parametrize("model", ["stated", "unstated"])
def test_an_answer_over_the_limit_is_a_failed_call(base_url: str, model: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say x."}])
    assert failed.value.status_code == 502
    assert f"deployment '{model}' failed" in failed.value.message and "over 1 MiB" in failed.value.message


def test_an_answer_over_the_limit_goes_to_the_fallback(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20)
    raw = client.chat.completions.with_raw_response.create(
        model="router/saved", messages=[{"role": "user", "content": "Say x."}])
    assert raw.headers["x-switchyard-plan"] == "single:unstated>fallback:fits"
    assert raw.parse().choices[0].message.content == "The answer is 42."
