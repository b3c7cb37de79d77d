"""`isolate_prefix_cache: true` sends every call of a deployment a `cache_salt` keyed to its tenant, so
that a self-hosted server's prefix cache (vLLM's) is shared within a tenant, never across tenants,
whose timing would tell one tenant what prefixes another sent. Over real HTTP, through the direct
path and litellm, to an OpenAI-compatible server that records what it receives (a stand-in for vLLM)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from tests.support.lab import policies_folder
from tests.support.processes import GatewayServer, running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

# litellm's vLLM provider imports a pydantic model that warns about its own typing (not ours to fix).
pytestmark = pytest.mark.filterwarnings("ignore:Items .* are using the `ReadOnly` qualifier:UserWarning")
TENANTS = [{"name": "alice", "api_key_sha256": hash_key("sk-alice")},
           {"name": "bob", "api_key_sha256": hash_key("sk-bob")}]


class _Upstream(ScriptedHandler):
    """Answers every chat completion with "ok" (whole, or as a stream) and keeps the bodies it got.
    Model `fake-cut` breaks its streams off after the first chunk."""

    protocol_version = "HTTP/1.1"
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        _Upstream.bodies.append(body)
        usage = {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
        if body.get("stream") and body["model"] == "fake-cut":
            self._cut(body)
            return
        if body.get("stream"):
            chunks = [{"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"},
                                    "finish_reason": "stop"}]},
                      {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [], "usage": usage}]
            payload = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
            self._send(payload, "text/event-stream")
            return
        self._send(orjson.dumps({
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"], "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}),
            "application/json")

    def _cut(self, body: dict[str, Any]) -> None:
        """One chunk of a chunked SSE body, then the connection dropped: no finish, no [DONE]."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        event = b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 0,
                                          "model": body["model"], "choices": [
                                              {"index": 0, "delta": {"role": "assistant", "content": "Our"},
                                               "finish_reason": None}]}) + b"\n\n"
        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        self.wfile.flush()
        self.close_connection = True



@dataclass
class Lab:
    gateway: GatewayServer

    def ask(self, key: str, model: str, **extra: Any) -> Any:
        """Send a fresh prompt; return the body the upstream received for it."""
        (body,) = self.calls(key, model, **extra)
        return body

    def calls(self, key: str, model: str, **extra: Any) -> list[dict[str, Any]]:
        """Send a fresh prompt; return the bodies of every upstream call made for it, in order."""
        marker = uuid.uuid4().hex
        client = openai.OpenAI(base_url=self.gateway.base_url + "/v1", api_key=key, max_retries=0)
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Summarise our contract {marker}"}], **extra)
        if extra.get("stream"):
            assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices).endswith("ok")
        return [b for b in _Upstream.bodies if marker in orjson.dumps(b["messages"]).decode()]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with scripted_upstream(_Upstream) as base:
        price = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}
        deployments = [
            {"name": "small", "model": "openai/fake-vllm", "api_base": base, "tier": "small", "price": price,
             "isolate_prefix_cache": True},
            {"name": "large", "model": "openai/fake-vllm", "api_base": base, "tier": "large", "price": price},
            {"name": "lite", "model": "hosted_vllm/fake-vllm", "api_base": base, "backend": "litellm", "tier": "lab",
             "price": price, "isolate_prefix_cache": True, "max_retries": 0},
            {"name": "cut", "model": "openai/fake-cut", "api_base": base, "tier": "lab", "price": price,
             "isolate_prefix_cache": True, "max_retries": 0},
            {"name": "next", "model": "openai/fake-vllm", "api_base": base, "tier": "lab", "price": price,
             "isolate_prefix_cache": True, "supports_prefill": True},
        ]
        config = parse_config({"deployments": deployments, "tenants": TENANTS}, "prefix cache isolation")
        policies = policies_folder(tmp_path_factory.mktemp("salt"), {"resumed": {
            "candidates": [{"single": "cut"}], "fallbacks": {"cut": ["next"]}, "cache": {"enabled": False}}})
        with running_gateway(create_app(config, policies_dir=policies, watch_policies_s=None,
                                        watch_router_s=None)) as gw:
            yield Lab(gw)


def test_each_tenant_has_one_salt_of_its_own_on_an_isolating_deployment(lab: Lab) -> None:
    alice = [lab.ask("sk-alice", "small")["cache_salt"] for _ in range(2)]
    alice.append(lab.ask("sk-alice", "small", stream=True)["cache_salt"])
    bob = lab.ask("sk-bob", "small")["cache_salt"]
    assert alice[0] == alice[1] == alice[2]  # stable: alice's requests still share her cached prefixes
    assert bob != alice[0] and len(bob) == len(alice[0]) == 64
    assert "alice" not in alice[0] and "bob" not in bob  # keyed, never the name (nor its plain hash)


def test_a_stream_resumed_on_its_fallback_carries_the_same_salt(lab: Lab) -> None:
    cut, resumed = lab.calls("sk-alice", "router/resumed", stream=True)
    assert (cut["model"], resumed["model"]) == ("fake-cut", "fake-vllm")
    assert resumed["messages"][-1] == {"role": "assistant", "content": "Our"}  # continued, not started afresh
    assert cut["cache_salt"] == resumed["cache_salt"] == lab.ask("sk-alice", "small")["cache_salt"]


def test_a_deployment_without_the_setting_is_sent_no_salt(lab: Lab) -> None:
    assert "cache_salt" not in lab.ask("sk-alice", "large")
    assert "cache_salt" not in lab.ask("sk-alice", "large", stream=True)


def test_the_litellm_path_sends_the_same_salt(lab: Lab) -> None:
    direct = lab.ask("sk-alice", "small")["cache_salt"]
    assert lab.ask("sk-alice", "lite")["cache_salt"] == direct
    assert lab.ask("sk-bob", "lite")["cache_salt"] not in (direct, None)


def test_a_client_salt_partitions_within_its_tenant_and_cannot_reach_another(lab: Lab) -> None:
    alice, bob = lab.ask("sk-alice", "small")["cache_salt"], lab.ask("sk-bob", "small")["cache_salt"]
    assert lab.ask("sk-alice", "small", extra_body={"cache_salt": "user-7"})["cache_salt"] == f"{alice}.user-7"
    # Bob sending alice's salt (were it ever leaked) still lands in bob's own partition.
    assert lab.ask("sk-bob", "small", extra_body={"cache_salt": alice})["cache_salt"] == f"{bob}.{alice}"
    # A deployment that does not isolate gets the client's salt as sent.
    assert lab.ask("sk-bob", "large", extra_body={"cache_salt": "mine"})["cache_salt"] == "mine"


@pytest.mark.parametrize("salt", ["", 7])
def test_a_salt_that_is_not_a_non_empty_string_is_a_400(lab: Lab, salt: Any) -> None:
    client = openai.OpenAI(base_url=lab.gateway.base_url + "/v1", api_key="sk-alice", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"cache_salt": salt})
    assert caught.value.body["param"] == "cache_salt"  # type: ignore[index]
