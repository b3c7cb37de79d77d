"""Every error leaves as the OpenAI envelope {"error": {message, type, param, code}}; never a stack trace."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import GatewayError

log = logging.getLogger("switchyard.api")


def error_response(exc: GatewayError, request_id: str | None = None) -> Response:
    headers = dict(exc.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return Response(orjson.dumps(exc.body()), status_code=exc.status, media_type="application/json",
                    headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return error_response(exc, getattr(request.state, "request_id", None))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err = GatewayError(str(exc.detail), code="not_found" if exc.status_code == 404 else "http_error")
        err.status, err.type = exc.status_code, "invalid_request_error"
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(GatewayError("internal error in the gateway; see its log"),
                              getattr(request.state, "request_id", None))
