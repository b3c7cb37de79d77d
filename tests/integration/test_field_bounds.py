"""Request fields OpenAI bounds are bounded here too, with OpenAI's codes, before anything is forwarded:
`stop`, `logit_bias`, `metadata`, `n`, the end-user ids (`user`, `safety_identifier`), and how deeply a
body may nest (tool schemas above all)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.support.processes import Simulator

HI = [{"role": "user", "content": "hi"}]


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)


def _refused(base_url: str, simulator: Simulator, **fields: Any) -> openai.BadRequestError:
    """The request is a 400 from the gateway itself: the upstream never saw it."""
    simulator.reset()
    with pytest.raises(openai.BadRequestError) as info:
        _client(base_url).chat.completions.create(model="small", messages=HI, max_tokens=5,  # type: ignore[arg-type]
                                                  extra_body=fields)
    error = info.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error" and error.message
    assert simulator.stats()["sim-small"]["requests"] == 0
    return error


def _served(base_url: str, **fields: Any) -> None:
    completion = _client(base_url).chat.completions.create(model="small", messages=HI, max_tokens=5,  # type: ignore[arg-type]
                                                           extra_body=fields)
    assert completion.choices[0].message.content


# --- stop -----------------------------------------------------------------------------------------

def test_more_than_four_stop_sequences_is_refused_with_openai_s_code(base_url: str, simulator: Simulator) -> None:
    """Five were forwarded, and the upstream's refusal came back as `upstream_rejected` without a param."""
    error = _refused(base_url, simulator, stop=["a", "b", "c", "d", "e"])
    assert (error.code, error.param) == ("array_above_max_length", "stop")
    assert "at most 4" in error.message


def test_four_stop_sequences_or_one_string_are_served(base_url: str) -> None:
    _served(base_url, stop=["a", "b", "c", "d"])
    _served(base_url, stop="\n\n")


@pytest.mark.parametrize(("stop", "param"), [
    ("s" * 513, "stop"), (["a", "s" * 513], "stop[1]"), (["s" * 1_000_000], "stop[0]")],
    ids=["string_of_513", "second_of_513", "one_of_1M"])
def test_a_stop_sequence_longer_than_512_characters_is_refused_without_echoing_it(
        base_url: str, simulator: Simulator, stop: Any, param: str) -> None:
    """Any length was forwarded (and went into the cache key), to be matched against every token generated."""
    error = _refused(base_url, simulator, stop=stop)
    assert (error.code, error.param) == ("string_above_max_length", param)
    assert "512" in error.message and "sss" not in error.message and len(error.message) < 300


def test_stop_sequences_of_512_characters_are_served(base_url: str) -> None:
    _served(base_url, stop="s" * 512)
    _served(base_url, stop=["s" * 512] * 4)


# --- user, safety_identifier ------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["user", "safety_identifier"])
@pytest.mark.parametrize("length", [257, 1_000_000])
def test_an_end_user_id_longer_than_256_characters_is_refused_without_echoing_it(
        base_url: str, simulator: Simulator, field: str, length: int) -> None:
    error = _refused(base_url, simulator, **{field: "u" * length})
    assert (error.code, error.param) == ("string_above_max_length", field)
    assert "256" in error.message and "uuu" not in error.message and len(error.message) < 300


def test_end_user_ids_of_256_characters_are_served(base_url: str) -> None:
    _served(base_url, user="u" * 256, safety_identifier="s" * 256)


# --- logit_bias -----------------------------------------------------------------------------------

def test_more_than_300_logit_biases_are_refused(base_url: str, simulator: Simulator) -> None:
    error = _refused(base_url, simulator, logit_bias={str(i): 1 for i in range(301)})
    assert (error.code, error.param) == ("object_above_max_properties", "logit_bias")
    assert "at most 300" in error.message


@pytest.mark.parametrize(("bias", "code"), [
    (101, "integer_above_max_value"),
    (-101, "integer_below_min_value"),
    (1.5, "invalid_value"),
    (True, "invalid_value"),
    ("5", "invalid_value"),
])
def test_a_logit_bias_outside_minus_100_to_100_is_refused_naming_its_token(
        base_url: str, simulator: Simulator, bias: Any, code: str) -> None:
    error = _refused(base_url, simulator, logit_bias={"50256": bias})
    assert (error.code, error.param) == (code, "logit_bias.50256")


