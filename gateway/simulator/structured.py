"""Structured answers: tool calls and JSON output shaped by the caller's JSON schemas.

A simulated model that is asked for a tool call makes one, to the function ``tool_choice`` names
or (``auto`` / ``required``) to the tool whose name and description share most words with the
question, ties to the first; under ``auto`` it answers in prose instead when the last message is
a tool result (so agent loops end). ``response_format`` ``json_object`` gets
``{"answer": X}``; ``json_schema`` gets an instance of the schema. Arguments and instances are
built by ``instance_of``: every property (required or not), enum and const values honoured,
``$ref`` into ``$defs``/``definitions`` followed, ``anyOf``/``oneOf`` take their first branch, string
and number bounds respected, and the drawn answer X placed in the first string or number it fits.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

_MAX_DEPTH = 12
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Shape:
    """What form the answer takes: prose, a tool call (``tool`` set) or JSON (``schema`` set)."""

    tool: Tool | None = None
    json_schema: dict[str, Any] | None = None
    json_object: bool = False


def choose_tool(tools: tuple[Tool, ...], choice: str | None, question: str, after_tool: bool) -> Tool | None:
    """The tool to call, or None for a prose answer. ``choice`` is ``none``/``auto``/``required``/a name."""
    if not tools or choice == "none":
        return None
    if choice not in (None, "auto", "required"):
        return next(t for t in tools if t.name == choice)
    if choice != "required" and after_tool:
        return None
    words = set(_WORD.findall(question.lower()))

    def overlap(tool: Tool) -> int:
        own = set(_WORD.findall(f"{tool.name.replace('_', ' ')} {tool.description}".lower()))
        return len(words & own)

    return max(tools, key=overlap)  # max keeps the first of equals


def tool_call(tool: Tool, answer: str) -> dict[str, Any]:
    """One OpenAI ``tool_calls`` entry with arguments valid against the tool's parameters."""
    arguments = instance_of(tool.parameters or {"type": "object"}, answer)
    return {
        "id": "call_" + os.urandom(12).hex(),
        "type": "function",
        "function": {"name": tool.name, "arguments": json.dumps(arguments, separators=(",", ":"))},
    }


def json_content(shape: Shape, answer: str) -> str:
    if shape.json_schema is not None:
        return json.dumps(instance_of(shape.json_schema, answer))
    return json.dumps({"answer": _typed(answer)})


def instance_of(schema: dict[str, Any], answer: str) -> Any:
    """A JSON value valid against ``schema`` that carries ``answer`` where a string or number fits."""
    slot = {"answer": answer, "used": False}
    return _value(schema, schema, slot, 0)


def _value(schema: Any, root: dict[str, Any], slot: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _value(_resolve(schema["$ref"], root), root, slot, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            branches = [b for b in schema[key] if not (isinstance(b, dict) and b.get("type") == "null")]
            return _value((branches or schema[key])[0], root, slot, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part)
        return _value(merged, root, slot, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _BUILDERS.get(kind, _null)(schema, root, slot, depth)


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _object(schema: dict[str, Any], root: dict[str, Any], slot: dict[str, Any], depth: int) -> Any:
    properties = schema.get("properties") or {}
    return {name: _value(sub, root, slot, depth + 1) for name, sub in properties.items()}


def _array(schema: dict[str, Any], root: dict[str, Any], slot: dict[str, Any], depth: int) -> Any:
    count = max(1, int(schema.get("minItems", 1)))
    if "maxItems" in schema:
        count = min(count, int(schema["maxItems"]))
    return [_value(schema.get("items") or {}, root, slot, depth + 1) for _ in range(count)]


def _string(schema: dict[str, Any], root: dict[str, Any], slot: dict[str, Any], depth: int) -> Any:
    text = "value"
    if not slot["used"]:
        text, slot["used"] = str(slot["answer"]), True
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    text = text.ljust(low, "x")
    return text[: int(high)] if high is not None else text


def _number(schema: dict[str, Any], root: dict[str, Any], slot: dict[str, Any], depth: int) -> Any:
    integer = schema.get("type") == "integer" or (isinstance(schema.get("type"), list) and "integer" in schema["type"])
    value: float = 0
    typed = _typed(str(slot["answer"]))
    if not slot["used"] and isinstance(typed, int | float) and not isinstance(typed, bool):
        value, slot["used"] = typed, True
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if not _within(schema, value):
        if low is not None and high is not None:
            value = (low + high) / 2  # inside both bounds, exclusive or not
        elif low is not None:
            value = low + (0 if "minimum" in schema else 1)
        elif high is not None:
            value = high - (0 if "maximum" in schema else 1)
    if integer and not _within(schema, int(value)):
        value = math.ceil(value)
    return int(value) if integer else float(value)


def _within(schema: dict[str, Any], value: float) -> bool:
    return ((schema.get("minimum") is None or value >= schema["minimum"])
            and (schema.get("maximum") is None or value <= schema["maximum"])
            and (schema.get("exclusiveMinimum") is None or value > schema["exclusiveMinimum"])
            and (schema.get("exclusiveMaximum") is None or value < schema["exclusiveMaximum"]))


def _boolean(schema: dict[str, Any], root: dict[str, Any], slot: dict[str, Any], depth: int) -> Any:
    return True


def _null(schema: dict[str, Any], root: dict[str, Any], slot: dict[str, Any], depth: int) -> Any:
    return None


_BUILDERS = {"object": _object, "array": _array, "string": _string, "integer": _number, "number": _number,
             "boolean": _boolean, "null": _null}


def _typed(answer: str) -> int | float | str:
    try:
        return int(answer)
    except ValueError:
        try:
            return float(answer)
        except ValueError:
            return answer

