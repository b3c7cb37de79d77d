"""Whole answers on the direct path are asked for as streams and rebuilt: over real HTTP, with the
official SDK, against an OpenAI-compatible server scripted to stream as OpenAI, vLLM, Azure or Gemini
do, and to break off as servers do. Each scripted model is served twice: `<name>` (the rebuilt
answer, `whole_answers_as_streams: always`) and `<name>-whole` (`never`: the server's own whole answer).

The rebuilt answer must be the whole answer (a refusal, a legacy function call, tool calls the server
does not number, an id that only a later chunk carries); a stream that breaks off after its first
chunk must be an error (or a fallback's answer), never a half answer passed off as whole, and what it
generated is billed; a server that answers a stream request whole is read as its answer."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from gateway.executor import drain
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway, wait_until
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

HEAD = {"id": "chatcmpl-abc", "created": 1700000000, "model": "gpt-x-2024", "system_fingerprint": "fp_1",
        "service_tier": "default"}
USAGE = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50,
         "prompt_tokens_details": {"cached_tokens": 8}, "completion_tokens_details": {"reasoning_tokens": 12}}
ERROR = {"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}


def _lp(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.25, "bytes": list(token.encode()), "top_logprobs": []}


def _chunk(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**HEAD, "object": "chat.completion.chunk", "choices": list(choices), **extra}


def _delta(delta: dict[str, Any], finish: str | None = None, index: int = 0, logprobs: Any = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def _whole(*choices: dict[str, Any], usage: dict[str, Any] | None = USAGE) -> dict[str, Any]:
    body = {**HEAD, "object": "chat.completion", "choices": list(choices)}
    return {**body, "usage": usage} if usage else body


TEXT = ["Hello", " there,", " friend"]
PLAIN = (_whole({"index": 0, "message": {"role": "assistant", "content": "".join(TEXT)}, "logprobs": None,
                 "finish_reason": "stop"}, usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}),
         [_chunk(_delta({"role": "assistant", "content": ""})), *(_chunk(_delta({"content": t})) for t in TEXT),
          _chunk(_delta({}, "stop")), _chunk(usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23})])

# model -> (the whole answer, the chunks of its stream)
SCRIPTS: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "plain": PLAIN,
    # OpenAI's refusal: no content at all (null, not ""), the refusal and its logprobs in pieces.
    "refusal": (
        _whole({"index": 0, "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                "logprobs": {"content": None, "refusal": [_lp("I"), _lp(" can't help with that.")]},
                "finish_reason": "stop"}),
        [_chunk(_delta({"role": "assistant", "content": None, "refusal": ""})),
         _chunk(_delta({"refusal": "I"}, logprobs={"content": None, "refusal": [_lp("I")]})),
         _chunk(_delta({"refusal": " can't help with that."},
                       logprobs={"content": None, "refusal": [_lp(" can't help with that.")]})),
         _chunk(_delta({}, "stop")), _chunk(usage=USAGE)]),
    # The legacy `functions` API: a function_call whose arguments come in pieces.
    "function-call": (
        _whole({"index": 0, "message": {"role": "assistant", "content": None,
                                        "function_call": {"name": "weather", "arguments": '{"city": "Paris"}'}},
                "logprobs": None, "finish_reason": "function_call"}),
        [_chunk(_delta({"role": "assistant", "content": None, "function_call": {"name": "weather", "arguments": ""}})),
         _chunk(_delta({"function_call": {"arguments": '{"city": '}})),
         _chunk(_delta({"function_call": {"arguments": '"Paris"}'}})),
         _chunk(_delta({}, "function_call")), _chunk(usage=USAGE)]),
    # Gemini's OpenAI compatibility: each tool call whole in its own chunk, with no index.
    "unnumbered-calls": (
        _whole({"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y": 2}'}}]},
            "logprobs": None, "finish_reason": "tool_calls"}),
        [_chunk(_delta({"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]})),
         _chunk(_delta({"tool_calls": [
             {"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y": 2}'}}]})),
         _chunk(_delta({}, "tool_calls")), _chunk(usage=USAGE)]),
    # Azure's first chunk: prompt filter results, with no id, model or creation time.
    "azure": (PLAIN[0], [{"choices": [], "created": 0, "id": "", "model": "", "object": "",
                          "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}, *PLAIN[1]]),
    # n = 2: text with logprobs beside tool calls whose arguments are split across chunks.
    "choices": (
        _whole({"index": 0, "message": {"role": "assistant", "content": "Hi there", "refusal": None},
                "logprobs": {"content": [_lp("Hi"), _lp(" there")], "refusal": None}, "finish_reason": "stop"},
               {"index": 1, "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                   {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"q": "x"}'}},
                   {"id": "c2", "type": "function", "function": {"name": "put", "arguments": "{}"}}]},
                "logprobs": None, "finish_reason": "tool_calls"}),
        [_chunk(_delta({"role": "assistant", "content": "", "refusal": None})),
         _chunk(_delta({"role": "assistant", "content": None, "refusal": None}, index=1)),
         _chunk(_delta({"content": "Hi"}, logprobs={"content": [_lp("Hi")], "refusal": None})),
         _chunk(_delta({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                        "function": {"name": "get", "arguments": ""}}]}, index=1)),
         _chunk(_delta({"content": " there"}, logprobs={"content": [_lp(" there")], "refusal": None})),
         _chunk(_delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]}, index=1)),
         _chunk(_delta({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}, index=1)),
         _chunk(_delta({"tool_calls": [{"index": 1, "id": "c2", "type": "function",
                                        "function": {"name": "put", "arguments": "{}"}}]}, index=1)),
         _chunk(_delta({}, "stop")), _chunk(_delta({}, "tool_calls", index=1)), _chunk(usage=USAGE)]),
}
# A server that sends no usage, whole or streamed, whatever it is asked.
SCRIPTS["no-usage"] = ({k: v for k, v in SCRIPTS["choices"][0].items() if k != "usage"}, SCRIPTS["choices"][1][:-1])


def _sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + (b"data: [DONE]\n\n" if done else b"")


_HALF = _sse(PLAIN[1][:3], done=False)  # the role chunk and two pieces of text: no finish, no usage
# model -> how its stream breaks off, after its first chunks
BROKEN: dict[str, bytes] = {
    "error-chunk": _HALF + b"data: " + orjson.dumps(ERROR) + b"\n\n",  # vLLM's error mid-stream
    "error-event": _HALF + b"event: error\ndata: " + orjson.dumps(ERROR) + b"\n\n",
    "no-finish": _HALF,  # the body ends cleanly, the answer half-way
    "bad-json": _HALF + b'data: {"id": "x", "choices": [{\n\n',
    "dropped": _HALF,  # then the connection drops mid-body
}


# model -> (what it refuses, its status and error): whole answers it gives as PLAIN's.
REFUSING: dict[str, tuple[str, int, dict[str, Any]]] = {
    # OpenAI, for a model an unverified organisation may not stream.
    "unverified": ("stream", 400, {"error": {
        "message": "Your organization must be verified to stream this model. Please go to: "
                   "https://platform.openai.com/settings/organization/general and click on Verify Organization.",
        "type": "invalid_request_error", "param": "stream", "code": "unsupported_value"}}),
    # A server whose request schema has no stream_options (FastAPI's 422).
    "no-stream-options": ("stream_options", 422, {"detail": [{
        "type": "extra_forbidden", "loc": ["body", "stream_options"], "msg": "Extra inputs are not permitted"}]}),
    # A 400 about something else in a streamed request: the request's fault, whether streamed or not.
    "bad-temperature": ("stream", 400, {"error": {
        "message": "Invalid value for 'temperature': must be at most 2.", "type": "invalid_request_error",
        "param": "temperature", "code": "invalid_value"}}),
}
# The same refusal, from models only hedged policies call (their own record in SEEN).
for _m in ("hedged-unverified", "hedged-unverified-2", "hedged-never", "hedged-never-2"):
    REFUSING[_m] = REFUSING["unverified"]
SEEN: dict[str, list[bool]] = {}  # model -> whether each request it was sent asked to stream


class _Upstream(ScriptedHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        model = body["model"]
        SEEN.setdefault(model, []).append(bool(body.get("stream")))
        if model in REFUSING:
            refused, status, error = REFUSING[model]
            if body.get(refused):
                self._send(orjson.dumps(error), "application/json", status)
            else:
                self._send(orjson.dumps(PLAIN[0]), "application/json")
        elif model in BROKEN:
            self._chunked(BROKEN[model], close=model == "dropped")
        elif model == "trickle":  # its answer a piece every 50 ms, never finished, until the reader goes
            self._trickle()
        elif model == "answers-whole":  # ignores `stream`: the whole answer, as JSON
            self._send(orjson.dumps(PLAIN[0]), "application/json")
        elif model == "error-200":
            self._send(orjson.dumps(ERROR), "application/json")
        elif model == "long-line":  # the whole text in one chunk, one SSE line far over 128 KiB
            text = "word " * 400_000
            whole, chunks = PLAIN
            one = [chunks[0], _chunk(_delta({"content": text})), *chunks[-2:]]
            self._send(_sse(one) if body.get("stream") else orjson.dumps(whole), "text/event-stream")
        else:
            whole, chunks = SCRIPTS.get(model, PLAIN)
            if body.get("stream"):
                self._chunked(_sse(chunks))
            else:
                self._send(orjson.dumps(whole), "application/json")

    def _chunked(self, payload: bytes, close: bool = False) -> None:
        """`payload` in pieces of 7 bytes (a data: line split anywhere), then the end, or a dropped connection."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for start in range(0, len(payload), 7):
            piece = payload[start:start + 7]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if close:
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _trickle(self, for_s: float = 15.0) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        pieces = [PLAIN[1][0], *(_chunk(_delta({"content": " word"})) for _ in range(int(for_s / 0.05)))]
        try:
            for piece in pieces:
                payload = _sse([piece], done=False)
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the reader went away
            pass
        self.close_connection = True