@pytest.mark.parametrize("token", ["hello", "-1", "1.5", "", "１２", "9" * 11, "x" * 100_000],
                         ids=["word", "negative", "decimal", "empty", "fullwidth_digits", "11_digits", "100k_chars"])
def test_a_logit_bias_key_that_is_not_a_token_id_is_refused_without_echoing_it(
        base_url: str, simulator: Simulator, token: str) -> None:
    error = _refused(base_url, simulator, logit_bias={token: 1})
    assert (error.code, error.param) == ("invalid_value", "logit_bias")
    assert len(error.message) < 300


def test_logit_biases_at_the_bounds_are_served(base_url: str) -> None:
    _served(base_url, logit_bias={str(i): (100 if i % 2 else -100) for i in range(300)})


# --- metadata -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("metadata", "code", "param"), [
    ({f"k{i}": "v" for i in range(17)}, "object_above_max_properties", "metadata"),
    ({"k" * 65: "v"}, "property_name_above_max_length", "metadata"),
    ({"k" * 100_000: "v"}, "property_name_above_max_length", "metadata"),
    ({"team": "v" * 513}, "string_above_max_length", "metadata.team"),
    ({"team": 7}, "invalid_value", "metadata.team"),
    ({"team": {"nested": ["x"]}}, "invalid_value", "metadata.team"),
], ids=["17_pairs", "key_of_65", "key_of_100k", "value_of_513", "number_value", "object_value"])
def test_metadata_beyond_openai_s_bounds_is_refused(base_url: str, simulator: Simulator, metadata: dict[str, Any],
                                                    code: str, param: str) -> None:
    error = _refused(base_url, simulator, metadata=metadata)
    assert (error.code, error.param) == (code, param)
    assert len(error.message) < 300  # a long key or value is not echoed


def test_metadata_at_the_bounds_is_served(base_url: str) -> None:
    _served(base_url, metadata={f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)})


# --- n --------------------------------------------------------------------------------------------

def test_n_above_its_bound_gets_openai_s_code(base_url: str, simulator: Simulator) -> None:
    error = _refused(base_url, simulator, n=17)
    assert (error.code, error.param) == ("integer_above_max_value", "n")


# --- nesting --------------------------------------------------------------------------------------

def _schema(levels: int) -> dict[str, Any]:
    """A JSON schema of objects `levels` deep: about two levels of JSON nesting each."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def _post(base_url: str, body: dict[str, Any]) -> httpx.Response:
    # the stdlib serializer: orjson (the SDK's too, where installed) refuses to write these bodies
    return httpx.post(base_url + "/chat/completions", content=json.dumps(body),
                      headers={"content-type": "application/json"}, timeout=30)


@pytest.mark.parametrize(("field", "value"), [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": _schema(130)}}]),
    ("functions", [{"name": "f", "parameters": _schema(130)}]),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "r", "schema": _schema(130)}}),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": "hi", "extra": _schema(130)}]}]),
    ("vendor_extension", _schema(200)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_body_nested_past_what_the_gateway_can_forward_is_a_400_naming_the_field(
        base_url: str, simulator: Simulator, field: str, value: Any) -> None:
    """Nested 260-400 levels, it parsed (orjson reads 1024) but could not be serialized again (orjson
    writes 254) to count its tokens or send it: a 500."""
    simulator.reset()
    resp = _post(base_url, {"model": "small", "messages": HI, "max_tokens": 5, field: value})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", field)
    assert "nested" in error["message"]
    assert simulator.stats()["sim-small"]["requests"] == 0


def test_a_deep_but_forwardable_tool_schema_is_served(base_url: str) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": _schema(100)}}
    resp = _post(base_url, {"model": "small", "messages": HI, "max_tokens": 5, "tools": [tool]})
    assert resp.status_code == 200, resp.text
