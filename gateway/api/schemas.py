"""OpenAI request bodies at the edge, validated with pydantic.

Known fields are typed and checked; fields this gateway does not interpret (newer OpenAI
parameters, provider extensions such as `tools`, `response_format`) are allowed and passed through
untouched, so the gateway stays a drop-in for the `openai` SDK as the API grows.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import InvalidRequest


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=16)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None


class RouteRequest(ChatRequest):
    model: str = "auto"


def validate_chat(data: Any, schema: type[ChatRequest] = ChatRequest) -> dict[str, Any]:
    """Check the body and return it as the plain dict that flows on (unknown fields kept)."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        parsed = schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise InvalidRequest(f"{where}: {first['msg']}{extra}", param=where.split(".")[0] or None,
                             code="invalid_value" if first["type"] != "missing" else "missing_field") from None
    if parsed.model != data.get("model"):
        data = {**data, "model": parsed.model}
    return data
