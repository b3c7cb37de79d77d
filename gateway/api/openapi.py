"""/openapi.json: every route the app mounts, with the pydantic models that validate its body.

The routes are plain Starlette routes (see `gateway.api.routes`: FastAPI's per-request machinery
would cost latency on the hot path), so FastAPI cannot see them. This module describes them
instead, from the same request models the handlers validate with (`gateway.api.schemas`) and
response models written here, and builds the document once, on the first request for it: no
route pays anything per request. `tests/integration/test_openapi.py` checks that the document
names exactly the mounted routes, and the schema-driven fuzz run checks the responses against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from gateway.api.schemas import ChatRequest, FeedbackRequest, RouteRequest
from gateway.keys import KeyCreate, KeyLimits, Status

_OPEN = ConfigDict(extra="allow")  # responses carry more than these fields: what providers add passes through


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's envelope."""

    error: ErrorDetail


class ChatMessageOut(BaseModel):
    model_config = _OPEN

    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(BaseModel):
    model_config = _OPEN

    index: int
    message: ChatMessageOut
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class PromptTokensDetails(BaseModel):
    model_config = _OPEN

    cached_tokens: int = Field(0, description="of prompt_tokens, those read from the provider's prompt cache")
    audio_tokens: int = Field(0, description="of prompt_tokens, the audio parts'")


class CompletionTokensDetails(BaseModel):
    model_config = _OPEN

    reasoning_tokens: int = Field(0, description="of completion_tokens, those the model reasoned with")
    audio_tokens: int = Field(0, description="of completion_tokens, the audio answer's")
    accepted_prediction_tokens: int = Field(0, description="of completion_tokens, predicted (Predicted Outputs) "
                                                           "and used")
    rejected_prediction_tokens: int = Field(0, description="of completion_tokens, predicted and not used: billed "
                                                           "as completion tokens all the same")


class Usage(BaseModel):
    """Summed over every upstream call that made the answer. The gateway writes both details objects, zeros
    and all, as OpenAI does, whatever the upstream reported."""

    model_config = _OPEN

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletion(BaseModel):
    """`POST /v1/chat/completions` without `stream`; with it, the same as `text/event-stream` chunks."""

    model_config = _OPEN

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class Model(BaseModel):
    id: str = Field(description="a policy (`router/<name>`, `auto`) or a deployment the key may pin")
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class RouteExplanation(BaseModel):
    """`POST /v1/route`: the decision the gateway would take, without calling a model."""

    model_config = _OPEN

    policy: str | None
    plan: str
    reasons: list[str]
    router_version: str
    policy_version: str | None
    signal: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] | None = None
    max_tokens: int | None = None


class FeedbackStored(BaseModel):
    model_config = _OPEN

    object: Literal["feedback"]
    request_id: str
    source: Literal["user", "judge", "eval"]
    origin: Literal["client", "gateway"]  # a label posted here is always a client's
    score: float
    time: float
    thumbs: Literal["up", "down"] | None = None
    replaced: bool


class SpendRow(BaseModel):
    """One group's sums; the grouping columns (`tenant`, `deployment`, `policy`, `plan_kind`, `hour`) as asked."""

    model_config = _OPEN

    requests: int
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    counterfactual_usd: float
    savings_usd: float
    predicted_quality_chosen: float | None
    predicted_quality_counterfactual: float | None


class SpendReport(BaseModel):
    object: Literal["spend"]
    from_: str = Field(alias="from")
    to: str
    group_by: list[str]
    data: list[SpendRow]
    total: SpendRow


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """Without a key on a gateway with tenants, `status` alone."""

    model_config = _OPEN

    status: Literal["ready", "degraded", "unavailable"]
    process: int | None = Field(default=None, description="the answering process's id")
    store: Literal["up", "down"] | None = None
    store_kind: str | None = None
    store_reachable: bool | None = None
    on_store_outage: str | None = None
    policies: list[str] | None = None
    deployments: dict[str, Any] | None = None


class DashboardData(BaseModel):
    model_config = _OPEN


class KeyInfo(KeyCreate):
    """A key's record as the admin API shows it: never the key, only its prefix."""

    model_config = _OPEN

    object: Literal["key"]
    id: str
    prefix: str
    sha256_prefix: str
    status: Status
    created_at: float
    updated_at: float
    revoked_at: float | None = None


class NewKey(KeyInfo):
    key: str = Field(description="the key itself, shown this once")


