"""`switchyard keys` tells a refusal in one line, whatever body the server answered with."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cli import main
from gateway.keys_cli import _refusal


def test_a_refusal_is_one_line_with_what_its_body_says() -> None:
    assert _refusal(404, {"error": {"message": "no key 'k'", "type": "invalid_request_error",
                                    "code": "key_not_found"}}, "") == \
        "HTTP 404 invalid_request_error key_not_found: no key 'k'"
    assert _refusal(401, {"error": {"message": "bad\nkey"}}, "") == "HTTP 401: bad key"  # no type nor code
    assert _refusal(502, None, "<html>\n  bad gateway\n</html>") == "HTTP 502: <html> bad gateway </html>"


@pytest.mark.parametrize(("key", "says"), [
    ("\u201csk-admin\u201d", "the non-ASCII character U+201C at position 1"),  # smart quotes pasted with it
    ("sk-ad\nmin", "a control character at position 6"),
    ("sk-ad\tmin", "a control character at position 6"),
])
def test_an_admin_key_no_header_can_carry_is_refused_in_one_line_that_does_not_print_it(
        key: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A curly quote in the key ended in a traceback from the HTTP client; a line break in it was refused in
    a line that printed the whole admin key ("Illegal header value b'Bearer ...'"), to a terminal or CI log."""
    assert main(["keys", "list", "--url", "http://127.0.0.1:9", "--admin-key", key]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert "admin" not in err.replace("the admin key", "")  # no part of the secret


def test_an_admin_key_read_with_its_line_end_is_sent_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    sent: list[str] = []

    def request(method: str, url: str, **kw: Any) -> httpx.Response:
        sent.append(kw["headers"]["authorization"])
        return httpx.Response(200, json={"object": "list", "data": []})

    monkeypatch.setattr(httpx, "request", request)
    monkeypatch.setenv("SWITCHYARD_ADMIN_KEY", "sk-admin secret\r\n")  # a CRLF file's line, `$(cat key)`
    assert main(["keys", "list", "--url", "http://127.0.0.1:9"]) == 0
    assert sent == ["Bearer sk-admin secret"]


def test_a_url_the_http_client_cannot_parse_is_an_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--url", ":::", "--admin-key", "sk-admin"]) == 1  # a traceback (httpx.InvalidURL)
    assert capsys.readouterr().err.startswith("switchyard keys: cannot reach :::: ")
