"""A server that takes no `n` (it answers one choice whatever it is asked, as some OpenAI-compatible
servers do, without an error) is a deployment that failed the call, not one that answered it: over real
HTTP with the official SDK, against a scripted upstream answering one choice, whole and streamed."""

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

USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
_CHUNK = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": "m"}


def _choice(i: int) -> dict[str, Any]:
    return {"index": i, "message": {"role": "assistant", "content": "The answer is 42."}, "finish_reason": "stop"}


class _OneChoice(ScriptedHandler):
    """`one-choice` answers one choice to any `n`; `fine` answers as many as asked."""

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        n = (body.get("n") or 1) if body["model"] == "fine" else 1
        if body.get("stream"):
            chunks = [{**_CHUNK, "choices": [{"index": i, "delta": {"role": "assistant", "content": "42"},
                                              "finish_reason": "stop"} for i in range(n)]},
                      {**_CHUNK, "choices": [], "usage": USAGE}]
            self._send(b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n",
                       "text/event-stream")
            return
        self._send(orjson.dumps({"id": "chatcmpl-w", "object": "chat.completion", "created": 1700000000,
                                 "model": body["model"], "choices": [_choice(i) for i in range(n)],
                                 "usage": USAGE}), "application/json")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_OneChoice) as base:
        rows = [{"name": name, "model": f"openai/{name}", "api_base": base, "tier": tier, "max_retries": 2,
                 "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                for name, tier in (("one-choice", "small"), ("fine", "large"))]
        never_cached = {"cache": {"enabled": False}, "objective": {"value_usd": 0.01}}
        policies = policies_folder(Path(tmp_path_factory.mktemp("choices")), {
            "to-one-choice": {"candidates": [{"single": "one-choice"}], "fallbacks": {"one-choice": ["fine"]},
                              **never_cached},
            "agreeing": {"candidates": [{"cascade": {"steps": ["one-choice", "fine"], "confidence": "agreement",
                                                     "samples": 3, "threshold": 0.7}}], **never_cached}})
        with running_gateway(create_app(parse_config({"deployments": rows}, "choices"), policies_dir=policies,
                                        watch_policies_s=None, watch_router_s=None)) as gw:
            yield gw.base_url + "/v1"


def _calls(base_url: str, deployment: str) -> int:
    spend = httpx.get(base_url + "/spend", params={"group_by": "deployment"}, timeout=10).json()
    return sum(row["calls"] for row in spend["data"] if row["deployment"] == deployment)


@pytest.mark.parametrize("stream", [False, True])
def test_fewer_choices_than_asked_is_an_upstream_failure(base_url: str, stream: bool) -> None:
    """It was a 200 with one choice for `n: 3`, whole or streamed, as though the client had asked for one."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
    with pytest.raises((openai.APIStatusError, openai.APIError)) as failed:
        answer = client.chat.completions.create(model="one-choice", n=3, stream=stream,
                                                messages=[{"role": "user", "content": "What is 6*7?"}])
        if stream:
            list(answer)  # type: ignore[arg-type]
    assert "deployment 'one-choice' failed" in failed.value.message
    assert "answered 1 of the 3 choices asked (n)" in failed.value.message
    if not stream:
        assert isinstance(failed.value, openai.APIStatusError) and failed.value.status_code == 502


def test_fewer_choices_than_asked_goes_to_the_fallback_once_and_is_billed(base_url: str) -> None:
    """Not retried (the server would answer one choice again), the fallback answers every choice, and
    the call that answered one is billed, as its server bills it."""
    before = _calls(base_url, "one-choice")
    raw = httpx.post(base_url + "/chat/completions", timeout=10, json={
        "model": "router/to-one-choice", "n": 3, "messages": [{"role": "user", "content": "What is 6*7?"}]})
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-switchyard-plan"] == "single:one-choice>fallback:fine"
    assert len(raw.json()["choices"]) == 3
    assert _calls(base_url, "one-choice") == before + 1


def test_an_agreement_cascade_does_not_read_one_sample_as_unanimous(base_url: str) -> None:
    """Asked for 3 samples in one call, the one choice that came was taken for three that agreed: confidence
    1.0, accepted at a threshold that needs all three to agree."""
    raw = httpx.post(base_url + "/chat/completions", timeout=10, json={
        "model": "router/agreeing", "messages": [{"role": "user", "content": "What is 6*7?"}]})
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-switchyard-plan"] == "cascade:one-choice>fine:escalated"
