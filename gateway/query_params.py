"""Query parameters checked the one way every endpoint that takes them checks them."""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request

from gateway.errors import InvalidRequest


def checked_query(request: Request, known: frozenset[str], lists: frozenset[str] = frozenset()) -> QueryParams:
    """The request's query, every parameter in it `known` and given once (a list in `lists` may repeat): a
    misspelt one was ignored (`?tenat=acme` listed every tenant's keys) and a repeated one read as its last."""
    query = request.query_params
    for name in query:
        if name not in known:
            raise InvalidRequest(f"unknown parameter '{name[:64]}' (use {', '.join(sorted(known))})", param=name[:64])
        if name not in lists and len(query.getlist(name)) > 1:  # which one did the client mean?
            raise InvalidRequest(f"{name}: given more than once", param=name)
    return query
