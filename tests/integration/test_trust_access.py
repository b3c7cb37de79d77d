"""Who may call what: pinning a deployment by name, the model list and readiness detail, per key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from tests.integration.conftest import sim_config
from tests.support.processes import Simulator, running_gateway

HI = [{"role": "user", "content": "hi"}]
TENANTS = [
    # restricted to a policy, with and without a default policy of its own: pins nothing
    {"name": "saver", "api_key_sha256": hash_key("sk-saver"), "policies": ["cost-saver"],
     "default_policy": "cost-saver"},
    {"name": "saver-nodefault", "api_key_sha256": hash_key("sk-saver-nodefault"), "policies": ["cost-saver"]},
    # restricted, and allowed to pin `small` (the gateway default policy is not among its policies)
    {"name": "pinner", "api_key_sha256": hash_key("sk-pinner"), "policies": ["cost-saver"],
     "deployments": ["small"]},
    # open: every policy, every deployment
    {"name": "open", "api_key_sha256": hash_key("sk-open")},
]


@pytest.fixture(scope="module")
def gateway_url(simulator: Simulator, policies_dir: Path) -> Iterator[str]:
    app = create_app(sim_config(simulator.url, tenants=TENANTS), policies_dir=policies_dir)
    with running_gateway(app) as gw:
        yield gw.base_url


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("key", ["sk-saver", "sk-saver-nodefault", "sk-pinner"])
def test_tenant_cannot_pin_a_deployment_outside_its_allow_list(gateway_url: str, key: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        _client(gateway_url, key).chat.completions.create(model="large", messages=HI)
    assert info.value.code == "deployment_not_allowed"
    assert "deployment 'large'" in info.value.message


def test_pinning_is_refused_before_any_upstream_call(gateway_url: str, simulator: Simulator) -> None:
    before = simulator.stats().get("sim-large", {}).get("requests", 0)
    resp = httpx.post(gateway_url + "/v1/chat/completions", headers={"authorization": "Bearer sk-saver"},
                      json={"model": "large", "messages": HI}, timeout=10)
    assert resp.status_code == 403
    assert resp.json()["error"] == {"message": resp.json()["error"]["message"], "type": "permission_error",
                                    "param": "model", "code": "deployment_not_allowed"}
    assert simulator.stats().get("sim-large", {}).get("requests", 0) == before


def test_tenant_may_pin_the_deployments_it_lists_whatever_its_policies(gateway_url: str) -> None:
    raw = _client(gateway_url, "sk-pinner").chat.completions.with_raw_response.create(model="small", messages=HI)
    assert raw.headers["x-switchyard-model"] == "small"


def test_open_tenant_may_pin_any_deployment(gateway_url: str) -> None:
    raw = _client(gateway_url, "sk-open").chat.completions.with_raw_response.create(model="large", messages=HI)
    assert raw.headers["x-switchyard-model"] == "large"


def test_route_explainer_applies_the_same_pinning_rule(gateway_url: str) -> None:
    resp = httpx.post(gateway_url + "/v1/route", headers={"authorization": "Bearer sk-saver"},
                      json={"model": "large", "messages": HI}, timeout=10)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "deployment_not_allowed"


def test_models_needs_a_key_when_tenants_are_configured(gateway_url: str) -> None:
    assert httpx.get(gateway_url + "/v1/models", timeout=10).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        _client(gateway_url, "sk-wrong").models.list()


def test_models_lists_only_what_the_key_may_use(gateway_url: str) -> None:
    def ids(key: str) -> set[str]:
        return {m.id for m in _client(gateway_url, key).models.list()}

    assert ids("sk-saver") == {"auto", "router/cost-saver"}
    assert ids("sk-pinner") == {"auto", "router/cost-saver", "small"}
    everything = ids("sk-open")
    assert {"auto", "router/balanced", "router/cost-saver", "small", "large", "broken"} <= everything


def test_models_retrieve_answers_for_each_listed_model_and_404s_the_rest(gateway_url: str) -> None:
    """The SDK's `models.retrieve` (`GET /v1/models/{model}`) finds every model the list shows, a policy's
    `router/` id included (the SDK sends its slash as %2F), and a model the key may not call is a 404 like
    one that does not exist, naming only what the key may call."""
    pinner = _client(gateway_url, "sk-pinner")
    for listed in pinner.models.list():
        found = pinner.models.retrieve(listed.id)
        assert found.id == listed.id and found.object == "model" and found.owned_by == "switchyard"
    for hidden in ("large", "router/balanced", "gpt-4o"):
        with pytest.raises(openai.NotFoundError) as info:
            pinner.models.retrieve(hidden)
        assert info.value.code == "model_not_found" and info.value.param == "model"
        assert "router/cost-saver" in info.value.message and "balanced" not in info.value.message.replace(hidden, "")
    assert httpx.get(gateway_url + "/v1/models/auto", timeout=10).status_code == 401
    listed = httpx.get(gateway_url + "/v1/models/", headers={"authorization": "Bearer sk-pinner"}, timeout=10)
    assert {m["id"] for m in listed.json()["data"]} == {m.id for m in pinner.models.list()}


def test_models_retrieve_finds_a_policy_under_its_bare_name_as_chat_completions_takes_it(gateway_url: str) -> None:
    """`model: "cost-saver"` is served as `router/cost-saver`: a client checking the model first must find it."""
    pinner = _client(gateway_url, "sk-pinner")
    assert pinner.models.retrieve("cost-saver").id == "cost-saver"
    assert pinner.chat.completions.create(model="cost-saver", messages=HI).choices  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):  # a policy it may not use stays hidden under either name
        pinner.models.retrieve("balanced")


@pytest.mark.parametrize("key", ["sk-saver-nodefault", "sk-pinner"])
def test_auto_listed_for_a_key_held_to_one_policy_is_that_policy(gateway_url: str, key: str) -> None:
    """`GET /v1/models` lists `auto` for a key held to one policy, and `auto` meant the gateway's default
    policy, which that key may not use: a 403 for the model it was offered. It is the key's one policy."""
    assert _client(gateway_url, key).chat.completions.create(model="auto", messages=HI).choices[0].message.content
    explained = httpx.post(gateway_url + "/v1/route", headers={"authorization": f"Bearer {key}"},
                           json={"messages": HI}, timeout=10)
    assert explained.status_code == 200 and explained.json()["policy"] == "cost-saver"


