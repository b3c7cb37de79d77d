"""`switchyard keys` tells a refusal in one line, whatever body the server answered with."""

from __future__ import annotations

from gateway.keys_cli import _refusal


def test_a_refusal_is_one_line_with_what_its_body_says() -> None:
    assert _refusal(404, {"error": {"message": "no key 'k'", "type": "invalid_request_error",
                                    "code": "key_not_found"}}, "") == \
        "HTTP 404 invalid_request_error key_not_found: no key 'k'"
    assert _refusal(401, {"error": {"message": "bad\nkey"}}, "") == "HTTP 401: bad key"  # no type nor code
    assert _refusal(502, None, "<html>\n  bad gateway\n</html>") == "HTTP 502: <html> bad gateway </html>"
