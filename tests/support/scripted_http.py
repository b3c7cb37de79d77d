"""A scripted OpenAI-compatible upstream: the request handler its tests share (answering with a body, and no log
line per request; each test's subclass says what it answers), and the server that runs one."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

from tests.support.processes import free_port


@contextlib.contextmanager
def scripted_upstream(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded server on a free loopback port answering with `handler`; yields its `/v1` base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    def _send(self, payload: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return None
