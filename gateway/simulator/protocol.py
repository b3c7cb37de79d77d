"""OpenAI wire format for the simulator: request parsing and error bodies.

Hand-rolled rather than pydantic because the simulator is the upstream in the
throughput benchmark and must stay cheap; it checks only what it uses
(including ``tools``, ``tool_choice`` and ``response_format``) and ignores the
rest, like a lenient provider.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .structured import Shape, Tool, choose_tool
from .tokens import count_tokens

FINGERPRINT = "fp_switchyard_sim"
_MAX_N = 128
_MAX_STOPS = 4
_MAX_TOP_LOGPROBS = 20
_PROSE = Shape()


class RequestError(ValueError):
    """The request body is invalid; answered with 400 naming ``param``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class ChatCall:
    """The parts of a chat completion request the simulator acts on."""

    model: str
    question: str  # the last user message: source of truth and difficulty
    conversation: str  # every message, so the deterministic draw sees the whole prompt
    prompt_tokens: int
    temperature: float
    max_tokens: int | None
    n: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    seed: int | None
    logprobs: bool
    top_logprobs: int
    shape: Shape = _PROSE  # prose, a tool call or JSON
    prefill: str | None = None  # a trailing assistant message: the answer so far, to be continued
    service_tier: str | None = None  # the tier the answer reports it ran under; None: the request named none
    audio_prompt_tokens: int = 0  # of prompt_tokens, the audio parts' (`AUDIO_BYTES_PER_TOKEN`)


def parse_chat_call(body: Any) -> ChatCall:
    """Validate a decoded ``/v1/chat/completions`` body."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' must be a non-empty string.", "model")
    question, conversation, prompt_tokens, audio = _read_messages(body.get("messages"))
    messages = body["messages"]
    prefill = _prefill(messages)
    if prefill is not None:  # the draw sees the prompt without the partial answer, as when it began
        conversation = conversation.rpartition("\x1e")[0] or conversation
    after_tool = isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
    tool = choose_tool(_tools(body.get("tools")), _tool_choice(body), question, after_tool)
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise RequestError("'stream_options' must be an object.", "stream_options")
    if body.get("stream_options") is not None and not body.get("stream"):  # as OpenAI and vLLM refuse it
        raise RequestError("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                           "stream_options")
    return ChatCall(
        model=model,
        question=question,
        conversation=conversation,
        prompt_tokens=prompt_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        max_tokens=_max_tokens(body),
        n=int(_number(body, "n", 1, 1, _MAX_N, integer=True)),
        stop=_stops(body.get("stop")),
        stream=bool(body.get("stream") or False),
        include_usage=bool(stream_options.get("include_usage") or False),
        seed=_optional_int(body, "seed"),
        logprobs=bool(body.get("logprobs") or False),
        top_logprobs=int(_number(body, "top_logprobs", 0, 0, _MAX_TOP_LOGPROBS, integer=True)),
        shape=_shape(tool, body.get("response_format")),
        prefill=prefill,
        service_tier=_service_tier(body.get("service_tier")),
        audio_prompt_tokens=audio,
    )


_SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")


def _service_tier(asked: Any) -> str | None:
    """The tier an answer runs under, as OpenAI reports it: the one asked, "auto" running under the
    project's default. A request that names none is answered without one (as before)."""
    if asked is None:
        return None
    if asked not in _SERVICE_TIERS:
        raise RequestError(f"'service_tier' must be one of {', '.join(_SERVICE_TIERS)}.", "service_tier")
    return "default" if asked == "auto" else str(asked)


def _prefill(messages: list[Any]) -> str | None:
    """The text of a trailing assistant message (no tool calls, after another message): a partial
    answer the model is to continue, as providers that accept assistant prefill do."""
    last = messages[-1]
    if len(messages) < 2 or not isinstance(last, dict) or last.get("role") != "assistant" or last.get("tool_calls"):
        return None
    content = last.get("content")
    return content if isinstance(content, str) and content else None


def _tools(tools: Any) -> tuple[Tool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise RequestError("'tools' must be an array.", "tools")
    out = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError(f"tools[{index}].function.name must be a non-empty string.",
                               f"tools[{index}].function.name")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise RequestError(f"tools[{index}].function.parameters must be an object.",
                               f"tools[{index}].function.parameters")
        out.append(Tool(name, str(function.get("description") or ""), parameters))
    return tuple(out)


def _tool_choice(body: dict[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        if choice == "required" and not body.get("tools"):
            raise RequestError("'tool_choice' is 'required' but no tools were given.", "tool_choice")
        return choice
    function = choice.get("function") if isinstance(choice, dict) else None  # any JSON value, as sent
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise RequestError("'tool_choice' must be 'none', 'auto', 'required' or a named function.", "tool_choice")
    tools = body.get("tools") or []
    if not any(isinstance(t, dict) and (t.get("function") or {}).get("name") == name for t in tools):
        raise RequestError(f"'tool_choice' names function '{name}', which is not in 'tools'.", "tool_choice")
    return name


def _shape(tool: Tool | None, response_format: Any) -> Shape:
    if tool is not None:
        return Shape(tool=tool)
    if response_format is None:
        return _PROSE
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return Shape(json_object=True)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise RequestError("'response_format.json_schema.schema' must be an object.",
                               "response_format.json_schema")
        return Shape(json_schema=schema)
    if kind == "text":
        return _PROSE
    raise RequestError("'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                       "response_format.type")


# An `input_audio` part's tokens: 10 a second (OpenAI's rate) at 8 kbit/s, of its base64 payload's decoded size.
AUDIO_BYTES_PER_TOKEN = 100


def _audio_tokens(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    datas = [p.get("input_audio", {}).get("data") for p in content
             if isinstance(p, dict) and p.get("type") == "input_audio" and isinstance(p.get("input_audio"), dict)]
    return sum(max(1, len(d) * 3 // 4 // AUDIO_BYTES_PER_TOKEN) for d in datas if isinstance(d, str))


def _read_messages(messages: Any) -> tuple[str, str, int, int]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array.", "messages")
    texts: list[str] = []
    question = None
    audio = 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{index}] must be an object.", f"messages[{index}]")
        text = _content_text(message.get("content"), index)
        texts.append(text)
        audio += _audio_tokens(message.get("content"))
        if message.get("role") == "user":
            question = text
    if question is None:
        question = texts[-1]
    # Usage is the plain sum over contents (and their audio): no per-message overhead tokens.
    prompt_tokens = sum(count_tokens(t) for t in texts) + audio
    return question, "\x1e".join(texts), prompt_tokens, audio


def _content_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        # Non-text parts carry no simulated tokens, but audio (`_audio_tokens`), reported apart.
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    raise RequestError(
        f"messages[{index}].content must be a string or an array of parts.",
        f"messages[{index}].content",
    )


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float, *, integer: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    valid = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not valid or isinstance(value, bool) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise RequestError(f"'{key}' must be {kind} between {low:g} and {high:g}.", key)
    return float(value)


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"'{key}' must be an integer.", key)
    return value


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RequestError(f"'{key}' must be a positive integer.", key)
            return value
    return None


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > _MAX_STOPS or not all(isinstance(s, str) for s in stops):
        raise RequestError("'stop' must be a string or an array of up to 4 strings.", "stop")
    return tuple(s for s in stops if s)


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI error envelope ``{"error": {message, type, param, code}}``."""
    body = {"error": {"message": message, "type": _error_type(status), "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def new_completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()
