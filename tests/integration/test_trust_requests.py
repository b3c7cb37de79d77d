"""What a client sends is checked before anything is forwarded or reused: strict request types,
request headers, and cache entries that answer exactly the question asked."""

from __future__ import annotations

import gzip
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from tests.integration.conftest import sim_config
from tests.support.processes import Simulator, running_gateway

HI = [{"role": "user", "content": "hi"}]


def _post(base_url: str, body: dict[str, Any] | bytes, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(base_url + "/chat/completions", content=content,
                      headers={"content-type": "application/json", **headers}, timeout=30)


def _assert_400_naming(resp: httpx.Response, param: str) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param, error
    assert "Traceback" not in resp.text


# --- strict body types --------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", "5"),           # was a 500 TypeError
    ("stream", "false"),           # was an SSE stream
    ("n", 2.0),                    # OpenAI rejects a decimal number for an integer
    ("temperature", "0"),
    ("top_p", "1"),
    ("max_completion_tokens", 5.0),
    ("seed", "42"),
    ("logprobs", "true"),
    ("top_logprobs", 2.5),
    ("presence_penalty", 3),
    ("frequency_penalty", "0.5"),
    ("stop", 7),
    ("response_format", "json_object"),
    ("tools", {"type": "function"}),
    ("user", 12),
    ("stream_options", {"include_usage": "yes"}),
])
def test_a_wrongly_typed_field_is_a_400_naming_it_not_coerced(base_url: str, simulator: Simulator,
                                                                field: str, value: Any) -> None:
    simulator.reset()
    resp = _post(base_url, {"model": "small", "messages": HI, field: value})
    param = "stream_options.include_usage" if field == "stream_options" else field
    _assert_400_naming(resp, param)
    assert simulator.stats()["sim-small"]["requests"] == 0  # refused before any upstream call


@pytest.mark.parametrize(("message", "param"), [
    ({"role": "user", "content": 5}, "messages[0].content"),
    ({"role": "user", "content": [{"text": "no type"}]}, "messages[0].content[0].type"),
    ({"role": "user", "content": "hi", "name": 3}, "messages[0].name"),
    ({"role": "robot", "content": "hi"}, "messages[0].role"),
])
def test_a_malformed_message_is_a_400_naming_the_message_field(base_url: str, message: dict[str, Any],
                                                              param: str) -> None:
    _assert_400_naming(_post(base_url, {"model": "small", "messages": [message]}), param)


def test_stream_false_as_a_string_is_refused_not_streamed(base_url: str) -> None:
    resp = _post(base_url, {"model": "small", "messages": HI, "stream": "false"})
    assert resp.headers["content-type"].startswith("application/json")
    _assert_400_naming(resp, "stream")


