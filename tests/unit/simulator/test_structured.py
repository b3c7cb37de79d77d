"""Tool calls and JSON answers: instances valid against the caller's schema, tools chosen by the question."""

from __future__ import annotations

import json

import jsonschema
import pytest

from gateway.simulator.structured import Tool, choose_tool, instance_of, tool_call

SCHEMAS = [
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 50}, "s": {"type": "string",
                                                                                    "maxLength": 3}}},
    {"type": "object", "properties": {"kind": {"enum": ["a", "b"]}, "k": {"const": 7},
                                      "x": {"anyOf": [{"type": "null"}, {"type": "number", "maximum": -1}]}}},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 3, "maxItems": 3},
    {"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}, "q": {"allOf": [{"$ref": "#/$defs/P"}]}},
     "$defs": {"P": {"type": "object", "properties": {"v": {"type": ["string", "null"], "minLength": 4}},
                     "required": ["v"], "additionalProperties": False}}},
    {"type": "object", "properties": {"ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("answer", ["42", "B", "cobalt", "-3"])
def test_instances_are_valid_against_their_schema(schema: dict, answer: str) -> None:
    jsonschema.validate(instance_of(schema, answer), schema)


def test_the_answer_lands_in_the_first_field_it_fits() -> None:
    schema = {"type": "object", "properties": {"count": {"type": "integer"}, "label": {"type": "string"}}}
    assert instance_of(schema, "42") == {"count": 42, "label": "value"}
    assert instance_of(schema, "cobalt") == {"count": 0, "label": "cobalt"}


TOOLS = (Tool("calculator", "Evaluate arithmetic", {"type": "object"}),
         Tool("get_weather", "Current weather in a city", {"type": "object"}))


def test_tool_choice_rules() -> None:
    assert choose_tool(TOOLS, None, "what is the weather in Oslo", after_tool=False) is TOOLS[1]
    assert choose_tool(TOOLS, "auto", "sing", after_tool=False) is TOOLS[0]  # ties: the first
    assert choose_tool(TOOLS, "auto", "weather?", after_tool=True) is None  # answer the tool's result
    assert choose_tool(TOOLS, "required", "weather?", after_tool=True) is TOOLS[1]
    assert choose_tool(TOOLS, "none", "weather?", after_tool=False) is None
    assert choose_tool(TOOLS, "calculator", "weather?", after_tool=False) is TOOLS[0]


def test_tool_call_is_an_openai_tool_call() -> None:
    call = tool_call(TOOLS[1], "amber")
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {}
