"""The HTTP server's protocol, bounded: a request's head (its request line and headers) may be at
most `MAX_HEAD_BYTES` and must arrive within `HEAD_TIMEOUT_S`; else it is answered `431` or `408`
and its connection closed.

uvicorn's httptools protocol keeps every header it is sent, and httptools buffers a header's value
until it ends, with no limit of their own: one connection sending headers without end grew the
worker by what it sent (200 MB of headers: ~220 MB more resident) before any route, or any key
check, ran, so a caller without a key could exhaust the memory every tenant's requests share. Nor
does it time a head out: a connection that sends a byte now and then (or nothing at all) was held
for ever, and enough of them use up the worker's file descriptors, refusing everyone's connections.
64 KiB is twice nginx's default (four 8 KiB buffers) and 10 s a sixth of its `client_header_timeout`,
both far beyond any real client's headers.

A body is read by its route (`gateway.api.routes.read_json`, once the key is checked) within
`BODY_TIMEOUT_S` in all, however it trickles in, else `408` and the connection is closed: a caller
sending a byte now and then held its request and its handler for ever (and a `/v1/route` its
tenant's slot in flight). 30 s reads the largest body (`max_body_bytes`, 2 MiB) at 70 KB/s.

Between requests a connection is idle for uvicorn's keep-alive timeout (5 s) at most, whatever arrives that
begins no request: the empty lines HTTP lets a client send before a request line cancelled the timeout,
which nothing set again, so a client sending "\r\n" every few seconds held its connection for ever.

A request answered before it has all arrived (its body unread: a `401`, a `429`) has its connection
closed, not kept alive: uvicorn's keep-alive timeout is cancelled by each read and never set again, so
a caller without a key could hold the connection for ever by trickling a body nobody reads.

Whenever the server closes a connection while a request's head or body is still arriving (a `408`, a
`413`, a `431`, an early answer), it half-closes it and reads and drops what still arrives, closing it once nothing has
come for `LINGER_IDLE_S` and at most `LINGER_MAX_S` after the answer (nginx's `lingering_close`, with
its `lingering_timeout` and `lingering_time`): closed at once with bytes unread, the kernel resets the
connection and the client often loses the answer before reading it, and a client that sends its
whole body before reading (most do) would never see its `413`.

An answer's client must take what it is sent: a write that finds the connection's buffers full (the
client reads nothing, or its window stays shut) waits at most `SEND_TIMEOUT_S` for them to drain, else
the connection is aborted and the request's client taken as gone (nginx's `send_timeout`). A stream's
relay waited on such a client for ever: its tenant's slot in flight stayed taken and its upstream call
unread (the upstream's stall timer runs only while it is read), and its budget hold, renewed as chunks are
read, lapsed while the stream went on, so the tenant could spend the budget again beside it. Its client
gone, the stream is read on and billed as any other (`Upstreams.read_on`). 20 s stays under the margin a
hold outlives its last renewal by (`HOLD_MARGIN_S`).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
LINGER_IDLE_S = 2.0  # see the module's text
LINGER_MAX_S = 30.0
SEND_TIMEOUT_S = 20.0  # see the module's text


def _error(status: int, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    return b"".join((STATUS_LINE[status], b"content-type: application/json\r\n", b"content-length: ",
                     str(len(body)).encode(), b"\r\n", b"connection: close\r\n\r\n", body))


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, counting and timing a request's head until it is complete."""

    _in_head = True   # from a connection's (or a message's) first byte to the end of its headers
    _in_message = False  # from a message's first byte to the end of its body
    _head_bytes = 0
    _head_timer: asyncio.TimerHandle | None = None
    _refused = False  # answered while the request was still arriving: what arrives is dropped
    _linger_timer: asyncio.TimerHandle | None = None
    _linger_ends = 0.0
    _shutting_down = False  # the server is stopping: nothing lingers (it would hold the shutdown up)
    _send_timer: asyncio.TimerHandle | None = None  # while writes wait for the client to read
    _kept_alive = False  # the request's keep-alive, set aside while its body arrives
    _messages_begun = 0
    _deferred: bytes | None = None  # a refusal waiting for an earlier request's answer to end

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every close of uvicorn's (and of the request's cycle, which is handed this transport) goes
        # through `_LingeringClose`.
        self.transport = cast(asyncio.Transport, _LingeringClose(transport, self))
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_send_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = asyncio.get_running_loop().call_later(SEND_TIMEOUT_S, self._send_timed_out)

    def resume_writing(self) -> None:
        self._stop_send_timer()
        super().resume_writing()

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        """The client has read too little of its answer for `SEND_TIMEOUT_S`: aborted, not closed (a close
        waits for the buffered answer to be sent, which it never would be); its request sees the client gone."""
        self._send_timer = None
        cast(_LingeringClose, self.transport).abort_at_once()

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._kept_alive and not self._shutting_down and not self.cycle.response_started:
            self.cycle.keep_alive = True  # all arrived before the answer began: it may be kept
        self._kept_alive = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # Its own request still arriving: a message begun, its head in, and no later request queued behind
        # it (a pipelined request's head or body arriving is another message, and no reason to close).
        own_body_arriving = self._in_message and not self._in_head and not self.pipeline
        super().on_response_complete()
        if self._deferred is not None and not self.pipeline and self.cycle.response_complete \
                and not self.transport.is_closing():
            answer, self._deferred = self._deferred, None
            self.transport.write(answer)
            self.transport.close()
            return
        if own_body_arriving and not self.transport.is_closing():
            # Answered before its request had all arrived (a 401 or 429 before the body is read): kept
            # alive, the connection would have no timer while the rest arrives (each read cancels
            # uvicorn's keep-alive timeout, and nothing sets it again), so a caller without a key could
            # hold it for ever by trickling a body nobody reads. Closed instead (lingering).
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()
        # Until its body has all arrived, an answer (a 401 or 429 decided on the head) ends the connection
        # (see `on_response_complete`), and says so with `connection: close`: a client that took it as kept
        # alive sent its next request into the closed connection ("Server disconnected without sending a
        # response"). Put back when the body is in before the answer begins.
        if self._in_message and self.cycle.keep_alive:
            self._kept_alive, self.cycle.keep_alive = True, False

    def on_message_begin(self) -> None:
        self._messages_begun += 1
        super().on_message_begin()
        self._in_head, self._in_message, self._head_bytes = True, True, 0
        self._time_head()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._linger_on()  # answered: dropped unread
            return
        if self._deferred is not None:
            return  # refused, behind an answer still being sent: dropped unread
        idle, begun = self.timeout_keep_alive_task, self._messages_begun
        super().data_received(data)  # cancels the keep-alive timeout, whatever `data` is
        if idle is not None and self._messages_begun == begun and self.timeout_keep_alive_task is None \
                and not self.transport.is_closing():
            # Only the empty lines HTTP lets a client send before a request line: the connection is as idle
            # as it was, and still ends when it would have. Else nothing timed it again: a client sending
            # "\r\n" every few seconds held a connection (and its file descriptor) for ever.
            self.timeout_keep_alive_task = asyncio.get_running_loop().call_at(idle.when(),
                                                                              self.timeout_keep_alive_handler)
        # Still in the head after parsing: all of `data` was head (what is kept is at most the limit
        # plus one read).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(_error(431, "headers_too_large",
                                    f"the request's headers are over the {MAX_HEAD_BYTES}-byte limit"))

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses (a control character in a header, a space in the path), in the
        error envelope every other refusal has: uvicorn answers it in plain text."""
        self._refuse(_error(400, "invalid_http_request",
                            "the request is not valid HTTP/1.1: its request line or a header could not be parsed"))

    def _time_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self._refused and not self.transport.is_closing():
            self._refuse(_error(408, "request_timeout",
                                f"the request's headers did not arrive within {HEAD_TIMEOUT_S:g} s"))

    def _refuse(self, answer: bytes) -> None:
        self._stop_head_timer()
        if self._deferred is not None:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            # A request that came whole before the refused one is still being answered: written now, the refusal
            # would land inside that answer, and the connection's end cut it (its handler's next write then
            # failed, logged as the gateway's error). It follows that answer instead.
            self._deferred = answer
            return
        self.transport.write(answer)
        self.transport.close()

    def shutdown(self) -> None:
        """The server is stopping: a lingering connection is closed now, and none starts to linger (the
        server waits for its connections, and a client that keeps sending would keep it waiting)."""
        self._shutting_down = True
        if self._refused:
            cast(_LingeringClose, self.transport).close_at_once()
        else:
            super().shutdown()

    def _close(self, transport: asyncio.Transport) -> None:
        """Close the connection: at once, or lingering if its request is still arriving."""
        if self._shutting_down or not (self._in_message and transport.can_write_eof() and not transport.is_closing()):
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the client is gone already: nothing to linger for
            transport.close()
            return
        self._refused = True
        self._linger_ends = asyncio.get_running_loop().time() + LINGER_MAX_S
        self.flow.resume_reading()  # paused while a large body was buffered: it must be read to be dropped
        self._linger_on()

    def _linger_on(self) -> None:
        """Something arrived (or lingering began): close after `LINGER_IDLE_S` more of quiet, or at
        the latest at `_linger_ends`."""
        loop = asyncio.get_running_loop()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        delay = min(LINGER_IDLE_S, max(self._linger_ends - loop.time(), 0.0))
        self._linger_timer = loop.call_later(delay, self._linger_ended)

    def _linger_ended(self) -> None:
        self._linger_timer = None
        cast(_LingeringClose, self.transport).close_at_once()


class _LingeringClose:
    """A connection's transport whose `close`, while a request is still arriving, lingers (see the
    module's text); every close of uvicorn's goes through it."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpToolsProtocol) -> None:
        self._transport, self._protocol, self._closing = transport, protocol, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._protocol._close(self._transport)

    def close_at_once(self) -> None:
        self._closing = True
        self._transport.close()

    def abort_at_once(self) -> None:
        self._closing = True
        self._transport.abort()
