"""A deployment's API key stays out of what the gateway says of a failed call, whatever the upstream says.

A server (a proxy, a self-hosted API) may quote the `Authorization` header it refused or was sent back in its
error message. The key then went into the failure's detail (every `upstream_failure` log line and the call's
span) and, for a refusal of the request (a 400 or 422), into the error message the client reads: a tenant
could read the operator's provider key. Checked over real HTTP, through the direct path and litellm."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from gateway.providers.base import ProviderFailure
from gateway.providers.direct import DirectBackend
from gateway.providers.litellm_backend import LiteLLMBackend
from tests.support.fake_backend import deployment

KEY = "sk-upstream-provider-key-0123456789"
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 5}


async def _echo(request: web.Request) -> web.Response:
    """Refuses every call, quoting the key it was sent: a 400 for model `refuse`, else a 401."""
    body = await request.json()
    status = 400 if body.get("model") == "refuse" else 401
    said = f"invalid request for key {request.headers.get('authorization', '')!r}"
    return web.json_response({"error": {"message": said, "type": "invalid_request_error", "code": "bad"}},
                             status=status)


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SY_TEST_ECHOED_KEY", KEY)
    yield "SY_TEST_ECHOED_KEY"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _failure(backend: Any, model: str, key_env: str, port: int) -> ProviderFailure:
    d = deployment("echo", model=f"openai/{model}", api_base=f"http://127.0.0.1:{port}/v1", api_key_env=key_env,
                   **({"backend": "litellm"} if isinstance(backend, LiteLLMBackend) else {}))
    with pytest.raises(ProviderFailure) as caught:
        await backend.complete(d, dict(BODY))
    return caught.value


@pytest.mark.parametrize("via", ["direct", "litellm"])
@pytest.mark.parametrize("model", ["refuse", "unauthorised"])
def test_a_key_the_upstream_quotes_back_is_in_no_failure_detail_or_client_message(
        via: str, model: str, key_env: str) -> None:
    async def main() -> ProviderFailure:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _echo)
        runner = web.AppRunner(app)
        await runner.setup()
        port = _port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        backend = DirectBackend() if via == "direct" else LiteLLMBackend()
        try:
            return await _failure(backend, model, key_env, port)
        finally:
            if isinstance(backend, DirectBackend):
                await backend.close()
            await runner.cleanup()

    failure = asyncio.run(main())
    assert failure.status == (400 if model == "refuse" else 401)
    # the upstream's words are still told (an operator needs them), the key in them is not
    assert "invalid request for key" in str(failure) and "[api key]" in str(failure)
    assert KEY not in str(failure) and KEY not in failure.reason
    if model == "refuse":  # a refusal of the request: the client is told what the upstream said, without the key
        assert "invalid request for key" in failure.reason
