"""Which upstream errors refuse a request for streaming it (`stream`, `stream_options`): only those
are asked again whole (`executor.upstreams`); any other 4xx is the request's own fault."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.providers.base import ProviderFailure, too_large
from gateway.providers.direct import _refuses_streaming

REFUSALS: list[tuple[int, Any]] = [
    (400, {"error": {"message": "Your organization must be verified to stream this model.",
                     "type": "invalid_request_error", "param": "stream", "code": "unsupported_value"}}),
    (400, {"error": {"message": "Unsupported value: 'stream' does not support true with this model.",
                     "param": "stream", "code": "unsupported_value"}}),
    (400, {"error": {"message": "Unrecognized request argument supplied: stream_options", "param": None,
                     "code": None}}),
    (422, {"detail": [{"type": "extra_forbidden", "loc": ["body", "stream_options"],
                       "msg": "Extra inputs are not permitted"}]}),
    (400, {"error": "Streaming is not supported for this model"}),
]
OTHERS: list[tuple[int, Any]] = [
    (400, {"error": {"message": "This model's maximum context length is 8192 tokens.", "param": "messages",
                     "code": "context_length_exceeded"}}),
    (400, {"error": {"message": "Invalid value for 'temperature'.", "param": "temperature", "code": None}}),
    (400, {"error": {"message": "bad request from upstream", "code": "upstream_error"}}),
    (422, {"detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]}),
    (400, "not an envelope"),
    # Not the request's fault, whatever they name: retried as they are.
    (429, {"error": {"message": "Rate limit reached", "param": "stream"}}),
    (500, {"error": {"message": "streaming is not supported right now"}}),
]


@pytest.mark.parametrize(("status", "body"), REFUSALS)
def test_a_refusal_naming_stream_or_stream_options_is_one(status: int, body: Any) -> None:
    assert _refuses_streaming(status, body)


@pytest.mark.parametrize(("status", "body"), OTHERS)
def test_any_other_error_is_not(status: int, body: Any) -> None:
    assert not _refuses_streaming(status, body)


@pytest.mark.parametrize(("status", "message", "expected"), [
    (429, "Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, "
          "Requested 41000. The input or output tokens must be reduced in order to run successfully.", True),
    (429, "litellm.RateLimitError: AzureException - Request too large for deployment", True),
    (429, "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. "
          "Please try again in 2s.", False),  # the traffic's doing: a wait makes it fit
    (413, "Request too large", False),  # a 413 is a request fault already
    (429, None, False),
])
def test_a_429_for_a_request_over_a_token_limit_on_its_own_is_told_apart(status: int, message: str | None,
                                                                          expected: bool) -> None:
    assert too_large(status, message) is expected
    if status == 429:  # a throttle counts toward the circuit; a request too large on its own does not
        assert ProviderFailure("x", status=status, too_large=expected).counts_against_deployment is not expected
