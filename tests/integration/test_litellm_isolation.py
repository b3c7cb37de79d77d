"""A client's body cannot steer litellm: its control parameters (where to send, which key, which
headers, a canned answer) come from the deployment, never from the request."""

from __future__ import annotations

import http.server
from collections.abc import Iterator

import httpx
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.processes import Simulator, running_gateway
from tests.support.scripted_http import scripted_upstream


class _Trap(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        _Trap.seen.append(dict(self.headers))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def trap() -> Iterator[str]:
    _Trap.seen = []
    with scripted_upstream(_Trap) as base:
        yield base


def _gateway(simulator_url: str | None, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("SY_TEST_PROVIDER_KEY", "sk-secret-provider-key")
    deployment = {"name": "small", "model": "openai/sim-small", "backend": "litellm", "tier": "small",
                  "api_key_env": "SY_TEST_PROVIDER_KEY", "timeout_s": 3, "max_retries": 0,
                  "price": {"input_per_mtok": 1, "output_per_mtok": 1}}
    if simulator_url:
        deployment["api_base"] = simulator_url
    config = parse_config({"deployments": [deployment, {**deployment, "name": "large", "tier": "large"}]},
                          "litellm isolation")
    return create_app(config, watch_policies_s=None, watch_router_s=None)


@pytest.mark.parametrize("field", ["api_base", "base_url"])
def test_a_client_cannot_send_a_litellm_deployments_key_to_its_own_server(
        field: str, trap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # No api_base of its own: litellm would take the body's, with the deployment's key.
    with running_gateway(_gateway(None, monkeypatch)) as gw:
        r = httpx.post(gw.base_url + "/v1/chat/completions", timeout=30, json={
            "model": "small", "messages": [{"role": "user", "content": "hi"}], field: trap,
            "extra_headers": {"x-stolen": "1"}, "custom_llm_provider": "openai"})
    assert r.status_code != 200  # the real provider is out of reach here; what matters is where it went
    assert _Trap.seen == []
    assert "sk-secret-provider-key" not in r.text


def test_a_client_cannot_fake_a_litellm_answer(simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_gateway(_gateway(simulator.url, monkeypatch)) as gw:
        r = httpx.post(gw.base_url + "/v1/chat/completions", timeout=30, json={
            "model": "small", "messages": [{"role": "user", "content": "hi"}],
            "mock_response": "owned", "api_key": "sk-client-chosen"})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] != "owned"