@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_Upstream) as base:

        def dep(name: str, model: str, **kw: Any) -> dict[str, Any]:
            return {"name": name, "model": f"openai/{model}", "api_base": base, "max_retries": 0,
                    "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}, "whole_answers_as_streams": "always",
                    **kw}

        models = [*SCRIPTS, *BROKEN, *REFUSING, "answers-whole", "error-200", "long-line", "hedged-audio"]
        rows = [dep("small", "plain", tier="small"), dep("large", "plain", tier="large"),
                dep("trickle", "trickle", timeout_s=TRICKLE_TIMEOUT_S),
                *(dep(m, m) for m in models if not m.startswith("hedged-never")),
                *(dep(f"{m}-whole", m, whole_answers_as_streams="never") for m in SCRIPTS),
                *(dep(m, m, whole_answers_as_streams="never") for m in ("hedged-never", "hedged-never-2"))]
        policies = policies_folder(Path(tmp_path_factory.mktemp("rebuilt")), {
            "saved": {"candidates": [{"single": "error-chunk"}], "fallbacks": {"error-chunk": ["plain"]},
                      "cache": {"enabled": False}},
            # Hedged, its first leg answering at once (never hedged), each a stream that breaks off.
            **{f"hedged-{m}": {"candidates": [{"single": m}], "fallbacks": {m: ["plain"]}, "hedge_after_ms": 5000,
                               "cache": {"enabled": False}} for m in ("no-finish", "error-chunk")},
            # Hedged in front of deployments that refuse to stream: found out, or configured `never`.
            **{f"hedged-{m}": {"candidates": [{"single": m}], "fallbacks": {m: [f"{m}-2"]}, "hedge_after_ms": 5000,
                               "cache": {"enabled": False}} for m in ("hedged-unverified", "hedged-never")},
            "hedged-audio": {"candidates": [{"single": "hedged-audio"}], "fallbacks": {"hedged-audio": ["plain"]},
                             "hedge_after_ms": 5000,
                             "cache": {"enabled": False}}})
        with running_gateway(create_app(parse_config({"deployments": rows}, "rebuilt answers"), policies_dir=policies,
                                        watch_policies_s=None, watch_router_s=None)) as gw:
            yield gw.base_url + "/v1"


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="sk-any", max_retries=0)


