"""A pydantic validation failure told as an API error: the field it names, OpenAI's code for it, and a
message in the words of JSON and of the API (an object, an array), never pydantic's own (a dictionary,
an instance of ResponseFormat, "Value error, ")."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import InvalidRequest

# What a value should have been, in JSON's words, by pydantic's error type.
_KINDS = {"string_type": "a string", "int_type": "an integer", "int_from_float": "an integer",
          "float_type": "a number", "bool_type": "a boolean", "dict_type": "an object", "model_type": "an object",
          "model_attributes_type": "an object", "list_type": "an array", "none_required": "null"}
_PREFIXES = ("Value error, ", "Assertion failed, ")


def refusal(exc: ValidationError) -> InvalidRequest:
    """The 400 for a body that failed validation, naming the field the client most likely got wrong."""
    errors = exc.errors()
    # The deepest error names the culprit best: of a union's failures (`content` is neither a
    # string nor a list of parts) the one that went furthest is the one the client meant.
    first = max(errors, key=lambda e: len(e["loc"]))
    where = error_path(first["loc"])
    # A union's other members failing at the field or above it are the same problem, not more of them
    others = {p for p in (error_path(e["loc"]) for e in errors) if not _within(where, p)}
    extra = f" (and {len(others)} more problem{'' if len(others) == 1 else 's'})" if others else ""
    return InvalidRequest(f"{where or 'body'}: {_said(first, errors, where)}{extra}", param=where or None,
                          code=_code(first))


def _within(where: str, path: str) -> bool:
    """Is `path` the field `where` or one that holds it (`messages[0].content` holds its `[0]`)?"""
    return where == path or not path or (where.startswith(path) and where[len(path)] in ".[")


def _said(first: ErrorDetails, errors: list[ErrorDetails], where: str) -> str:
    if first["type"] in _KINDS:
        # `content: 5`: a string or an array would do, and the message says both, as OpenAI's does
        kinds = list(dict.fromkeys(_KINDS[e["type"]] for e in errors
                                   if e["type"] in _KINDS and error_path(e["loc"]) == where))
        return "Input should be " + (f"{', '.join(kinds[:-1])} or " if len(kinds) > 1 else "") + kinds[-1]
    if first["type"] == "extra_forbidden":
        return "unknown field"
    message = first["msg"]
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    return message


def error_path(loc: tuple[int | str, ...]) -> str:
    """`messages[0].content` from pydantic's location, without the union-member tags it inserts. A
    refused key names its map (`metadata`): the key itself may be any length, and is not echoed."""
    if loc and loc[-1] == "[key]":
        loc = loc[:-2]
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part[:1].isupper() or part.startswith("constrained-") or \
                part in ("str", "int", "float", "bool", "dict", "list"):
            continue  # e.g. 'list[ContentPart]', 'str', 'constrained-str': which union member failed, not a field
        else:
            out += f".{part}" if out else part
    return out


def _code(error: ErrorDetails) -> str:
    """OpenAI's code for what pydantic found (`integer_above_max_value`...), else `invalid_value`."""
    kind = error["type"]
    if kind == "missing":
        return "missing_field"
    if error["loc"][-1:] == ("[key]",):
        return "property_name_above_max_length" if kind == "string_too_long" else "invalid_value"
    if kind == "string_too_long":
        return "string_above_max_length"
    if kind == "too_long":
        return "object_above_max_properties" if isinstance(error["input"], dict) else "array_above_max_length"
    for kinds, side in ((("less_than", "less_than_equal"), "above_max"),
                        (("greater_than", "greater_than_equal"), "below_min")):
        if kind in kinds:
            bound = next(iter((error.get("ctx") or {}).values()), None)
            number = "decimal" if isinstance(error["input"], float) or isinstance(bound, float) else "integer"
            return f"{number}_{side}_value"
    return "invalid_value"
