"""The HTTP server's protocol, bounded: a request's head (its request line and headers) may be at
most `MAX_HEAD_BYTES`; a longer one is answered `431` and its connection closed.

uvicorn's httptools protocol keeps every header it is sent, and httptools buffers a header's value
until it ends, with no limit of their own: one connection sending headers without end grew the
worker by what it sent (200 MB of headers: ~220 MB more resident) before any route, or any key
check, ran, so a caller without a key could exhaust the memory every tenant's requests share.
64 KiB is twice nginx's default (four 8 KiB buffers) and far above any real client's headers.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
# After the 431 the connection is half-closed and what still arrives is read and dropped for this
# long, then it is closed: closed at once with bytes unread, the kernel would reset it, and the
# client would often lose the answer before reading it.
LINGER_S = 1.0

_TOO_LARGE = orjson.dumps({"error": {
    "message": f"the request's headers are over the {MAX_HEAD_BYTES}-byte limit",
    "type": "invalid_request_error", "param": None, "code": "headers_too_large"}})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, counting what a request's head has sent until it is complete."""

    _in_head = True   # between a message's first byte and the end of its headers
    _head_bytes = 0
    _refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered: dropped unread
        super().data_received(data)
        # Still in the head after parsing: all of `data` was head (what is kept is at most the limit
        # plus one read).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        transport = self.transport
        transport.write(b"".join((
            STATUS_LINE[431], b"content-type: application/json\r\n",
            b"content-length: ", str(len(_TOO_LARGE)).encode(), b"\r\n", b"connection: close\r\n\r\n", _TOO_LARGE)))
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_S, transport.close)