def test_well_typed_requests_still_pass_with_unknown_fields_kept(base_url: str) -> None:
    body = {"model": "small", "messages": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 16, "n": 1, "temperature": 0.5, "top_p": 1, "seed": 7, "stop": ["\n\n"],
            "presence_penalty": -1.5, "frequency_penalty": 0, "logprobs": False, "stream": False,
            "response_format": {"type": "text"}, "user": "u-1", "metadata": {"team": "a"},
            "top_k": 40, "repetition_penalty": 1.1}
    resp = _post(base_url, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    completion = client.chat.completions.create(model="small", messages=HI, max_tokens=8, temperature=0,
                                                seed=1, extra_body={"top_k": 5})
    assert completion.choices[0].message.content


def test_the_openai_sdk_gets_a_bad_request_error_for_a_string_number(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=HI, extra_body={"max_tokens": "5"})
    assert info.value.param == "max_tokens"


@pytest.mark.parametrize(("field", "value"), [
    ("extra_body", {"max_tokens": 4096, "n": 16}),  # litellm merged it over the priced max_tokens and n
    ("additional_drop_params", ["max_tokens"]),      # litellm dropped the output limit
    ("drop_params", True),
    ("n_predict", 4096),                             # llama.cpp's limit wins over max_tokens
    ("best_of", 8),                                  # vLLM: eight samples generated for one choice
    ("n_cmpl", 8),                                   # llama.cpp's number of completions
    ("chat_template", "{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}"),  # vLLM: a 100,000× prompt
    ("max_tokens", 4096),  # beside max_completion_tokens 1: servers that read max_tokens alone generate 4096
])
def test_a_field_that_would_generate_past_what_was_priced_is_a_400_naming_it(base_url: str, simulator: Simulator,
                                                                            field: str, value: Any) -> None:
    simulator.reset()
    limit = "max_completion_tokens" if field == "max_tokens" else "max_tokens"
    resp = _post(base_url, {"model": "small", "messages": HI, limit: 1, field: value})
    _assert_400_naming(resp, field)
    assert resp.json()["error"]["code"] == ("invalid_value" if field == "max_tokens" else "unsupported_parameter")
    assert simulator.stats()["sim-small"]["requests"] == 0
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:  # the SDK's extra_body lands at the top level
        client.chat.completions.create(model="small", messages=HI, max_tokens=1, extra_body={"num_predict": 4096})
    assert info.value.param == "num_predict"


def test_stream_options_without_stream_is_a_400_naming_it_as_openai_answers(base_url: str,
                                                                           simulator: Simulator) -> None:
    simulator.reset()
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    for stream in (False, None):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="small", messages=HI, stream_options={"include_usage": True},
                                           **({} if stream is None else {"stream": stream}))
        assert info.value.param == "stream_options"
    assert simulator.stats()["sim-small"]["requests"] == 0
    chunks = list(client.chat.completions.create(model="small", messages=HI, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None


def test_a_tool_message_without_its_call_id_is_a_400_naming_it_as_openai_answers(base_url: str,
                                                                              simulator: Simulator) -> None:
    """It was forwarded: a provider that refuses it (OpenAI) was asked after the price was held, and one that
    does not answered a conversation whose tool result belonged to no call."""
    simulator.reset()
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    asked = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                     "function": {"name": "weather",
                                                                                  "arguments": "{}"}}]},
             {"role": "tool", "content": "sunny"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=asked)  # type: ignore[arg-type]
    assert info.value.param == "messages[2].tool_call_id"
    assert simulator.stats()["sim-small"]["requests"] == 0
    asked[2]["tool_call_id"] = "call_1"
    assert client.chat.completions.create(model="small", messages=asked).choices  # type: ignore[arg-type]


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": "user", "content": None},
                                     {"role": "system", "content": None},
                                     {"role": "tool", "tool_call_id": "call_1"}])
