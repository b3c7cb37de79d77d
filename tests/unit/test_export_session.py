"""The span exporter's session works out the environment's proxy and CA settings once, and they are
what requests works out on every post: posts still go through the proxy the environment names."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from gateway.otlp_spans import InPlaceSpanExporter, SettledSession, export_session

URL = "http://collector.invalid:4318/v1/traces"


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    """An HTTP proxy that answers every request itself, noting the target it was asked for."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.path)  # a proxy is sent the absolute URL
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                 "all_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_every_post_goes_through_the_proxy_the_environment_names(
        proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    address, seen = proxy
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", address)
    exporter = InPlaceSpanExporter(endpoint=URL, session=export_session())
    span = TracerProvider().get_tracer("t").start_span("s")
    span.end()
    readable = span._readable_span()
    assert exporter.export([readable]) == SpanExportResult.SUCCESS
    assert exporter.export([readable]) == SpanExportResult.SUCCESS
    assert seen == [URL, URL]


@pytest.mark.parametrize("env", [{}, {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "other.example"},
                                 {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "collector.invalid"},
                                 {"HTTPS_PROXY": "http://proxy:3128", "REQUESTS_CA_BUNDLE": "/etc/ca.pem"}])
def test_the_settings_are_those_requests_works_out(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxy_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settled, plain = SettledSession(), requests.Session()
    for url in (URL, "https://collector.invalid/v1/traces"):
        expected = plain.merge_environment_settings(url, {}, None, True, None)
        first = settled.merge_environment_settings(url, {}, None, True, None)
        first["proxies"]["http"] = "changed by a caller"
        assert settled.merge_environment_settings(url, {}, None, True, None) == expected
        assert first is not settled.merge_environment_settings(url, {}, None, True, None)
    given = {"http": "http://given:1"}
    assert settled.merge_environment_settings(URL, dict(given), None, True, None) == \
        plain.merge_environment_settings(URL, dict(given), None, True, None)


def test_a_credential_providers_session_is_left_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", "mine")
    assert export_session() is None
    monkeypatch.delenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER")
    assert isinstance(export_session(), SettledSession)