def _ask(url: str, model: str, prompt: str = "", **extra: Any) -> Any:
    extra.setdefault("extra_headers", {"x-switchyard-cache": "bypass"})
    return _client(url).chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt or f"hello {uuid.uuid4().hex}"}], **extra)


def _billed(url: str, deployment: str) -> tuple[int, int, float]:
    """The calls, completion tokens and dollars the ledger holds for `deployment`."""
    rows = httpx.get(url + "/spend", params={"group_by": "deployment"}, timeout=10).json()["data"]
    row = next((r for r in rows if r["deployment"] == deployment), None)
    return (0, 0, 0.0) if row is None else (int(row["calls"]), int(row["completion_tokens"]), float(row["cost_usd"]))


@pytest.mark.parametrize("model", list(SCRIPTS))
def test_a_rebuilt_answer_is_the_answer_the_server_gives_whole(gateway_url: str, model: str) -> None:
    n = 2 if model in ("choices", "no-usage") else 1
    prompt = "Where is the weather fine today?"  # counted alike when the server sends no usage
    whole = _ask(gateway_url, f"{model}-whole", prompt, n=n).model_dump()
    rebuilt = _ask(gateway_url, model, prompt, n=n).model_dump()
    assert rebuilt == whole
    assert rebuilt["id"] == "chatcmpl-abc" and rebuilt["system_fingerprint"] == "fp_1"