def test_a_message_without_content_is_a_400_naming_it_as_openai_answers(
        base_url: str, simulator: Simulator, message: dict[str, Any]) -> None:
    """A user, system, developer or tool message without content was forwarded: the simulated model answered a
    turn that asked nothing, and a provider that refuses it (OpenAI) was asked after the price was held."""
    simulator.reset()
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    asked = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, message]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=asked)  # type: ignore[arg-type]
    assert info.value.param == "messages[2].content" and info.value.code == "missing_field"
    assert simulator.stats().get("sim-small", {}).get("requests", 0) == 0
    tool_call = {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    asked = [{"role": "user", "content": "hi"}, tool_call, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    assert client.chat.completions.create(model="small", messages=asked).choices  # type: ignore[arg-type]


@pytest.mark.parametrize("role", ["user", "system", "tool"])
def test_a_message_whose_content_is_an_empty_array_is_a_400_as_openai_answers(
        base_url: str, simulator: Simulator, role: str) -> None:
    """`content: []` was forwarded: the simulated model answered a turn that asked nothing, and OpenAI, which
    answers 400 empty_array, was asked after the price was held."""
    simulator.reset()
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    asked = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": role, "content": [], **({"tool_call_id": "call_1"} if role == "tool" else {})}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=asked)  # type: ignore[arg-type]
    assert info.value.param == "messages[2].content" and info.value.code == "empty_array"
    assert simulator.stats().get("sim-small", {}).get("requests", 0) == 0


@pytest.mark.parametrize("part", [{"type": "text", "text": 5}, {"type": "text", "text": {"a": "b"}},
                                  {"type": "refusal", "refusal": ["no"]}])
def test_a_text_part_whose_text_is_no_string_is_a_400_as_openai_answers(
        base_url: str, simulator: Simulator, part: dict[str, Any]) -> None:
    """Types are checked strictly, as OpenAI checks them: a text part's number or object was forwarded, and the
    simulated model answered it as text."""
    simulator.reset()
    resp = _post(base_url, {"model": "small", "messages": [{"role": "user", "content": [part]}]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages[0].content[0]", resp.text
    assert "to be a string" in resp.json()["error"]["message"]
    assert simulator.stats().get("sim-small", {}).get("requests", 0) == 0


# --- how much a body may hold ---------------------------------------------------------------------

PART = {"type": "text", "text": "a"}
CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": HI * 2049}, "messages"),  # tens of thousands of these held the event loop ~0.3 s
    ({"messages": [{"role": "user", "content": [PART] * 4097}]}, "messages"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [CALL] * 2}] * 2048 + HI}, "messages"),
    ({"messages": HI, "tools": [TOOL] * 129}, "tools"),
    ({"messages": HI, "functions": [{"name": "f"}] * 129}, "functions"),
])
def test_more_messages_parts_or_tools_than_the_bounds_is_a_400_before_validation(
        base_url: str, simulator: Simulator, body: dict[str, Any], param: str) -> None:
    simulator.reset()
    resp = _post(base_url, {"model": "small", **body})
    _assert_400_naming(resp, param)
    assert resp.json()["error"]["code"] == "array_above_max_length"
    assert simulator.stats()["sim-small"]["requests"] == 0


def test_a_request_at_the_bounds_is_served(base_url: str) -> None:
    many = [{"role": "user", "content": [PART] * 2}] * 2048  # 2048 messages, 4096 parts
    resp = _post(base_url, {"model": "small", "messages": many, "max_tokens": 5, "tools": [TOOL] * 128})
    assert resp.status_code == 200, resp.text
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=HI * 2049, max_tokens=5)  # type: ignore[arg-type]
    assert info.value.param == "messages" and "2048" in info.value.message


def test_the_bounds_are_configurable() -> None:
    from gateway.api.schemas import BodyBounds, validate_chat
    from gateway.config import parse_config
    from gateway.errors import InvalidRequest

    config = parse_config({"deployments": [{"name": "small", "model": "openai/m"}], "max_messages": 3,
                           "max_message_parts": 1, "max_tools": 2}, "test config")
    bounds = BodyBounds(config.max_messages, config.max_message_parts, config.max_tools)
    validate_chat({"model": "small", "messages": HI * 3}, bounds=bounds)
    with pytest.raises(InvalidRequest, match="at most 3 messages, got 4"):
        validate_chat({"model": "small", "messages": HI * 4}, bounds=bounds)
    with pytest.raises(InvalidRequest, match="at most 1 content parts"):
        validate_chat({"model": "small", "messages": [{"role": "user", "content": [PART] * 2}]}, bounds=bounds)
    with pytest.raises(InvalidRequest, match="at most 2 tools"):
        validate_chat({"model": "small", "messages": HI, "tools": [TOOL] * 3}, bounds=bounds)


# --- request headers ----------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["x-switchyard-max-cost-usd", "x-switchyard-latency-slo-ms"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "NaN", "cheap", "1_000"])
def test_a_cap_header_that_is_not_a_positive_finite_number_is_a_400(base_url: str, header: str,
                                                                   value: str) -> None:
    _assert_400_naming(_post(base_url, {"model": "small", "messages": HI}, **{header: value}), header)


def test_an_unknown_cache_directive_is_a_400(base_url: str) -> None:
    resp = _post(base_url, {"model": "small", "messages": HI}, **{"x-switchyard-cache": "forever"})
    _assert_400_naming(resp, "x-switchyard-cache")
    for known in ("force", "bypass", "no-store", "Bypass"):
        ok = _post(base_url, {"model": "small", "messages": HI}, **{"x-switchyard-cache": known})
        assert ok.status_code == 200, (known, ok.text)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP"])
