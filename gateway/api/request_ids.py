"""Every answer carries an `x-request-id`: the client's own when it sent a valid one, else a new one.

The chat route chooses its id first (its request's record and log line are keyed by it) and says it on
its answer; `RequestIds` adds one to every other answer (the other routes, a 404 or 405, a 500), so a
client or a proxy that logs the header has one to quote for whatever it was answered.
"""

from __future__ import annotations

import random
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_HEADER = HEADER.encode()
_MAX_LENGTH = 128


def chosen(given: str | None) -> str:
    """`given` if it is short printable ASCII, else a generated id: a header we echo back and write to logs
    must not carry control characters or arbitrary lengths."""
    if given and len(given) <= _MAX_LENGTH and given.isascii() and given.isprintable():
        return given
    # 96 random bits, as a uuid4's first 24 hex digits were, without the UUID object and the
    # getrandom system call per request: an id names a record only within its tenant's keys, it
    # grants nothing, so it needs to be unique, not unpredictable (random reseeds after a fork).
    return f"req_{random.getrandbits(96):024x}"


def _sent(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER:
            return str(value.decode("latin-1"))
    return None


class RequestIds:
    """Adds `x-request-id` to an answer that goes without one: the id its route chose, else the client's
    (when valid), else a new one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers") or ())
                if not any(name.lower() == _HEADER for name, _ in headers):
                    state: dict[str, Any] = scope.get("state") or {}
                    rid = state.get("request_id") or chosen(_sent(scope))
                    message = {**message, "headers": [*headers, (_HEADER, rid.encode("latin-1"))]}
            await send(message)

        await self.app(scope, receive, send_with_id)
