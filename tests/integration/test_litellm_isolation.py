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


def test_a_budget_and_a_cost_cap_hold_through_litellm(simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm merges a body's `extra_body` over the `max_tokens` and `n` the gateway priced the call by: a
    one-token request with `extra_body: {max_tokens: 4096, n: 16}` was billed 22 times its cost cap. It is
    refused now, before anything is reserved or sent."""
    simulator.reset()
    with running_gateway(_gateway(simulator.url, monkeypatch)) as gw:
        r = httpx.post(gw.base_url + "/v1/chat/completions", timeout=30,
                       headers={"x-switchyard-max-cost-usd": "0.00005"},
                       json={"model": "small", "messages": [{"role": "user", "content": "Tell me about the sea."}],
                             "max_tokens": 1, "extra_body": {"max_tokens": 4096, "n": 16}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "extra_body"
    assert simulator.stats()["sim-small"]["requests"] == 0


def test_only_openais_chat_fields_reach_litellm(caplog: pytest.LogCaptureFixture) -> None:
    """litellm reads where to send a call and with which credentials from the same keywords as the model's
    parameters, and its list of them misses some (`aws_bedrock_runtime_endpoint`, `vertex_project`): a
    client's body reaches it through an allow-list (OpenAI's fields and the extensions litellm translates),
    and what is dropped is said in a warning line."""
    from gateway.config import DeploymentConfig
    from gateway.providers.litellm_backend import LiteLLMBackend

    deployment = DeploymentConfig.model_validate({"name": "d", "model": "bedrock/anthropic.claude-3", "tier": "small",
                                                  "price": {"input_per_mtok": 1, "output_per_mtok": 1}})
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "n": 1, "temperature": 0.2,
            "tools": [], "stream_options": {"include_usage": True}, "aws_bedrock_runtime_endpoint": "http://x",
            "aws_access_key_id": "AKIA", "vertex_project": "p", "vertex_credentials": "{}", "callbacks": ["x"],
            "success_callback": ["x"], "api_base": "http://x", "mock_response": "owned", "top_k": 5}
    kwargs = LiteLLMBackend()._kwargs(deployment, {**body, "prompt_cache_retention": "24h",
                                                   "thinking": {"type": "enabled", "budget_tokens": 1024}}, None)
    assert set(kwargs) == {"messages", "max_tokens", "n", "temperature", "tools", "stream_options", "top_k",
                           "prompt_cache_retention", "thinking", "model", "timeout", "num_retries"}
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "fields_dropped"]
    assert "`aws_bedrock_runtime_endpoint`" in line.getMessage() and "`top_k`" not in line.getMessage()


@pytest.mark.parametrize("part", [{"type": "image_url"}, {"type": "text"},
                                  {"type": "input_audio", "input_audio": None}])
def test_a_content_part_without_its_field_is_a_400_that_opens_no_circuit(
        part: dict[str, object], simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm fails on an `image_url` part without its `image_url` (a KeyError, raised as a connection error
    with status 500) before anything is sent: the request was a 502, retried, and counted against the
    deployment, so that a couple of them opened its circuit for every tenant. Such a part is the client's
    mistake, refused at the edge as OpenAI refuses it."""
    simulator.reset()
    bad = {"model": "small", "messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, part]}]}
    with running_gateway(_gateway(simulator.url, monkeypatch)) as gw:
        for _ in range(6):  # more than the failures that open a circuit
            r = httpx.post(gw.base_url + "/v1/chat/completions", timeout=30, json=bad)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "messages[0].content[1]"
            assert f"'{part['type']}'" in r.json()["error"]["message"]
        good = httpx.post(gw.base_url + "/v1/chat/completions", timeout=30,
                          json={"model": "small", "messages": [{"role": "user", "content": "hi"}]})
    assert good.status_code == 200, good.text
    assert simulator.stats().get("sim-small", {}).get("requests", 0) == 1


def test_a_request_litellm_refuses_before_sending_it_opens_no_circuit(
        simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A content part of a type litellm does not know is forwarded (a server may take its own kinds), and
    litellm refuses it before sending anything, as a connection error with status 500: retried and counted
    against the deployment, a few of them from one client opened its circuit for every tenant."""
    simulator.reset()
    odd = {"model": "small", "messages": [{"role": "user", "content": [{"type": "hologram", "hologram": {}}]}]}
    with running_gateway(_gateway(simulator.url, monkeypatch)) as gw:
        for _ in range(6):  # more than the failures that open a circuit
            r = httpx.post(gw.base_url + "/v1/chat/completions", timeout=30, json=odd)
            assert r.status_code == 502, r.text
            assert "refused before it was sent" in r.json()["error"]["message"]
        good = httpx.post(gw.base_url + "/v1/chat/completions", timeout=30,
                          json={"model": "small", "messages": [{"role": "user", "content": "hi"}]})
    assert good.status_code == 200, good.text
    assert simulator.stats().get("sim-small", {}).get("requests", 0) == 1


def test_a_request_the_provider_rejects_through_litellm_is_told_why(
        simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the direct path a 400 says what the provider said about the request; through litellm it said only
    "upstream answered 400", and the client could not tell which field to fix."""
    with running_gateway(_gateway(simulator.url, monkeypatch)) as gw:
        r = httpx.post(gw.base_url + "/v1/chat/completions", timeout=30, json={
            "model": "small", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("deployment 'small' rejected the request: upstream answered 400: "
                                            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.")


class _EmptyAnswer(http.server.BaseHTTPRequestHandler):
    """A server (a proxy in front of the provider, say) answering every call 200 with a body that is no
    Messages API answer: litellm fails reading it, a KeyError it raises as a connection error."""

    calls = 0

    def do_POST(self) -> None:
        _EmptyAnswer.calls += 1
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        return None


def test_a_deployment_whose_answers_litellm_cannot_read_opens_its_circuit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that reached the provider and failed on its answer is the deployment's failure: taken for a
    request litellm refused before sending it, it was never retried nor counted, so a deployment answering
    every call with a body litellm cannot read never opened its circuit, and each client was told its
    request had not been sent."""
    _EmptyAnswer.calls = 0
    with scripted_upstream(_EmptyAnswer) as base:
        deployment = {"name": "claude", "model": "anthropic/claude-3-5-sonnet", "backend": "litellm",
                      "api_base": base, "tier": "small", "timeout_s": 3, "max_retries": 0,
                      "price": {"input_per_mtok": 1, "output_per_mtok": 1}}
        config = parse_config({"deployments": [deployment, {**deployment, "name": "other", "tier": "large"}]},
                              "unreadable answers")
        with running_gateway(create_app(config, watch_policies_s=None, watch_router_s=None)) as gw:
            answers = [httpx.post(gw.base_url + "/v1/chat/completions", timeout=30,
                                  json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
                       for _ in range(8)]  # more than the failures that open a circuit
    assert not any("refused before it was sent" in r.text for r in answers), answers[0].text
    assert answers[-1].status_code == 503 and "circuit is open" in answers[-1].json()["error"]["message"]
    assert _EmptyAnswer.calls < 8


def test_the_clients_model_is_not_reported_as_a_dropped_field(caplog: pytest.LogCaptureFixture) -> None:
    """Every body names a `model`, which the deployment's always replaces: each call through litellm logged a
    `fields_dropped` warning naming `model`, so the line fired for every request and its count said nothing of
    the fields a client's requests lose."""
    from gateway.config import DeploymentConfig
    from gateway.providers.litellm_backend import LiteLLMBackend

    deployment = DeploymentConfig.model_validate({"name": "d", "model": "anthropic/claude-haiku-4-5", "tier": "small",
                                                  "price": {"input_per_mtok": 1, "output_per_mtok": 1}})
    kwargs = LiteLLMBackend()._kwargs(deployment, {"model": "router/balanced", "max_tokens": 5,
                                                   "messages": [{"role": "user", "content": "hi"}]}, None)
    assert kwargs["model"] == "anthropic/claude-haiku-4-5"
    assert [r for r in caplog.records if getattr(r, "event", None) == "fields_dropped"] == []
