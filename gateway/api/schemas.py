"""OpenAI request bodies at the edge, validated strictly with pydantic.

Known fields are checked against OpenAI's own types in strict mode: a string where a number
belongs, `"stream": "false"` or `"n": 2.0` is a 400 naming the field, never coerced, because the
gateway reads some of these values (stream, n, max_tokens, temperature) and forwards all of them:
a value that passed here must not fail upstream, nor mean something else there. OpenAI itself
rejects a decimal number for an integer field, so `n: 2.0` is refused, not rounded.

What flows on is the validated body (`model_dump`): correctly typed values, fields the gateway does
not interpret (newer OpenAI parameters, provider extensions such as `top_k`) kept exactly as sent,
so the gateway stays a drop-in for the `openai` SDK as the API grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.api.problems import refusal
from gateway.errors import InvalidRequest

_OPEN = ConfigDict(extra="allow", strict=True)


# OpenAI's part types, each carrying its content in the field its type names (`{"type": "image_url",
# "image_url": {...}}`). Without it OpenAI refuses the request, and litellm fails before sending it (a
# KeyError it raises as a connection error, which was retried and counted against the deployment's circuit).
_PART_FIELDS = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
_TEXT_PARTS = frozenset({"text", "refusal"})  # whose field is the text itself, a string


class ContentPart(BaseModel):
    """One part of a multi-part message (`text`, `image_url`, `input_audio`, `file`...)."""

    model_config = _OPEN

    type: str

    @model_validator(mode="after")
    def _carries_its_field(self) -> ContentPart:
        value = (self.model_extra or {}).get(self.type)
        if self.type in _PART_FIELDS and value is None:
            raise ValueError(f"a part of type '{self.type}' needs its '{self.type}' field")
        if self.type in _TEXT_PARTS and not isinstance(value, str):
            # OpenAI refuses a number or an object there; forwarded, the model read its JSON as text
            raise ValueError(f"a part of type '{self.type}' needs its '{self.type}' field to be a string")
        return self


class Message(BaseModel):
    model_config = _OPEN

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = _OPEN

    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = _OPEN

    type: str


class Tool(BaseModel):
    model_config = _OPEN

    type: str
    function: dict[str, Any] | None = None


def _token_id(key: str) -> str:
    # ASCII digits only (`str.isdigit` takes "²" and "１"), and no longer than a 32-bit id
    if not (0 < len(key) <= 10 and key.isascii() and key.isdigit()):
        raise ValueError("keys must be token ids: non-negative integers written as strings, such as \"50256\"")
    return key


# OpenAI's bounds on the values of these fields (how many entries they may hold is `BodyBounds`').
TokenId = Annotated[str, AfterValidator(_token_id)]
Bias = Annotated[int, Field(ge=-100, le=100)]
MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]
# Bounds of the gateway's own where OpenAI states none. A stop sequence is forwarded on every call
# (each sample, each escalation), goes into the cache key and is matched against every token an
# upstream generates: 512 characters is far past any real one (four of them at most: `BodyBounds`).
StopSequence = Annotated[str, Field(max_length=512)]
# An end-user id (`user`, or its newer name `safety_identifier`) is meant to be a short stable id (a
# hash of a username). It is forwarded on every upstream call, where providers keep it as a field of
# their abuse-monitoring logs, and it is the value an operator turns into a per-end-user log field or
# metric label (this gateway logs none today): there a megabyte "id" costs every line or series its
# length. 256 characters hold any hash, UUID or e-mail address.
EndUserId = Annotated[str, Field(max_length=256)]


class ChatRequest(BaseModel):
    model_config = _OPEN

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    # float bounds on float fields: an error's code says `decimal_...` for them, as OpenAI's does
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    stop: StopSequence | list[StopSequence] | None = None
    n: int | None = Field(default=None, ge=1, le=16)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: EndUserId | None = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[TokenId, Bias] | None = None  # OpenAI takes integers here
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    safety_identifier: EndUserId | None = None
    # vLLM's prefix-cache partition; on a deployment with isolate_prefix_cache it partitions within
    # the tenant's own (`gateway.executor.upstreams.salted`). vLLM refuses an empty one.
    cache_salt: str | None = Field(default=None, min_length=1)


class RouteRequest(ChatRequest):
    model: str = "auto"


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: exactly one of `score` (0..1) or `thumbs` (up = 1, down = 0)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(min_length=1, max_length=128)
    score: float | None = Field(default=None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = None
    source: Literal["user", "judge", "eval"] = "user"

    @model_validator(mode="after")
    def _one_label(self) -> FeedbackRequest:
        if (self.score is None) == (self.thumbs is None):
            raise ValueError("give exactly one of score (0 to 1) or thumbs (up or down)")
        return self

    @property
    def value(self) -> float:
        return self.score if self.score is not None else (1.0 if self.thumbs == "up" else 0.0)


M = TypeVar("M", bound=BaseModel)


def _parsed(data: Any, schema: type[M]) -> M:
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise refusal(exc) from None


def validate_feedback(data: Any) -> FeedbackRequest:
    return _parsed(data, FeedbackRequest)


@dataclass(frozen=True, slots=True)
class BodyBounds:
    """How many messages, parts (content parts and tool calls of all messages) and tools a chat body
    may hold (`max_messages`, `max_message_parts`, `max_tools` in the gateway config), and how many
    stop sequences, logit biases and metadata pairs (OpenAI's own bounds: its API refuses more)."""

    messages: int = 2048
    parts: int = 4096
    tools: int = 128
    stops: int = 4
    logit_biases: int = 300
    metadata: int = 16


def check_counts(data: Any, bounds: BodyBounds) -> None:
    """Refuse a body with more messages, parts (content parts and tool calls of all messages),
    tools, stop sequences, logit biases or metadata pairs than the bounds, before validating it:
    validation costs ~5-15 µs of event loop per message, part, tool call or tool, so that 2 MiB of
    tiny ones held the loop for 0.2-0.35 s (and a map is validated whole before its length is
    checked). Counting is one pass over at most `max_messages` messages; anything malformed is left
    to the validation that follows."""
    if not isinstance(data, dict):
        return
    for field in ("tools", "functions"):
        if isinstance(listed := data.get(field), list) and len(listed) > bounds.tools:
            raise InvalidRequest(f"{field}: array too long: at most {bounds.tools} {field}, got {len(listed)}",
                                 param=field, code="array_above_max_length")
    if isinstance(stop := data.get("stop"), list) and len(stop) > bounds.stops:
        raise InvalidRequest(f"stop: array too long: at most {bounds.stops} stop sequences, got {len(stop)}",
                             param="stop", code="array_above_max_length")
    for field, limit, what in (("logit_bias", bounds.logit_biases, "token biases"),
                               ("metadata", bounds.metadata, "key-value pairs")):
        if isinstance(mapped := data.get(field), dict) and len(mapped) > limit:
            raise InvalidRequest(f"{field}: too many properties: at most {limit} {what}, got {len(mapped)}",
                                 param=field, code="object_above_max_properties")
    messages = data.get("messages")
    if not isinstance(messages, list):
        return
    if len(messages) > bounds.messages:
        raise InvalidRequest(f"messages: array too long: at most {bounds.messages} messages, got {len(messages)}",
                             param="messages", code="array_above_max_length")
    parts = 0
    for m in messages:
        if isinstance(m, dict):
            for listed in (m.get("content"), m.get("tool_calls")):
                if isinstance(listed, list):
                    parts += len(listed)
    if parts > bounds.parts:
        raise InvalidRequest(f"messages: too many parts: at most {bounds.parts} content parts and tool calls in all "
                             f"messages, got {parts}", param="messages", code="array_above_max_length")


# How deeply orjson writes nested arrays and objects; it reads four times deeper (1024).
MAX_NESTING = 254


def check_nesting(data: Any) -> None:
    """Refuse a body the gateway could read but not write again: it is serialized to count its
    definitions' tokens (a tool's schema), to key the cache and to be sent upstream, and orjson
    stops at `MAX_NESTING` levels, so that a body nested deeper (a tool schema 130 objects deep)
    was a 500. Writing it is the check: ~1 µs for a usual body, under 0.5 ms for 2 MiB, in Rust,
    where a walk in Python over a body of tiny arrays would hold the event loop for a tenth of a
    second."""
    if not isinstance(data, dict):
        return
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        for field, value in data.items():  # which one: only on the way to a 400
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError:
                raise InvalidRequest(f"{field[:64]}: nested too deeply: arrays and objects may nest at most "
                                     f"{MAX_NESTING} levels in a body", param=field[:64],
                                     code="invalid_value") from None
        raise


# Fields a body may not carry because they change how much an upstream generates past the `max_tokens`
# and `n` each call is priced, reserved and capped by (or how long a prompt it reads): SDK options whose
# fields belong at the top level (litellm merges `extra_body` into the upstream body, over the limits),
# litellm's switches that drop a limit, the output limits of OpenAI-compatible servers that win over
# `max_tokens` (llama.cpp's `n_predict`) or multiply the samples (vLLM's `best_of`), and vLLM's prompt
# template. Refused, never dropped: the client meant them.
UNPRICED = {
    "extra_body": "an SDK option: send its fields at the top level of the body",
    "extra_query": "an SDK option, not a body field",
    "extra_headers": "an SDK option, not a body field",
    "additional_drop_params": "a litellm switch the gateway does not take",
    "drop_params": "a litellm switch the gateway does not take",
    "allowed_openai_params": "a litellm switch the gateway does not take",
    "n_predict": "use max_tokens",
    "max_new_tokens": "use max_tokens",
    "num_predict": "use max_tokens",
    "max_output_tokens": "use max_tokens",
    "max_length": "use max_tokens",
    "best_of": "use n, or a policy with a best-of plan",
    "n_cmpl": "use n",  # llama.cpp's number of completions, over n
    # vLLM renders the messages through a template the request sends: a loop in it writes a prompt of any
    # length (up to the model's context) from a few bytes, billed as prompt tokens far past the bound a budget
    # holds for the request's text (a UTF-8 byte a token)
    "chat_template": "a prompt template sent with the request: the prompt it writes is not bounded by the "
                     "request's size, which is what a budget holds",
}


def check_unpriced(data: Any) -> None:
    if not isinstance(data, dict):
        return
    if not UNPRICED.keys().isdisjoint(data):
        field = next(f for f in UNPRICED if f in data)
        raise InvalidRequest(f"{field}: not supported: {UNPRICED[field]}", param=field, code="unsupported_parameter")
    # Priced by max_completion_tokens; a server that reads only max_tokens (older llama.cpp and
    # llama-cpp-python) would generate up to the other.
    limits = (data.get("max_completion_tokens"), data.get("max_tokens"))
    if None not in limits and limits[0] != limits[1]:
        raise InvalidRequest("max_tokens: differs from max_completion_tokens: send one of them (or the same number)",
                             param="max_tokens", code="invalid_value")


# The roles whose message OpenAI refuses without content (missing or null): all but `assistant` (whose turn may
# be tool calls alone) and the legacy `function`, whose result may be null.
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})


