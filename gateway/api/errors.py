"""Every error leaves as the OpenAI envelope {"error": {message, type, param, code}}; never a stack trace.

An unexpected exception is logged once, with its traceback, by `UnexpectedErrors`. It sits inside
starlette's outermost error middleware on purpose: that one re-raises after its handler so that the
server logs the error as well, which printed every 500's traceback twice.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError

log = logging.getLogger("switchyard.api")


def error_response(exc: GatewayError, request_id: str | None = None, trace_id: str | None = None) -> Response:
    """`trace_id`: a chat request's trace (while spans are exported), as its answer would have said it."""
    headers = dict(exc.headers)
    if not exc.retry_helps:
        headers["x-should-retry"] = "false"
    if request_id:
        headers["x-request-id"] = request_id
    if trace_id:
        headers["x-switchyard-trace-id"] = trace_id
    return Response(orjson.dumps(exc.body()), status_code=exc.status, media_type="application/json",
                    headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return error_response(exc, getattr(request.state, "request_id", None), getattr(request.state, "trace_id", None))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message, headers = str(exc.detail), dict(exc.headers or {})
        if exc.status_code == 404:
            # OpenAI's words for a path it does not serve: "Not Found" alone read, to an SDK's
            # `embeddings.create`, like the model it named was the thing not found
            message = f"Invalid URL ({request.method} {request.url.path[:128]})"
            if (bare := request.url.path.rstrip("/")) != request.url.path and _served(request, bare):
                message += f": the path is {bare[:128]}, without the trailing slash"
        if exc.status_code == 405 and (allowed := _allowed(request)):
            # The `Allow` header a 405 must carry (RFC 9110) was dropped with the exception, and the message
            # said only "Method Not Allowed": a client had no way to learn the methods the path takes.
            headers["Allow"] = allowed
            message = f"{request.method} {request.url.path[:128]} is not allowed: use {allowed}"
        err = GatewayError(message, code="not_found" if exc.status_code == 404 else "http_error", headers=headers)
        err.status, err.type = exc.status_code, "invalid_request_error"
        return error_response(err)

    app.add_middleware(UnexpectedErrors)


def _routes(request: Request, path: str | None = None) -> list[Any]:
    """The routes that serve the request's path (or `path`), with any method."""
    scope = request.scope if path is None else {**request.scope, "path": path}
    return [route for route in request.app.router.routes if route.matches(scope)[0] is not Match.NONE]


def _served(request: Request, path: str) -> bool:
    return bool(_routes(request, path))


def _allowed(request: Request) -> str:
    """Every method the request's path takes, over all its routes: starlette's `Allow` names only the first
    route of the path (`/admin/keys` is two, POST and GET), so a PUT was told to use POST alone."""
    methods: list[str] = []
    for route in _routes(request):
        methods += [m for m in getattr(route, "methods", None) or () if m not in methods]
    return ", ".join(methods)


class UnexpectedErrors:
    """Any other exception: one log record with the traceback, then the 500 envelope; not re-raised.

    Whether the response had started is not tracked (that would cost a wrapper around every `send`):
    sending the envelope then fails, and the server closes the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception:
            state: dict[str, Any] = scope.get("state") or {}
            request_id = state.get("request_id")
            log.exception("unexpected error on %s %s (request %s)", scope["method"], scope["path"], request_id)
            response = error_response(GatewayError("internal error in the gateway; see its log"), request_id,
                                      state.get("trace_id"))
            with contextlib.suppress(Exception):  # fails when the status line is out: the server closes
                await response(scope, receive, send)