def test_a_compressed_body_is_a_415_naming_its_encoding_not_invalid_json(base_url: str, encoding: str) -> None:
    """Nothing decodes a compressed body: it was read as it came and refused as JSON that is not UTF-8,
    a 400 that blamed JSON the client wrote correctly."""
    packed = gzip.compress(orjson.dumps({"model": "small", "messages": HI}))
    resp = _post(base_url, packed, **{"content-encoding": encoding})
    assert resp.status_code == 415, resp.text
    assert resp.json()["error"]["code"] == "unsupported_content_encoding"
    assert encoding.lower() in resp.json()["error"]["message"]
    assert resp.headers["accept-encoding"] == "identity"


def test_a_body_declared_identity_encoded_is_served(base_url: str) -> None:
    resp = _post(base_url, {"model": "small", "messages": HI}, **{"content-encoding": "identity"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(("method", "path"), [("POST", "/chat/completions/"), ("POST", "/route/"),
                                             ("GET", "/spend/")])
def test_a_trailing_slash_is_a_404_naming_the_path_not_a_redirect_to_the_host_header(
        base_url: str, method: str, path: str) -> None:
    """A trailing slash was a 307 with an empty body to a URL built from the request's Host header (plain
    http behind a TLS proxy, so a client following it sent its prompt in clear). It is a 404 in the error
    envelope, saying the path without the slash, as OpenAI answers."""
    resp = httpx.request(method, base_url + path, content=orjson.dumps({"model": "small", "messages": HI}),
                         headers={"host": "elsewhere.example", "content-type": "application/json"},
                         follow_redirects=False, timeout=30)
    assert resp.status_code == 404, (resp.status_code, resp.headers)
    assert "location" not in resp.headers
    error = resp.json()["error"]
    assert error["code"] == "not_found"
    assert f"the path is /v1{path.rstrip('/')}, without the trailing slash" in error["message"]


def test_a_sane_request_id_is_echoed(base_url: str) -> None:
    resp = _post(base_url, {"model": "small", "messages": HI}, **{"x-request-id": "trace-abc_123:4"})
    assert resp.headers["x-request-id"] == "trace-abc_123:4"


@pytest.mark.parametrize("given", ["x" * 129, "abc\x9b[2Jdef", "tab\there", "caf\u00e9"])
def test_an_oversized_or_unprintable_request_id_is_replaced_not_echoed(base_url: str, given: str) -> None:
    resp = httpx.post(base_url + "/chat/completions", json={"model": "small", "messages": HI},
                      headers=[("x-request-id", given.encode("latin-1"))], timeout=30)
    assert resp.status_code == 200
    echoed = resp.headers["x-request-id"]
    assert echoed != given and echoed.startswith("req_") and len(echoed) <= 128


def test_an_error_response_carries_the_replacement_request_id_too(base_url: str) -> None:
    resp = httpx.post(base_url + "/chat/completions", json={"model": "small", "messages": HI, "n": 2.0},
                      headers=[("x-request-id", b"y" * 500)], timeout=30)
    assert resp.status_code == 400
    assert resp.headers["x-request-id"].startswith("req_")


# --- the cache answers the question asked -------------------------------------------------------

def _cached(base_url: str, **extra: Any) -> str:
    resp = _post(base_url, {"model": "small", "temperature": 0, **extra})
    assert resp.status_code == 200, resp.text
    return resp.headers["x-switchyard-cache"]


def test_cached_answers_are_not_shared_across_provider_parameters(base_url: str) -> None:
    messages = [{"role": "user", "content": f"cache probe {uuid.uuid4().hex}"}]
    assert _cached(base_url, messages=messages, top_k=5) == "miss"
    assert _cached(base_url, messages=messages, top_k=5) == "hit"
    assert _cached(base_url, messages=messages, top_k=40) == "miss"
    assert _cached(base_url, messages=messages, top_k=5, reasoning_effort="high") == "miss"
    assert _cached(base_url, messages=messages, top_k=5, user="someone-else", stream=False) == "hit"


def test_the_body_that_flows_on_carries_the_validated_values_and_unknown_fields_as_sent() -> None:
    from gateway.api.schemas import validate_chat

    sent = {"model": "small", "messages": [{"role": "user", "content": "hi", "x_tag": 1}], "temperature": 0,
            "top_k": "5", "guided_json": {"type": "object"}}
    body = validate_chat(sent)
    assert body["temperature"] == 0  # a JSON integer is a valid number; strict mode converts nothing
    assert body["top_k"] == "5" and body["guided_json"] == {"type": "object"}  # not ours to judge
    assert body["messages"] == [{"role": "user", "content": "hi", "x_tag": 1}]


def test_an_edited_policy_does_not_serve_answers_cached_under_its_old_version(simulator: Simulator,
                                                                               tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("candidates:\n  - single: small\n  - single: large\nobjective:\n  value_usd: 0.002\n")
    app = create_app(sim_config(simulator.url, default_policy="p"), policies_dir=tmp_path, watch_policies_s=0.05)
    body = {"model": "router/p", "temperature": 0, "messages": [{"role": "user", "content": "what is 2+2?"}]}
    with running_gateway(app) as gw:
        url = gw.base_url + "/v1"
        assert _post(url, body).headers["x-switchyard-cache"] == "miss"
        assert _post(url, body).headers["x-switchyard-cache"] == "hit"
        path.write_text("candidates:\n  - single: small\n  - single: large\nobjective:\n  value_usd: 0.2\n")
        os.utime(path, (time.time() + 2, time.time() + 2))
        version = app.state.services.policies.get("p").version
        deadline = time.monotonic() + 10
        while app.state.services.policies.get("p").version == version and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _post(url, body).headers["x-switchyard-cache"] == "miss"
        assert _post(url, body).headers["x-switchyard-cache"] == "hit"


# --- the HTTP server itself ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(simulator: Simulator) -> Any:
    """The gateway under the server `switchyard serve` builds (its uvicorn settings and protocol)."""
    import asyncio
    import threading

    import uvicorn

    from gateway.cli import _uvicorn_config
    from tests.support.processes import free_port, wait_until

    port = free_port()
    server = uvicorn.Server(_uvicorn_config(create_app(sim_config(simulator.url)), "127.0.0.1", port, "warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=60, what="gateway")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


def test_a_content_length_of_more_digits_than_int_reads_is_not_a_500(served: str) -> None:
    """A Content-Length of 5,001 digits (leading zeros, then 5) went to int(), which refuses more than 4,300
    digits: a 500. It is the number 5: the five bytes sent are read, and are not JSON."""
    import socket

    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"0" * 5000 +
                     b"5\r\nConnection: close\r\n\r\nhello")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"invalid_request_error" in answer


@pytest.mark.parametrize("head", [b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-policy: a\x01b\r\n",
                                  b"POST /v1/chat/comp letions HTTP/1.1\r\nHost: x\r\n"])
def test_a_request_http_cannot_parse_is_a_400_in_the_error_envelope(served: str, head: bytes) -> None:
    """A head the HTTP parser refuses (a control character in a header, a space in the path) was answered
    by uvicorn in plain text, "Invalid HTTP request received.": the one 4xx without the error envelope."""
    import socket

    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + b"Content-Length: 2\r\n\r\n{}")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in status, answer[:300]
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("shape", ["many headers", "one endless header"])
def test_headers_without_end_get_a_431_not_the_workers_memory(served: str, shape: str) -> None:
    """uvicorn kept every header sent, without a limit: 200 MB of headers grew the worker ~220 MB,
    from a caller without a key. Now a head over 64 KiB is a 431 and the connection is closed."""
    import socket

    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        if shape == "one endless header":
            sock.sendall(b"x-filler: ")
        answer = b""
        try:
            for _ in range(200):  # up to 2 MB
                sock.sendall(b"a" * 10_000 if shape == "one endless header" else (b"x-a: " + b"a" * 993 + b"\r\n") * 10)
        except OSError:
            pass  # closed on us: the answer is waiting
        sock.settimeout(5)
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:200]
    assert orjson.loads(body)["error"]["code"] == "headers_too_large"


def test_ordinary_headers_are_served(served: str) -> None:
    resp = httpx.get(served + "/healthz", headers={f"x-h{i}": "v" * 500 for i in range(40)}, timeout=10)
    assert resp.status_code == 200


def test_a_head_that_never_ends_is_a_408_not_a_connection_held_for_ever(served: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn did not time a request's head out: a connection sending a byte now and then (or nothing)
    was held for ever, and enough of them use up the worker's file descriptors. Now the head has
    `HEAD_TIMEOUT_S` (10 s; shortened here) to arrive, else a 408 and the connection is closed."""
    import socket

    from gateway.api import http_limits

    monkeypatch.setattr(http_limits, "HEAD_TIMEOUT_S", 0.5)
    port = int(served.rsplit(":", 1)[1])
    for partial in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b""):  # a head begun, and nothing at all
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(partial)
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert time.monotonic() - started < 3
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:200]
        assert orjson.loads(body)["error"]["code"] == "request_timeout"
    assert httpx.get(served + "/healthz", timeout=10).status_code == 200  # a prompt head is served


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
def test_a_body_sent_a_byte_at_a_time_is_a_408_not_a_request_held_for_ever(
        served: str, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Once a request's head is in (its key checked), its body had no time limit: a caller sending a
    byte now and then held the request, and its handler, for ever. Now the whole body has
    `BODY_TIMEOUT_S` (30 s; shortened here) to arrive, however it trickles, else a 408 and the
    connection is closed."""
    import socket

    from gateway.api import http_limits

    monkeypatch.setattr(http_limits, "BODY_TIMEOUT_S", 0.5)
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     "content-length: 100000\r\n\r\n{".encode())
        started, answer = time.monotonic(), b""
        sock.settimeout(0.1)
        while time.monotonic() - started < 5:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.sendall(b" ")  # a byte every 0.1 s: never idle long, never done
                continue
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert orjson.loads(body)["error"]["code"] == "request_timeout"
    assert elapsed < 3  # answered and closed, not held until the client stopped
    assert _post(served + "/v1", {"model": "small", "messages": HI}).status_code == 200  # a prompt body is served


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route", "/v1/feedback"])
def test_a_client_that_leaves_while_sending_its_body_is_not_logged_as_a_gateway_error(
        served: str, caplog: pytest.LogCaptureFixture, path: str) -> None:
    """A client that closed its connection half-way through its body (a cancelled upload, a killed
    process) was logged as "unexpected error" with a traceback at ERROR, each time, as if the gateway had
    failed. It is the client's doing: no error is logged, and the gateway serves on."""
    import logging
    import socket

    port = int(served.rsplit(":", 1)[1])
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                         "content-length: 1000\r\n\r\n{\"model\": ".encode())
            time.sleep(0.2)  # the body is being read when the client leaves
        time.sleep(0.5)
        assert _post(served + "/v1", {"model": "small", "messages": HI}).status_code == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_empty_lines_between_requests_do_not_keep_a_connection_for_ever(served: str) -> None:
    """After an answer, a connection is idle for the keep-alive timeout (5 s). Empty lines, which HTTP lets a
    client send before a request line, cancelled that timeout and nothing set it again: a client sending
    "\\r\\n" every second held the connection (a file descriptor of the worker's) for ever."""
    import socket

    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.settimeout(0.5)
        started, closed = time.monotonic(), False
        while not closed and time.monotonic() - started < 12:
            try:
                sock.sendall(b"\r\n")
                closed = sock.recv(1024) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed
        assert time.monotonic() - started < 8


def test_a_request_http_cannot_parse_behind_a_whole_one_is_refused_after_its_answer(
        served: str, caplog: pytest.LogCaptureFixture) -> None:
    """A request arriving whole (here a POST without a length: its body is none) followed by bytes HTTP cannot
    parse: the 400 for those was written at once, inside the first request's answer still to come, and the
    connection half-closed, so the first answer's write failed and was logged as an unexpected error with a
    traceback. The first request is answered, then the 400, then the connection is closed."""
    import logging
    import socket

    port = int(served.rsplit(":", 1)[1])
    with caplog.at_level(logging.INFO), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\r\n"
                     b'{"model": "small", "messages": []}')
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        time.sleep(0.2)
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 400"), answer[:300]
    body, _, second = rest.partition(b"HTTP/1.1 ")
    assert orjson.loads(body)["error"]["code"] == "invalid_json"  # the first request: an empty body
    assert second.startswith(b"400") and b'"invalid_http_request"' in second
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def _trickle(sock: Any, stop: Any, every_s: float = 0.0) -> None:
    """Send a byte every `every_s` (0: byte after byte) until told to stop or refused."""
    while not stop.wait(every_s):
        try:
            sock.send(b" ")
        except OSError:
            return