def validate_chat(data: Any, schema: type[ChatRequest] = ChatRequest,
                  bounds: BodyBounds = BodyBounds()) -> dict[str, Any]:
    """Check the body strictly and return it as the plain dict that flows on (unknown fields as sent)."""
    check_counts(data, bounds)
    check_unpriced(data)
    check_nesting(data)
    parsed = _parsed(data, schema)
    if parsed.stream_options is not None and not parsed.stream:
        # OpenAI's and vLLM's own answer: a server that gets it refuses the call, after its price was held
        raise InvalidRequest("stream_options: only allowed when stream is true", param="stream_options",
                             code="invalid_value")
    for i, message in enumerate(parsed.messages):
        if message.content is None and message.role in _CONTENT_REQUIRED:
            # OpenAI refuses it (only an assistant's turn, which may be its tool calls alone, goes without); sent
            # on, the request's price was held for a provider that refuses it too, and the simulated or
            # self-hosted server that does not answered a turn that asked nothing
            raise InvalidRequest(f"messages[{i}].content: a message with role '{message.role}' needs its content "
                                 "(a string or an array of parts)", param=f"messages[{i}].content",
                                 code="missing_field")
        if message.content == [] and message.role in _CONTENT_REQUIRED:
            # OpenAI's answer (its code and words): forwarded, the price was held for a call it refuses, and a
            # server that takes it answered a turn that asked nothing
            raise InvalidRequest(f"messages[{i}].content: empty array: expected an array of at least one part",
                                 param=f"messages[{i}].content", code="empty_array")
        if message.role == "tool" and not message.tool_call_id:
            # OpenAI refuses it (a tool's answer must say which call it answers); forwarded, a provider that
            # does as well was asked after the request's price was held, and one that does not answered a
            # conversation whose tool result belonged to no call
            raise InvalidRequest(f"messages[{i}].tool_call_id: a message with role 'tool' needs the id of the "
                                 "tool call it answers", param=f"messages[{i}].tool_call_id", code="missing_field")
    # Strict mode coerces nothing (a JSON integer for a float field is the same number), so the
    # client's own dict *is* the validated body: forwarding it saves a dump (~7 µs) per request.
    if parsed.model != data.get("model"):  # a default (RouteRequest's `auto`) flows on
        data = {**data, "model": parsed.model}
    body: dict[str, Any] = data  # validated above: a JSON object
    return body
