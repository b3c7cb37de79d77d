"""Tool calls, JSON output, logprobs and n through the gateway, as real clients use them.

The official `openai` SDK and LangChain's `ChatOpenAI` talk over real HTTP to the gateway, which
forwards to the simulated models; answers come back whole, streamed, and from the cache.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]},
    },
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "home": {"$ref": "#/$defs/Place"},
    },
    "required": ["name", "age", "tags", "home"],
    "additionalProperties": False,
    "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                        "additionalProperties": False}},
}


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def _unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def _arguments_valid(call: Any, tool: dict[str, Any]) -> None:
    assert call.function.name == tool["function"]["name"]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_named_tool_choice_gets_a_call_to_that_function_with_valid_arguments(base_url: str) -> None:
    completion = _client(base_url).chat.completions.create(
        model="small", messages=[{"role": "user", "content": _unique("What is 2 + 3?")}],
        tools=[CALCULATOR, WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    _arguments_valid(choice.message.tool_calls[0], WEATHER)
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_auto_tool_choice_picks_the_tool_the_question_is_about(base_url: str) -> None:
    completion = _client(base_url).chat.completions.create(
        model="small", messages=[{"role": "user", "content": _unique("What's the weather in Paris?")}],
        tools=[CALCULATOR, WEATHER])
    calls = completion.choices[0].message.tool_calls
    assert calls is not None
    _arguments_valid(calls[0], WEATHER)


def test_after_a_tool_result_an_auto_choice_answers_in_prose(base_url: str) -> None:
    messages: list[Any] = [
        {"role": "user", "content": _unique("What's the weather in Paris?")},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    completion = _client(base_url).chat.completions.create(model="small", messages=messages, tools=[WEATHER])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content


def test_streamed_tool_call_assembles_into_valid_arguments(base_url: str) -> None:
    stream = _client(base_url).chat.completions.create(
        model="small", messages=[{"role": "user", "content": _unique("Weather in Oslo for 3 days?")}],
        tools=[WEATHER], tool_choice="required", stream=True, stream_options={"include_usage": True})
    names, arguments, finish, usage = [], "", None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                names += [delta.function.name] if delta.function and delta.function.name else []
                arguments += (delta.function.arguments or "") if delta.function else ""
            finish = choice.finish_reason or finish
    assert names == ["get_weather"]
    assert finish == "tool_calls"
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert usage is not None and usage.completion_tokens > 0


def test_json_object_format_answers_valid_json(base_url: str) -> None:
    completion = _client(base_url).chat.completions.create(
        model="small", response_format={"type": "json_object"},
        messages=[{"role": "user", "content": _unique("What is 17 + 25? Reply in JSON.")}])
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_format_answers_json_valid_against_the_schema(base_url: str, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    messages = [{"role": "user", "content": _unique("Describe a person.")}]
    client = _client(base_url)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="small", messages=messages, response_format=fmt, stream=True) if c.choices)  # type: ignore[arg-type]
    else:
        text = client.chat.completions.create(model="small", messages=messages,  # type: ignore[arg-type]
                                              response_format=fmt).choices[0].message.content or ""
    jsonschema.validate(json.loads(text), PERSON)


def test_n_choices_each_carry_their_logprobs_whole_and_streamed(base_url: str) -> None:
    client = _client(base_url)
    messages = [{"role": "user", "content": _unique("What is 40 + 2?")}]
    whole = client.chat.completions.create(model="small", messages=messages, n=3, logprobs=True, top_logprobs=2)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    for choice in whole.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        assert len(choice.logprobs.content[0].top_logprobs) == 2
    seen: dict[int, int] = {}
    for chunk in client.chat.completions.create(model="small", messages=messages, n=3, logprobs=True,
                                                top_logprobs=2, stream=True):
        for choice in chunk.choices:
            if choice.logprobs is not None and choice.logprobs.content:
                seen[choice.index] = seen.get(choice.index, 0) + len(choice.logprobs.content)
    assert seen == {0: 1, 1: 1, 2: 1}


def test_a_cached_tool_call_is_served_again_whole_and_streamed(base_url: str) -> None:
    client = _client(base_url)
    messages = [{"role": "user", "content": _unique("Weather in Rome?")}]
    first = client.chat.completions.with_raw_response.create(
        model="small", messages=messages, tools=[WEATHER], temperature=0, stream=True)
    streamed = [c for c in first.parse()]
    assert first.headers["x-switchyard-cache"] == "miss"
    assert any(c.choices and c.choices[0].delta.tool_calls for c in streamed)
    again = client.chat.completions.with_raw_response.create(model="small", messages=messages, tools=[WEATHER],
                                                             temperature=0)
    assert again.headers["x-switchyard-cache"] == "hit"
    hit = again.parse().choices[0]
    assert hit.finish_reason == "tool_calls" and hit.message.tool_calls
    _arguments_valid(hit.message.tool_calls[0], WEATHER)


def test_tools_format_and_logprobs_are_part_of_the_cache_key(base_url: str) -> None:
    client = _client(base_url)
    messages = [{"role": "user", "content": _unique("Weather in Lima?")}]
    variants: list[dict[str, Any]] = [{}, {"tools": [WEATHER]}, {"tools": [WEATHER, CALCULATOR]},
                                      {"tools": [WEATHER], "tool_choice": "none"},
                                      {"response_format": {"type": "json_object"}}, {"logprobs": True},
                                      {"logprobs": True, "top_logprobs": 3}, {"n": 2}]
    for extra in variants:
        raw = client.chat.completions.with_raw_response.create(model="small", messages=messages, temperature=0,
                                                               **extra)
        assert raw.headers["x-switchyard-cache"] == "miss", extra


# LangChain's ChatOpenAI against the gateway: what an application built on it does.


class Weather(BaseModel):
    """The weather report for one city."""

    city: str = Field(description="the city")
    temperature_c: float
    conditions: list[str]


@tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


def _chat(base_url: str, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=base_url, api_key="unused", model="small", max_retries=0,  # type: ignore[arg-type]
                      **kw)


def test_langchain_structured_output_returns_a_model_instance(base_url: str) -> None:
    report = _chat(base_url).with_structured_output(Weather).invoke(_unique("Weather in Paris?"))
    assert isinstance(report, Weather)
    assert report.conditions


def test_langchain_structured_output_in_json_mode(base_url: str) -> None:
    report = _chat(base_url).with_structured_output(Weather, method="function_calling").invoke(
        _unique("Weather in Paris?"))
    assert isinstance(report, Weather)


@pytest.mark.parametrize("streaming", [False, True])
def test_langchain_bind_tools_returns_tool_calls(base_url: str, streaming: bool) -> None:
    model = _chat(base_url, streaming=streaming).bind_tools([get_weather])
    message = model.invoke(_unique("What's the weather in Paris?"))
    assert isinstance(message, AIMessage)
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    assert isinstance(message.tool_calls[0]["args"]["city"], str)
    assert get_weather.invoke(message.tool_calls[0]["args"]).startswith("sunny")


def test_langchain_invoke_stream_and_batch_still_answer(base_url: str) -> None:
    chat = _chat(base_url)
    assert chat.invoke(_unique("What is 1 + 1?")).content
    assert "".join(str(c.content) for c in chat.stream(_unique("What is 2 + 2?")))
    assert all(m.content for m in chat.batch([_unique("hi"), _unique("hello")]))