def test_a_rebuilt_refusal_keeps_its_null_content_and_its_logprobs(gateway_url: str) -> None:
    choice = _ask(gateway_url, "refusal").choices[0]
    assert choice.message.content is None and choice.message.refusal == "I can't help with that."
    assert choice.logprobs is not None and choice.logprobs.refusal is not None
    assert [t.token for t in choice.logprobs.refusal] == ["I", " can't help with that."]


def test_a_rebuilt_function_call_and_unnumbered_tool_calls_keep_every_call(gateway_url: str) -> None:
    called = _ask(gateway_url, "function-call").choices[0].message.function_call
    assert called is not None and (called.name, called.arguments) == ("weather", '{"city": "Paris"}')
    calls = _ask(gateway_url, "unnumbered-calls").choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [("a", "f", '{"x": 1}'),
                                                                            ("b", "g", '{"y": 2}')]


@pytest.mark.parametrize("model", list(BROKEN))
def test_a_stream_that_breaks_off_is_an_error_and_what_it_generated_is_billed(gateway_url: str, model: str) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(gateway_url, model)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_failed"  # type: ignore[index]
    assert f"deployment '{model}' failed" in caught.value.message
    # Its first chunks came: the upstream generated them, and bills them.
    wait_until(lambda: _billed(gateway_url, model)[0] >= 1, timeout_s=5, what="the cut call in the ledger")
    calls, completion_tokens, usd = _billed(gateway_url, model)
    assert calls == 1 and completion_tokens > 0 and usd > 0


def test_a_stream_that_breaks_off_falls_back_and_both_calls_are_billed(gateway_url: str) -> None:
    before = _billed(gateway_url, "error-chunk")[0]
    answer = _ask(gateway_url, "router/saved")
    assert answer.choices[0].message.content == "Hello there, friend"
    assert answer.choices[0].finish_reason == "stop"
    wait_until(lambda: _billed(gateway_url, "error-chunk")[0] == before + 1, timeout_s=5, what="the cut call")