@pytest.mark.parametrize(("path", "declared", "status", "code"), [
    ("/v1/chat/completions", 2_000_000, 408, "request_timeout"), ("/v1/route", 2_000_000, 408, "request_timeout"),
    ("/v1/chat/completions", 10_000_000, 413, "request_too_large")])
def test_a_body_still_arriving_when_it_is_refused_does_not_cost_its_client_the_answer(
        served: str, monkeypatch: pytest.MonkeyPatch, path: str, declared: int, status: int, code: str) -> None:
    """The connection was closed at once after a 408 while the client was still sending its body: the
    bytes left unread made the kernel reset it, and the client often lost the answer (or read it and
    then a reset instead of an end). Now the connection is half-closed, what still arrives is dropped,
    and it is closed once quiet: the client reads the whole answer and then a clean end. A 413
    for a body declared too large kept the connection open, reading and dropping the whole body; now
    it is closed the same way."""
    import socket
    import threading

    from gateway.api import http_limits

    monkeypatch.setattr(http_limits, "BODY_TIMEOUT_S", 0.3)
    port = int(served.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                         f"content-length: {declared}\r\n\r\n{{".encode())
            stop = threading.Event()
            sender = threading.Thread(target=_trickle, args=(sock, stop))
            sender.start()
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            finally:
                stop.set()
                sender.join()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
        assert orjson.loads(body)["error"]["code"] == code


