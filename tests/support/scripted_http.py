"""A scripted OpenAI-compatible upstream's request handler: what its tests share (answering with a body, and
no log line per request); each test's subclass says what it answers."""

from __future__ import annotations

import http.server


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    def _send(self, payload: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return None