@pytest.mark.parametrize("model", ["no-finish", "error-chunk"])
def test_a_hedged_whole_answer_whose_stream_breaks_off_is_answered_by_the_fallback_and_billed(
        gateway_url: str, model: str) -> None:
    """A hedged leg is judged as any whole answer read from a stream: ended before every choice finished,
    or with an error in it, it is a failure, never a half answer with finish_reason null. Nothing of it
    reached the client, so the plan's fallback answers, as it does unhedged; the cut call is billed."""
    before = _billed(gateway_url, model)[0]
    raw = httpx.post(gateway_url + "/chat/completions", timeout=10, json={
        "model": f"router/hedged-{model}", "messages": [{"role": "user", "content": "Say hello."}]})
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-switchyard-plan"] == f"single:{model}>fallback:plain"
    assert raw.json()["choices"][0]["finish_reason"] == "stop"
    wait_until(lambda: _billed(gateway_url, model)[0] == before + 1, timeout_s=5, what="the cut call")


TRICKLE_TIMEOUT_S = 0.5


def test_a_call_read_on_after_its_timeout_and_cut_at_the_drain_limit_is_billed_for_what_came(
        gateway_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway gives up on a whole answer at the deployment's timeout and reads on (`executor.drain`),
    up to the drain limit: an answer still coming then is cut, and billed for its prompt and what came
    (as a call that broke off is), not dropped unbilled."""
    monkeypatch.setattr(drain, "DRAIN_S", 1.0)
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(gateway_url, "trickle")
    assert caught.value.status_code == 504
    wait_until(lambda: _billed(gateway_url, "trickle")[0] >= 1, timeout_s=5, what="the cut call in the ledger")
    calls, completion_tokens, usd = _billed(gateway_url, "trickle")
    # read for ~1.5 s at a piece every 50 ms: far more than the pieces before the timeout
    assert calls == 1 and completion_tokens >= 15 and usd > 0


def test_a_server_that_answers_a_stream_request_whole_is_read_as_its_answer(gateway_url: str) -> None:
    assert _ask(gateway_url, "answers-whole").model_dump() == _ask(gateway_url, "plain-whole").model_dump()
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(gateway_url, "error-200")
    assert caught.value.status_code == 502
    assert "upstream sent an error" in caught.value.message


def test_one_chunk_far_over_aiohttps_line_limit_is_read(gateway_url: str) -> None:
    text = "word " * 400_000
    assert _ask(gateway_url, "long-line").choices[0].message.content == text
    streamed = _ask(gateway_url, "long-line", stream=True)  # a relayed stream reads it the same way
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text


def test_a_stream_without_usage_is_billed_on_counted_tokens_and_answered_with_them(gateway_url: str) -> None:
    """A server that ignores stream_options.include_usage (older vLLM, llama.cpp, TGI): the rebuilt
    answer has usage all the same, counted as the server's whole answer without usage is, and is billed."""
    before = _billed(gateway_url, "no-usage")
    rebuilt = _ask(gateway_url, "no-usage", n=2)
    assert rebuilt.usage is not None and rebuilt.usage.completion_tokens > 0 and rebuilt.usage.prompt_tokens > 0
    wait_until(lambda: _billed(gateway_url, "no-usage")[0] == before[0] + 1, timeout_s=5, what="the bill")
    assert _billed(gateway_url, "no-usage")[1] - before[1] == rebuilt.usage.completion_tokens


def test_a_cached_rebuilt_answer_is_served_again_as_the_client_first_got_it(gateway_url: str) -> None:
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": f"refuse {uuid.uuid4().hex}"}], "temperature": 0}
    client = _client(gateway_url)
    first = client.chat.completions.with_raw_response.create(model="refusal", **ask)
    again = client.chat.completions.with_raw_response.create(model="refusal", **ask)
    assert (first.headers["x-switchyard-cache"], again.headers["x-switchyard-cache"]) == ("miss", "hit")
    fresh = {"id", "created"}  # a hit is a completion of its own (`cache._served_anew`)
    assert again.parse().model_dump(exclude=fresh) == first.parse().model_dump(exclude=fresh)
    # A streaming client served the cached answer gets the same refusal, logprobs and fingerprint.
    chunks = list(client.chat.completions.create(model="refusal", stream=True, **ask))
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices) == "I can't help with that."
    assert all(c.choices[0].delta.content is None for c in chunks if c.choices)
    assert [t.token for c in chunks if c.choices and c.choices[0].logprobs
            for t in c.choices[0].logprobs.refusal or ()] == ["I", " can't help with that."]
    assert {c.system_fingerprint for c in chunks} == {"fp_1"}


