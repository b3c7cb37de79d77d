"""A relayed stream its client leaves is billed for what the upstream reports at its end: over real HTTP,
with the official SDK, against an OpenAI-compatible server that thinks the way reasoning models do (its
thinking streamed as `reasoning_content`, or nothing at all for a while) and says what the call cost only
in its final usage chunk (`completion_tokens_details.reasoning_tokens` inside `completion_tokens`).

The upstream goes on thinking after the client has gone, and the provider bills every token of it. Before,
the gateway closed the upstream when the client left and billed its prompt and the few tokens it had seen
(or none, for a client that left before the first chunk): the thinking, reported only at the end, was
never billed."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.integration.test_metrics_endpoint import scrape, total
from tests.support.jsonl import whole_records
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway, wait_until
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

# What the upstream reports at the end of every stream: most of it thinking the client never saw.
USAGE = {"prompt_tokens": 20, "completion_tokens": 900, "total_tokens": 920,
         "completion_tokens_details": {"reasoning_tokens": 880}}
THINKING_S = 0.8  # how long the upstream thinks: the client leaves well before it is done
_SINKS: list[str] = []  # the module gateway's request-log file
ENDED = {"reasoning": threading.Event(), "silent": threading.Event(),  # the upstream sent its usage chunk
         "slow-usage": threading.Event(), "flood": threading.Event()}
FLOOD_CHUNKS = 12_000  # of 2 kB each: far more than a connection's buffers hold
SPANS = InMemorySpanExporter()


class _Thinker(ScriptedHandler):
    """`reasoning`: streams its thinking as `reasoning_content` deltas for `THINKING_S` after its first
    chunk; `silent`: sends its first chunk only after `THINKING_S / 2`, then nothing for `THINKING_S`. Either
    then answers, and ends with `USAGE`."""

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        model = body["model"]
        head = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1700000000, "model": model}

        def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}) \
                + b"\n\n"

        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        with contextlib.suppress(OSError):  # a reader that left: the server's thinking is billed all the same
            if model == "slow-usage":  # answers at once; its usage chunk comes a while after its finish
                self.wfile.write(delta({"role": "assistant", "content": "42"}) + delta({}, "stop"))
                self.wfile.flush()
                time.sleep(THINKING_S / 2)
                self.wfile.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": USAGE}) + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                ENDED[model].set()
                return
            if model == "flood":  # answers fast and long: only a client that reads takes it all
                for _ in range(FLOOD_CHUNKS):
                    self.wfile.write(delta({"content": "word " * 400}))
                self.wfile.write(delta({}, "stop") + b"data: " + orjson.dumps({**head, "choices": [], "usage": USAGE})
                                 + b"\n\n" + b"data: [DONE]\n\n")
                self.wfile.flush()
                ENDED[model].set()
                return
            if model == "silent":
                time.sleep(THINKING_S / 2)
            self.wfile.write(delta({"role": "assistant", "content": ""}))
            self.wfile.flush()
            for _ in range(16):
                time.sleep(THINKING_S / 16)
                if model == "reasoning":
                    self.wfile.write(delta({"reasoning_content": "Let me think about it. "}))
                    self.wfile.flush()
            self.wfile.write(delta({"content": "42"}) + delta({}, "stop"))
            self.wfile.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": USAGE}) + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            ENDED[model].set()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_Thinker) as base:
        price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
        tiers = zip(ENDED, ("small", "large", "medium", "lab"), strict=True)
        rows = [{"name": name, "model": f"openai/{name}", "api_base": base, "tier": tier, "price": price,
                 "max_retries": 0, "timeout_s": 5} for name, tier in tiers]
        folder = Path(tmp_path_factory.mktemp("abandoned"))
        policies = policies_folder(folder, {})  # the shipped ones; pinned here
        raw = {"deployments": rows, "request_log": {"path": str(folder / "requests.jsonl")}}
        _SINKS.append(str(folder / "requests.jsonl"))
        with running_gateway(create_app(parse_config(raw, "abandoned streams"), span_exporter=SPANS,
                                        policies_dir=policies, watch_policies_s=None, watch_router_s=None)) as gw:
            yield gw.base_url + "/v1"


def _records(base_url: str, request_id: str) -> list[dict[str, Any]]:
    """The request records the gateway wrote for `request_id` (its request log's JSONL sink)."""
    del base_url  # one gateway per module: its sink is the one folder's
    sink = next(Path(p) for p in _SINKS if Path(p).exists())
    return [r for r in whole_records(sink) if r.get("request_id") == request_id]


def _billed(base_url: str, deployment: str) -> dict[str, Any]:
    rows = httpx.get(base_url + "/spend", params={"group_by": "deployment"}, timeout=10).json()["data"]
    return next((r for r in rows if r["deployment"] == deployment), {"completion_tokens": 0, "cost_usd": 0.0})


def _messages() -> list[Any]:
    return [{"role": "user", "content": f"What is six times seven? {uuid.uuid4().hex}"}]


def _settles_to_the_upstreams_usage(base_url: str, deployment: str) -> None:
    ENDED[deployment].wait(5)  # unless the gateway hung up on it
    want = USAGE["prompt_tokens"] * 1.0e-6 + USAGE["completion_tokens"] * 2.0e-6
    try:
        wait_until(lambda: _billed(base_url, deployment)["completion_tokens"] == USAGE["completion_tokens"],
                   timeout_s=5, what="the abandoned stream's bill")
    finally:
        billed = _billed(base_url, deployment)
        assert (billed["prompt_tokens"], billed["completion_tokens"]) == (20, 900), billed
    assert billed["cost_usd"] == pytest.approx(want)


def test_a_stream_left_after_its_first_chunk_is_billed_for_the_thinking_reported_at_its_end(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="reasoning", messages=_messages(), stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"  # the client sees what it always saw
    stream.close()  # and leaves while the model is still thinking
    _settles_to_the_upstreams_usage(base_url, "reasoning")


def test_a_stream_left_is_recorded_with_what_it_was_billed_once_it_ends(
        base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The request's record (what feedback labels, `logs export` prices) is written when the stream read on
    ends, with the whole bill: before, a stream its client left mid-answer had no record at all, and one left
    after its finish had one billed only its first chunks. Its log line, written as the client left, is
    followed by a `stream_read_on` line with the rest of the bill."""
    caplog.set_level(logging.INFO, logger="switchyard.pipeline")
    caplog.set_level(logging.INFO, logger="switchyard.upstream")
    ENDED["reasoning"].clear()
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="reasoning", messages=_messages(), stream=True)
    request_id, trace_id = raw.headers["x-request-id"], raw.headers["x-switchyard-trace-id"]
    stream = raw.parse()
    next(iter(stream))
    stream.close()
    ENDED["reasoning"].wait(5)
    wait_until(lambda: _records(base_url, request_id), timeout_s=5, what="the left stream's request record")
    time.sleep(0.3)  # a second record would be written by now
    (record,) = _records(base_url, request_id)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (20, 900)
    assert record["cost_usd"] == pytest.approx(20 * 1.0e-6 + 900 * 2.0e-6)
    assert record["deployment"] == "reasoning"
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "stream_read_on"
               and getattr(r, "request_id", None) == request_id]
    assert (line.input_tokens, line.output_tokens) == (20, 900)  # type: ignore[attr-defined]
    assert line.request_cost_usd == pytest.approx(record["cost_usd"])  # type: ignore[attr-defined]
    # and not also as an answer the gateway gave up on (it did not: its client left)
    assert not [r for r in caplog.records if getattr(r, "event", None) == "late_answer"]
    # and the cost metric has what the ledger has for it (before: nothing at all), counted there alone
    # (once it was counted as a background late call too: the two metrics added up to twice the ledger)
    def metric(name: str = "switchyard_cost_usd_total") -> float:
        return total(scrape(base_url.removesuffix("/v1")), name, deployment="reasoning")
    # the ledger's writer may lag the record by a moment
    wait_until(lambda: metric() == pytest.approx(_billed(base_url, "reasoning")["cost_usd"]), timeout_s=5,
               what="the cost metric and the ledger to agree")
    billed = _billed(base_url, "reasoning")["cost_usd"]
    assert billed > 0 and metric() == pytest.approx(billed)
    assert metric("switchyard_background_cost_usd_total") == 0.0
    # The request's span, ended as its client left, says what was billed with it then, as its log line does,
    # and the call read on says the rest on its own span: the request's once held a count of the prompt and
    # the chunks relayed, priced, a cost and tokens billed nowhere.
    trace = [s for s in SPANS.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    (request_span,) = [s for s in trace if s.name == "switchyard.request"]
    (call_span,) = [s for s in trace if s.name == "chat reasoning"]
    assert request_span.attributes is not None and call_span.attributes is not None
    assert request_span.attributes["switchyard.cost_usd"] == 0.0
    assert request_span.attributes["gen_ai.usage.output_tokens"] == 0
    assert call_span.attributes["gen_ai.usage.output_tokens"] == 900
    assert call_span.attributes["switchyard.cost_usd"] == pytest.approx(record["cost_usd"])


def test_a_stream_left_before_its_first_chunk_is_billed_for_the_thinking_reported_at_its_end(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=THINKING_S / 4)
    with pytest.raises(openai.APITimeoutError):  # gone before the model said anything
        client.chat.completions.create(model="silent", messages=_messages(), stream=True)
    _settles_to_the_upstreams_usage(base_url, "silent")


def test_a_stream_left_after_its_finish_is_cached_with_its_usage_not_zeros(base_url: str) -> None:
    """A client that reads up to its answer's finish and leaves before the usage chunk it asked for is
    relayed: the answer is whole, and is cached with the usage the upstream reported (here before the
    client's leaving was noticed), never with zeros that every later hit would then report."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    messages = _messages()
    raw = client.chat.completions.with_raw_response.create(model="slow-usage", messages=messages, stream=True,
                                                           temperature=0, stream_options={"include_usage": True})
    request_id, stream = raw.headers["x-request-id"], raw.parse()
    for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            break
    stream.close()  # the answer is whole: the client does not wait for the usage chunk
    _settles_to_the_upstreams_usage(base_url, "slow-usage")
    wait_until(lambda: _records(base_url, request_id), timeout_s=5, what="its request record")
    time.sleep(0.3)  # a second record would be written by now
    (record,) = _records(base_url, request_id)  # one, with the bill as it ended, not as the client left
    assert (record["prompt_tokens"], record["completion_tokens"]) == (20, 900)
    again = client.chat.completions.with_raw_response.create(model="slow-usage", messages=messages, temperature=0)
    assert again.headers["x-switchyard-cache"] == "hit"
    usage = again.parse().usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (20, 900)


def test_a_stream_whose_client_stops_reading_is_given_up_on_and_billed_not_held_for_ever(
        base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that keeps its connection open and reads nothing more of a long stream (its window shut)
    is taken as gone once the gateway's writes have waited `SEND_TIMEOUT_S` for it: the stream is read
    on and billed for what the upstream reports. Before, the relay waited on its write for as long as the
    client held the connection, its upstream call unread (so never timed out as stalled), its tenant's
    slot taken and its budget hold, renewed only as chunks are read, lapsing while the stream went on."""
    from gateway.api import http_limits

    monkeypatch.setattr(http_limits, "SEND_TIMEOUT_S", 0.5)
    body = orjson.dumps({"model": "flood", "messages": _messages(), "stream": True})
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a shut window, soon
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        assert sock.recv(64).startswith(b"HTTP/1.1 200")  # the stream began; nothing more is read of it
        assert ENDED["flood"].wait(15), "the stream was never read on: the gateway still waits on its client"
        _settles_to_the_upstreams_usage(base_url, "flood")