class KeyList(BaseModel):
    object: Literal["list"]
    data: list[KeyInfo]


class BudgetRow(BaseModel):
    scope: Literal["tenant", "key"]
    period: str
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float
    resets_at: str | None


class RateRow(BaseModel):
    scope: Literal["tenant", "key"]
    limit: Literal["requests_per_minute", "tokens_per_minute"]
    value: int
    used: int
    remaining: int


class BudgetReport(BaseModel):
    object: Literal["budget"]
    tenant: str
    key_id: str | None
    budgets: list[BudgetRow]
    rate_limits: list[RateRow]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: Literal["header", "query", "path"]
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "in": self.where, "required": self.required or self.where == "path",
                "description": self.description, "schema": self.schema}


@dataclass(frozen=True, slots=True)
class Operation:
    """One route as documented: what it takes, what it answers, which errors it can give."""

    path: str
    method: str
    summary: str
    tag: str
    response: type[BaseModel] | None  # None: not JSON (`media` says what)
    request: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    media: str = "application/json"
    also: str | None = None  # a second media type of the 200 (chat's event stream)
    response_headers: tuple[str, ...] = ()


_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
CHAT_HEADERS = (
    Param("x-switchyard-policy", "header", "the policy to route under (one the key may use)"),
    Param("x-switchyard-max-cost-usd", "header", "a cost cap for this request, in USD", _POSITIVE),
    Param("x-switchyard-latency-slo-ms", "header", "a latency objective for this request", _POSITIVE),
    Param("x-switchyard-cache", "header", "force: cache even at temperature > 0; bypass, no-store: do not",
          {"type": "string", "enum": ["force", "bypass", "no-store"]}),
    Param("x-switchyard-timeout-ms", "header", "the request's deadline", _POSITIVE),
    Param("x-request-id", "header", "echoed back; the key feedback refers to (printable ASCII, at most 128)"),
)
_ANSWER_HEADERS = ("x-request-id", "x-switchyard-model", "x-switchyard-plan", "x-switchyard-cache",
                   "x-switchyard-cost-usd", "x-switchyard-trace-id", "x-switchyard-evidence")
_CHAT_ERRORS = (400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504)
_ADMIN_ERRORS = (400, 401, 403, 413, 503)
_KEY_ID = Param("key_id", "path", "the key's id")

OPERATIONS: tuple[Operation, ...] = (
    Operation("/v1/chat/completions", "post", "Chat completion, routed", "openai", ChatCompletion, ChatRequest,
              CHAT_HEADERS, _CHAT_ERRORS, also="text/event-stream", response_headers=_ANSWER_HEADERS),
    Operation("/v1/route", "post", "Explain the routing decision, calling no model", "routing", RouteExplanation,
              RouteRequest, CHAT_HEADERS[:2] + CHAT_HEADERS[2:3], (400, 401, 403, 404, 413, 422, 429, 503)),
    Operation("/v1/feedback", "post", "Label a request this key made", "routing", FeedbackStored, FeedbackRequest,
              errors=(400, 401, 403, 404, 413, 503)),
    Operation("/v1/models", "get", "Policies and deployments this key may call", "openai", ModelList,
              errors=(401, 403)),
    Operation("/v1/models/{model}", "get", "One model this key may call", "openai", Model,
              params=(Param("model", "path", "a model id as `GET /v1/models` lists it"),), errors=(401, 403, 404)),
    Operation("/v1/spend", "get", "Spend from the ledger, grouped", "operations", SpendReport, params=(
        Param("group_by", "query", "comma-separated: tenant, deployment, policy, plan_kind, hour"),
        Param("from", "query", "ISO 8601 time or unix seconds; default: a day before `to`"),
        Param("to", "query", "ISO 8601 time or unix seconds; default: now")), errors=(400, 401, 403, 503)),
    Operation("/v1/budget", "get", "The caller's own budgets and rate windows, as of now", "operations",
              BudgetReport, errors=(401, 403, 503)),
    Operation("/admin/keys", "post", "Create a key (admin key): returned once", "keys", NewKey, KeyCreate,
              errors=_ADMIN_ERRORS),
    Operation("/admin/keys", "get", "Every key's record (admin key)", "keys", KeyList,
              params=(Param("tenant", "query", "only this tenant's keys"),), errors=_ADMIN_ERRORS),
    Operation("/admin/keys/{key_id}", "get", "One key's record (admin key)", "keys", KeyInfo, params=(_KEY_ID,),
              errors=(*_ADMIN_ERRORS, 404)),
    Operation("/admin/keys/{key_id}", "patch", "Change a key's limits, policies, expiry, metadata (admin key)",
              "keys", KeyInfo, KeyLimits, (_KEY_ID,), (*_ADMIN_ERRORS, 404)),
    Operation("/admin/keys/{key_id}", "delete", "Revoke a key; its record stays (admin key)", "keys", KeyInfo,
              params=(_KEY_ID,), errors=(*_ADMIN_ERRORS, 404)),
    Operation("/admin/keys/{key_id}/rotate", "post", "A new secret for a key, returned once (admin key)", "keys",
              NewKey, params=(_KEY_ID,), errors=(*_ADMIN_ERRORS, 404)),
    Operation("/healthz", "get", "Liveness: the process answers", "operations", Health),
    Operation("/readyz", "get", "Readiness: 503 when requests would be refused", "operations", Readiness,
              errors=(503,)),
    Operation("/metrics", "get", "Prometheus metrics", "operations", None, errors=(401,),
              media="text/plain"),
    Operation("/dashboard", "get", "The dashboard page", "dashboard", None, media="text/html"),
    Operation("/dashboard/data", "get", "The dashboard's figures", "dashboard", DashboardData, errors=(401,)),
    Operation("/dashboard/static/{name}", "get", "The dashboard's scripts and styles", "dashboard", None,
              params=(Param("name", "path", "a file name"),), errors=(404,), media="application/octet-stream"),
)