@pytest.mark.parametrize("model", ["unverified", "no-stream-options"])
def test_a_deployment_that_refuses_to_stream_is_asked_for_whole_answers_whole(
        gateway_url: str, model: str, caplog: pytest.LogCaptureFixture) -> None:
    """A stream the client never asked for, refused for streaming: the same call is asked for whole, and
    so is every whole answer after it, with one warning naming the setting that makes it permanent."""
    with caplog.at_level(logging.WARNING, logger="switchyard.upstream"):
        for _ in range(2):
            answer = _ask(gateway_url, model)
            assert answer.choices[0].message.content == "Hello there, friend"
            assert answer.choices[0].finish_reason == "stop"
    assert SEEN[model] == [True, False, False]  # refused once as a stream, then asked whole
    told = [r for r in caplog.records if getattr(r, "event", None) == "whole_answers_unstreamed"]
    assert len(told) == 1 and getattr(told[0], "deployment", None) == model
    assert "whole_answers_as_streams: never" in told[0].getMessage()
    # A stream the client asked for is its own: refused, it is the client's answer, never asked whole.
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(gateway_url, model, stream=True)
    # what the upstream named, where it named it in an OpenAI error object
    assert caught.value.code == ("unsupported_value" if model == "unverified" else "upstream_rejected")
    assert SEEN[model] == [True, False, False, True]


def test_a_hedged_whole_answer_from_deployments_that_refuse_to_stream_is_asked_for_whole(gateway_url: str) -> None:
    """Hedging reads its legs as streams, which is the gateway's idea, not the client's: a deployment that
    refuses them answers the request whole, unhedged, and every whole answer after it; one configured
    `whole_answers_as_streams: never` is never asked for a stream at all."""
    for _ in range(2):
        answer = _ask(gateway_url, "router/hedged-hedged-unverified")
        assert answer.choices[0].message.content == "Hello there, friend"
    # refused as a stream by both legs, the answer asked whole; the next asked whole at once
    assert SEEN["hedged-unverified"] == [True, False, False]
    assert SEEN["hedged-unverified-2"] == [True]
    answer = _ask(gateway_url, "router/hedged-hedged-never")
    assert answer.choices[0].message.content == "Hello there, friend"
    assert SEEN["hedged-never"] == [False] and "hedged-never-2" not in SEEN


def test_a_hedged_whole_answer_with_audio_output_is_asked_for_whole(gateway_url: str) -> None:
    """Audio output streams only as pcm16, whatever format a whole answer asks for: a hedged whole answer
    with audio output was still raced as streams; it is asked for whole, unhedged, as every such answer is."""
    answer = _ask(gateway_url, "router/hedged-audio", modalities=["text", "audio"],
                  audio={"voice": "alloy", "format": "mp3"})
    assert answer.choices[0].message.content == "Hello there, friend"
    assert SEEN["hedged-audio"] == [False]


def test_a_refusal_of_anything_else_in_a_streamed_whole_answer_is_not_asked_again(gateway_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(gateway_url, "bad-temperature")
    assert "temperature" in caught.value.message
    assert SEEN["bad-temperature"] == [True]
