"""One error tree for the whole gateway.

Every failure a client can see is a `GatewayError` subclass carrying its HTTP status, its
OpenAI error `type` and a stable `code`. The API layer turns any of them into the OpenAI
error envelope in one place (`gateway.api.errors`); nothing else formats errors.

| class                   | status | type                   | when                                            |
| ----------------------- | ------ | ---------------------- | ----------------------------------------------- |
| InvalidRequest          | 400    | invalid_request_error  | malformed JSON, schema violations               |
| AuthenticationFailed    | 401    | authentication_error   | missing or unknown API key                      |
| PermissionDenied        | 403    | permission_error       | policy or pinned deployment not allowed         |
| NotFound                | 404    | invalid_request_error  | unknown model / policy / deployment / key id    |
| RequestTimeout          | 408    | invalid_request_error  | body not all sent within `BODY_TIMEOUT_S`       |
| PayloadTooLarge         | 413    | invalid_request_error  | body over `max_body_bytes`                      |
| ConstraintUnsatisfiable | 422    | invalid_request_error  | no candidate plan meets the policy's constraints |
| RateLimited             | 429    | rate_limit_error       | tenant, key or deployment over a rate limit     |
| RateLimitNeverFits      | 429    | rate_limit_error       | a request more than a whole minute's limit      |
| BudgetExceeded          | 429    | insufficient_quota     | tenant or key over its spend budget             |
| BudgetHeldInFlight      | 429    | insufficient_quota     | its room held by requests in flight (retry)     |
| ProviderMisconfigured   | 500    | server_error           | a deployment's key variable is unset            |
| UpstreamError           | 502    | upstream_error         | every provider attempt failed                   |
| StoreOutage             | 503    | server_error           | store down, budget/rate unknown, `fail_closed`  |
| DeploymentUnavailable   | 503    | service_unavailable    | circuit open, nothing called (Retry-After)      |
| UpstreamTimeout         | 504    | timeout_error          | deadline passed, or every attempt timed out     |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.executor.result import CallRecord


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"
    # Calls of the failed request that did answer, and cost money, before this error (a cascade's
    # first step, best-of-n's other samples): the ledger bills them.
    billed: tuple[CallRecord, ...] = ()
    # False: sending the same request again cannot succeed soon, so the answer says `x-should-retry: false`,
    # which the openai SDKs obey instead of retrying every 429 and 5xx (twice, by default).
    retry_helps: bool = True

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class InvalidRequest(GatewayError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class AuthenticationFailed(GatewayError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class PermissionDenied(GatewayError):
    status, type, code = 403, "permission_error", "policy_not_allowed"


class NotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class RequestTimeout(GatewayError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class ClientClosedRequest(GatewayError):
    """The client closed its connection while its request's body was still arriving: nobody reads the
    answer, but the request is still one line in the log and the metrics (nginx's 499)."""

    status, type, code = 499, "invalid_request_error", "client_closed_request"


class PayloadTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class UnsupportedMediaType(GatewayError):
    status, type, code = 415, "invalid_request_error", "unsupported_content_encoding"
    retry_helps = False


class ConstraintUnsatisfiable(GatewayError):
    status, type, code = 422, "invalid_request_error", "constraint_unsatisfiable"


class RateLimited(GatewayError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class RateLimitNeverFits(RateLimited):
    """A request that needs more than a rate limit allows in a whole minute: no wait admits it."""

    retry_helps = False  # the request has to ask for fewer tokens, or an operator raise the limit


class BudgetExceeded(GatewayError):
    status, type, code = 429, "insufficient_quota", "budget_exceeded"
    retry_helps = False  # the budget's period has to end, or an operator raise it


class BudgetHeldInFlight(BudgetExceeded):
    """What is spent leaves room for the request; what requests in flight hold does not, until they end."""

    retry_helps = True


class UpstreamError(GatewayError):
    status, type, code = 502, "upstream_error", "upstream_failed"


class StoreOutage(GatewayError):
    status, type, code = 503, "server_error", "store_unavailable"


class ProviderMisconfigured(GatewayError):
    status, type, code = 500, "server_error", "provider_misconfigured"
    retry_helps = False  # a deployment's key variable is unset until an operator sets it and restarts


class DeploymentUnavailable(GatewayError):
    status, type, code = 503, "service_unavailable", "deployment_unavailable"


class UpstreamTimeout(GatewayError):
    status, type, code = 504, "timeout_error", "upstream_timeout"


class ConfigError(Exception):
    """A config or policy file is invalid; the message names the file and the field."""


class InputError(ValueError):
    """A file or argument given to a command cannot be used (a router artifact, a data file); the
    message names it and says what is wrong, so the command line can print it as one line."""