_REASONS = {200: "OK", 400: "Bad request", 401: "No or unknown key", 403: "Not allowed for this key",
            404: "Not found", 413: "Body too large", 422: "No plan meets the constraints",
            429: "Over the tenant's rate or budget", 500: "Gateway error", 502: "Every provider attempt failed",
            503: "Store or deployment unavailable", 504: "Deadline passed"}
_REF = "#/components/schemas/{model}"
# One server-sent event of a streamed answer (each is validated alone, as OpenAPI 3.2 has it).
_SSE_EVENT = {"type": "object", "required": ["data"], "description": "one server-sent event",
              "properties": {"data": {"type": "string", "description": "a `chat.completion.chunk` as JSON, "
                                      "an error envelope if the stream fails midway, then `[DONE]`"},
                             "event": {"type": "string"}, "id": {"type": "string"}}}


def _models(operations: Iterable[Operation]) -> dict[str, Any]:
    """Component schemas: request models as they validate, response models as they serialize."""
    pairs: dict[tuple[type[BaseModel], Literal["validation", "serialization"]], None] = {
        (ErrorResponse, "serialization"): None}
    for op in operations:
        if op.request is not None:
            pairs[(op.request, "validation")] = None
        if op.response is not None:
            pairs[(op.response, "serialization")] = None
    _, schema = models_json_schema(list(pairs), ref_template=_REF)
    defs: dict[str, Any] = schema.get("$defs", {})
    return defs


def _content(op: Operation) -> dict[str, Any]:
    if op.response is None:
        return {op.media: {"schema": {"type": "string"}}}
    out: dict[str, Any] = {"application/json": {"schema": {"$ref": _REF.format(model=op.response.__name__)}}}
    if op.also:
        out[op.also] = {"schema": _SSE_EVENT}
    return out


def _operation(op: Operation) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}}
    ok: dict[str, Any] = {"description": _REASONS[200], "content": _content(op)}
    if op.response_headers:
        ok["headers"] = {h: {"schema": {"type": "string"}} for h in op.response_headers}
    doc: dict[str, Any] = {
        "summary": op.summary, "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_')}",
        "tags": [op.tag], "parameters": [p.doc() for p in op.params],
        "responses": {"200": ok, **{str(s): {"description": _REASONS[s], "content": error} for s in op.errors}}}
    if op.request is not None:
        doc["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": _REF.format(model=op.request.__name__)}}}}
    return doc


def openapi_document(title: str, version: str, operations: Sequence[Operation] = OPERATIONS) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "An OpenAI-compatible gateway that routes each request to a model under a policy."},
        "paths": paths,
        "components": {"schemas": _models(operations),
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"apiKey": []}],  # a gateway without tenants takes no key
    }


def install_openapi(app: FastAPI, operations: Sequence[Operation] = OPERATIONS) -> None:
    """Serve the document at /openapi.json (and /docs), built on first use and kept."""
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app.title, app.version, operations)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