def test_a_413_reaches_a_client_that_sends_its_whole_large_body_before_reading(served: str) -> None:
    """Most clients send the whole body before they read. Closed at once (or lingering without reading,
    uvicorn having paused reads while the body was buffered), the connection was reset under a client
    still sending and it never saw its 413; now what arrives after the answer is read and dropped."""
    import socket

    port = int(served.rsplit(":", 1)[1])
    size = 20_000_000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     f"content-length: {size}\r\n\r\n".encode())
        part = b" " * 1_000_000
        for _ in range(size // len(part)):
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert orjson.loads(body)["error"]["code"] == "request_too_large"


def test_a_client_gone_before_the_connection_is_half_closed_is_closed_not_leaked() -> None:
    """Half-closing the connection of a client that has already reset it raises: the error escaped into
    uvicorn (logged as the application's) and the connection was never closed."""
    import asyncio

    from gateway.api.http_limits import BoundedHttpToolsProtocol

    class Reset:
        closed = False

        def can_write_eof(self) -> bool:
            return True

        def is_closing(self) -> bool:
            return self.closed

        def write_eof(self) -> None:
            raise OSError(107, "Transport endpoint is not connected")

        def close(self) -> None:
            self.closed = True

    async def run() -> Reset:
        protocol = BoundedHttpToolsProtocol.__new__(BoundedHttpToolsProtocol)
        protocol._in_message = True  # a request still arriving
        transport = Reset()
        protocol._close(transport)  # type: ignore[arg-type]
        return transport

    assert asyncio.run(run()).closed


def _answers_unread(status: int, close: bool = False) -> Any:
    """An ASGI app answering `status` ("no") to every request without reading its body, as a route that
    refuses on the head does (a 401, or a 413 with `connection: close`)."""
    headers = [(b"content-length", b"2"), *([(b"connection", b"close")] if close else [])]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"no"})
    return app