def test_readyz_shows_only_the_status_to_anonymous_callers(gateway_url: str) -> None:
    anonymous = httpx.get(gateway_url + "/readyz", timeout=10)
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
    wrong = httpx.get(gateway_url + "/readyz", headers={"authorization": "Bearer sk-wrong"}, timeout=10)
    assert wrong.json() == {"status": "ready"}
    detailed = httpx.get(gateway_url + "/readyz", headers={"authorization": "Bearer sk-saver"}, timeout=10).json()
    assert detailed["status"] == "ready" and "policies" in detailed and "deployments" in detailed


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
@pytest.mark.parametrize("authorization", [None, "Bearer sk-wrong", "Bearer sk-sy-nosuchkey-0000"])
def test_a_caller_without_a_valid_key_is_refused_before_its_body_is_read(gateway_url: str, path: str,
                                                                        authorization: str | None) -> None:
    """Parsing and validating a body costs the event loop up to half a second (2 MB of small
    messages): a caller who holds no key must not be able to make the gateway pay it, so who asks is
    checked before what is asked, and a malformed body without a valid key is a 401, not a 400."""
    headers = {"content-type": "application/json"} | ({"authorization": authorization} if authorization else {})
    many = orjson.dumps({"model": "auto", "messages": [*[{"role": "user", "content": "a"}] * 20000, {"role": "x"}]})
    for body in (b"{not json", many):
        resp = httpx.post(gateway_url + path, content=body, headers=headers, timeout=10)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["type"] == "authentication_error"
    resp = httpx.post(gateway_url + path, content=b"{not json", timeout=10,
                      headers={"content-type": "application/json", "authorization": "Bearer sk-open"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"  # a valid key: its body is read


@pytest.mark.parametrize("model", ["gpt-4o", "router/nosuch", "Auto"])
def test_an_unknown_model_is_a_404_naming_only_what_the_key_may_call(gateway_url: str, model: str) -> None:
    """`GET /v1/models` lists only what a key may call; the 404 for a model that does not exist
    must not list every deployment and policy of the gateway instead."""
    resp = httpx.post(gateway_url + "/v1/chat/completions", headers={"authorization": "Bearer sk-saver"},
                      json={"model": model, "messages": HI}, timeout=10)
    assert resp.status_code == 404 and resp.json()["error"]["param"] == "model"
    message = resp.json()["error"]["message"]
    assert "router/cost-saver" in message or "cost-saver" in message
    for hidden in ("large", "broken", "balanced", "small"):
        assert hidden not in message, message


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
@pytest.mark.parametrize("policy", ["nosuch", "router/cost-saver", "small"])
def test_an_unknown_policy_header_is_a_404_naming_the_header_and_the_policies_it_takes(
        gateway_url: str, path: str, policy: str) -> None:
    """`x-switchyard-policy` takes a policy's bare name: its 404 named `param: model` (which the client got
    right) and offered the model ids (`router/cost-saver`, `small`), none of which the header takes."""
    resp = httpx.post(gateway_url + path, json={"model": "auto", "messages": HI}, timeout=10,
                      headers={"authorization": "Bearer sk-pinner", "x-switchyard-policy": policy})
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert error["param"] == "x-switchyard-policy" and error["code"] == "policy_not_found"
    assert error["message"].endswith("use one of cost-saver"), error["message"]


def test_readyz_details_name_only_what_the_key_may_call(gateway_url: str) -> None:
    """A tenant's key sees the readiness detail, but not the names of policies and deployments that
    `GET /v1/models` keeps from it."""
    detail = httpx.get(gateway_url + "/readyz", headers={"authorization": "Bearer sk-saver"}, timeout=10).json()
    assert detail["policies"] == ["cost-saver"] and detail["deployments"] == {}
    pinner = httpx.get(gateway_url + "/readyz", headers={"authorization": "Bearer sk-pinner"}, timeout=10).json()
    assert pinner["policies"] == ["cost-saver"] and set(pinner["deployments"]) == {"small"}
    everything = httpx.get(gateway_url + "/readyz", headers={"authorization": "Bearer sk-open"}, timeout=10).json()
    assert {"balanced", "cost-saver"} <= set(everything["policies"])
    assert {"small", "large"} <= set(everything["deployments"])
