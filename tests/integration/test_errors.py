"""Bad input and failing upstreams get OpenAI-style errors with the right status, never a stack trace."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.processes import Simulator


def _post(base_url: str, content: bytes | str, **headers: str) -> httpx.Response:
    return httpx.post(base_url + "/chat/completions", content=content,
                      headers={"content-type": "application/json", **headers}, timeout=30)


def _assert_openai_error(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["message"] and error["type"]
    assert "Traceback" not in resp.text
    if code:
        assert error["code"] == code
    return error


def test_malformed_json_is_400(base_url: str) -> None:
    _assert_openai_error(_post(base_url, b'{"model": "auto", "messages": ['), 400, "invalid_json")


def test_missing_messages_is_400_naming_the_field(base_url: str) -> None:
    error = _assert_openai_error(_post(base_url, '{"model": "auto"}'), 400, "missing_field")
    assert error["param"] == "messages"


def test_empty_messages_is_400(base_url: str) -> None:
    _assert_openai_error(_post(base_url, '{"model": "auto", "messages": []}'), 400)


def test_unknown_model_is_404(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"


def test_body_over_the_limit_is_413(base_url: str) -> None:
    huge = '{"model": "auto", "messages": [{"role": "user", "content": "' + "x" * (2 * 1024 * 1024 + 10) + '"}]}'
    _assert_openai_error(_post(base_url, huge), 413, "request_too_large")


def test_upstream_that_always_fails_is_502(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    assert info.value.type == "upstream_error"


def test_upstream_that_times_out_is_504(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 504


def test_retries_a_flaky_upstream_until_it_answers(base_url: str, simulator: Simulator) -> None:
    simulator.reset()
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    completion = client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content
    assert simulator.stats()["sim-flaky"]["requests"] == 3  # two failures, then the answer


def test_throttled_upstream_is_retried_then_502(base_url: str, simulator: Simulator) -> None:
    simulator.reset()
    resp = _post(base_url, '{"model": "throttled", "messages": [{"role": "user", "content": "hi"}]}')
    _assert_openai_error(resp, 502)
    assert simulator.stats()["sim-throttled"]["requests"] == 2  # max_retries=1


def test_falls_back_when_the_primary_fails(base_url: str) -> None:
    raw = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
        model="router/failover", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-switchyard-model"] == "small"
    assert raw.headers["x-switchyard-plan"] == "single:broken>fallback:small"


def test_unknown_route_is_an_openai_style_404(base_url: str) -> None:
    _assert_openai_error(httpx.get(base_url + "/nothing-here"), 404)
    # "Not Found" alone read, to the SDK's embeddings.create, as though its model were what was not found
    with pytest.raises(openai.NotFoundError) as info:
        openai.OpenAI(base_url=base_url, api_key="x", max_retries=0).embeddings.create(model="auto", input="hi")
    assert info.value.message.endswith("Invalid URL (POST /v1/embeddings)") and info.value.code == "not_found"


def test_a_method_a_route_does_not_take_is_a_405_naming_the_one_it_does(base_url: str) -> None:
    """A 405 must say which methods the path takes (`Allow`, RFC 9110): it had no such header, and its
    message was only "Method Not Allowed"."""
    resp = httpx.get(base_url + "/chat/completions", timeout=10)
    error = _assert_openai_error(resp, 405, "http_error")
    assert resp.headers["allow"] == "POST"
    assert error["message"] == "GET /v1/chat/completions is not allowed: use POST"
    keys = httpx.put(base_url.removesuffix("/v1") + "/admin/keys", timeout=10)  # two routes: POST and GET
    assert keys.status_code == 405 and set(keys.headers["allow"].split(", ")) == {"POST", "GET", "HEAD"}


def test_small_caps_and_deadlines_are_written_as_plain_decimals_not_exponents(base_url: str) -> None:
    body = '{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
    capped = _assert_openai_error(_post(base_url, body, **{"x-switchyard-max-cost-usd": "0.00000001",
                                                           "x-switchyard-cache": "bypass"}),
                                  422, "constraint_unsatisfiable")
    assert "> 0.00000001)" in capped["message"] and "e-" not in capped["message"], capped["message"]
    late = _assert_openai_error(_post(base_url, body, **{"x-switchyard-timeout-ms": "0.001",
                                                         "x-switchyard-cache": "bypass"}), 504)
    assert "deadline of 0.000001 s" in late["message"], late["message"]


@pytest.mark.parametrize(("fields", "said"), [
    ({"response_format": "json"}, "response_format: Input should be an object"),  # not "...instance of ResponseFormat"
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content: Input should be a string or an array"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0]: a part of type 'text' needs its 'text' field"),  # was "Value error, ..."
    ({"stream": "true"}, "stream: Input should be a boolean"),
    ({"temperature": 9, "n": 0}, "temperature: Input should be less than or equal to 2 (and 1 more problem)")])
def test_a_refused_field_is_told_in_the_apis_words_not_the_validators(
        base_url: str, fields: dict, said: str) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}
    error = _assert_openai_error(httpx.post(base_url + "/chat/completions", json=body, timeout=30), 400)
    assert error["message"] == said


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/models", None), ("GET", "/models/small", None),
    ("POST", "/route", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/feedback", {}),  # a 400
    ("GET", "/no-such-path", None), ("PUT", "/models", None),  # a 404, a 405
    ("POST", "/chat/completions", {"model": "small", "messages": [{"role": "user", "content": "hi"}]})])
def test_every_answer_carries_a_request_id_the_clients_when_valid(
        base_url: str, method: str, path: str, body: dict | None) -> None:
    """Only chat completions carried one: a client or proxy logging the header had none to quote for the rest."""
    sent = httpx.request(method, base_url + path, json=body, headers={"x-request-id": "client-id-1"}, timeout=30)
    assert sent.headers.get_list("x-request-id") == ["client-id-1"], (sent.status_code, sent.headers)
    bad = httpx.request(method, base_url + path, json=body, headers={"x-request-id": "x" * 200}, timeout=30)
    generated = bad.headers.get_list("x-request-id")
    assert len(generated) == 1 and generated[0].startswith("req_"), (bad.status_code, bad.headers)