def test_a_lingering_connection_does_not_hold_up_the_servers_shutdown() -> None:
    """A refused client that keeps sending kept its connection lingering for up to 30 s, and the server's
    shutdown waits for its connections: stopping took until uvicorn's graceful timeout (10 s), holding up
    the lifespan's shutdown (which flushes the ledger). Now a stopping server closes lingering connections
    at once and starts no new linger."""
    import socket
    import threading

    from tests.support.processes import GatewayServer

    server = GatewayServer(_answers_unread(413, close=True)).start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 1000000\r\n\r\n{")
        answer = b""
        while chunk := sock.recv(65536):  # the answer, then the end of the half-closed connection
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 413")
        stop = threading.Event()
        sender = threading.Thread(target=_trickle, args=(sock, stop, 0.2))
        sender.start()  # still sending, never 2 s quiet: the connection lingers
        time.sleep(0.5)
        started = time.monotonic()
        server.stop()
        stopped = time.monotonic() - started
        stop.set()
        sender.join()
    assert not server.thread.is_alive() and stopped < 5, stopped


def test_a_request_answered_before_its_body_arrived_has_its_connection_ended() -> None:
    """An answer given before the body is read (a 401 for a missing key) kept the connection alive; the
    rest of the body then cancelled uvicorn's keep-alive timeout read by read and nothing set it again, so a
    caller without a key held the connection for ever by trickling a body nobody reads. Now the connection
    is closed (lingering): the client reads the answer, then the end of the connection."""
    import socket

    from tests.support.processes import GatewayServer

    server = GatewayServer(_answers_unread(401)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 1000000\r\n\r\n{")
            answer = b""
            sock.settimeout(3)
            while chunk := sock.recv(65536):  # before: no end, and a timeout here
                answer += chunk
                sock.sendall(b" ")  # the body goes on arriving
        assert answer.startswith(b"HTTP/1.1 401") and answer.endswith(b"no")
    finally:
        server.stop()


def test_a_request_answered_before_its_body_arrived_says_its_connection_closes(simulator: Simulator) -> None:
    """The connection of an answer given before the body arrived (a 401 for a revoked key, a 429 over the
    tenant's requests in flight) is closed, and the answer must say so: without `connection: close` a
    client's pool took it as kept alive and sent its next request into the closed connection, which
    failed with "Server disconnected without sending a response"."""
    import socket

    from tests.support.processes import GatewayServer

    tenants = [{"name": "t", "api_key_sha256": hash_key("sk-t")}]
    server = GatewayServer(create_app(sim_config(simulator.url, tenants=tenants))).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nauthorization: Bearer sk-nobody\r\n"
                         b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        server.stop()
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401") and b"\r\nconnection: close" in head


def test_an_answer_given_after_its_body_arrived_keeps_the_connection(served: str) -> None:
    import socket

    port = int(served.rsplit(":", 1)[1])
    body = b'{"model": "auto", "messages": []}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % len(body))
        time.sleep(0.1)  # the body in a packet of its own, before the answer
        sock.sendall(body)
        answer = sock.recv(65536)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" not in answer.split(b"\r\n\r\n", 1)[0]
    assert answer.count(b"HTTP/1.1 200") == 1


def test_a_request_whose_head_is_arriving_behind_an_answered_one_is_served(served: str) -> None:
    """Closing a connection whose request was answered before it all arrived must not close it under the
    next request, whose head has begun to arrive behind a whole one."""
    import socket

    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHo")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        sock.sendall(b"st: x\r\nconnection: close\r\n\r\n")
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200") == 2
