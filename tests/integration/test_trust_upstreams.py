"""Upstream trust over real HTTP: circuits one client cannot open, Retry-After, one deadline per
request, missing credentials, pinned deployments behind an open circuit, error messages that
name the deployment and not the upstream's address."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.processes import ROOT, GatewayServer, Simulator, free_port, running_gateway

UNSET_KEY = "SY_TRUST_TEST_UNSET_KEY"
HELLO = [{"role": "user", "content": "hi"}]
TOO_LONG = [{"role": "user", "content": "word " * 2500}]  # over sim-picky's 2000-token window

EXTRA_POLICIES = {
    "busy-fallback.yaml": "candidates:\n  - single: busy-long\nfallbacks:\n  busy-long: [small]\n"
                          "cache: {enabled: false}\n",
    "quick.yaml": "candidates:\n  - single: slow\ntimeout_s: 0.5\ncache: {enabled: false}\n",
    "doomed.yaml": "candidates:\n  - single: doomed\ncache: {enabled: false}\n",
}


def _config(sim_url: str) -> Any:
    def dep(name: str, model: str, tier: str = "lab", **kw: Any) -> dict[str, Any]:
        return {"name": name, "model": f"openai/{model}", "api_base": sim_url, "tier": tier,
                "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}, **kw}

    return parse_config({"deployments": [
        dep("small", "sim-picky", "small", router_profile="Meta-Llama-3.1-8B-Instruct"),
        dep("large", "sim-large", "large", router_profile="Meta-Llama-3.1-70B-Instruct"),
        dep("broken", "sim-broken", max_retries=1),
        dep("failing", "sim-broken", max_retries=0),
        dep("doomed", "sim-broken", max_retries=0),
        dep("busy", "sim-busy", max_retries=1),
        dep("busy-long", "sim-busy-long", max_retries=2),
        dep("slow", "sim-slow", timeout_s=10, max_retries=2),
        dep("keyless", "sim-small", api_key_env=UNSET_KEY),
        dep("misnamed", "sim-no-such-model"),
        {"name": "unreachable", "model": "openai/nothing", "api_base": f"http://127.0.0.1:{free_port()}/v1",
         "max_retries": 0, "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.1}},
    ]}, "trust test config")


@pytest.fixture(scope="module")
def gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    folder = tmp_path_factory.mktemp("trust-policies")
    for f in (ROOT / "routing_policies").glob("*.yaml"):
        (folder / f.name).write_text(f.read_text())
    for name, text in EXTRA_POLICIES.items():
        (folder / name).write_text(text)
    with pytest.MonkeyPatch.context() as env:  # module-scoped: the variable is unset for this module only
        env.delenv(UNSET_KEY, raising=False)
        with running_gateway(create_app(_config(simulator.url), policies_dir=folder)) as server:
            yield server


@pytest.fixture
def client(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="x", max_retries=0)


def _post(gateway: GatewayServer, model: str, messages: list[dict[str, str]] = HELLO,
          **headers: str) -> httpx.Response:
    return httpx.post(gateway.base_url + "/v1/chat/completions", json={"model": model, "messages": messages},
                      headers=headers, timeout=30)


def _sim_requests(simulator: Simulator, model: str) -> int:
    return int(simulator.stats()[model]["requests"])


def test_requests_the_upstream_rejects_do_not_open_the_deployments_circuit(gateway: GatewayServer) -> None:
    for _ in range(7):
        rejected = _post(gateway, "small", TOO_LONG)
        assert rejected.status_code == 400, rejected.text
        assert "context length" in rejected.json()["error"]["message"]
    ready = httpx.get(gateway.base_url + "/readyz", timeout=5).json()
    assert ready["deployments"]["small"]["circuit_open"] is False
    served = _post(gateway, "small")
    assert served.status_code == 200 and served.headers["x-switchyard-plan"] == "single:small"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_upstream_refusal_keeps_the_code_and_param_it_named(client: openai.OpenAI, stream: bool) -> None:
    """Code written for OpenAI reads a refusal's `code` (`context_length_exceeded`: shorten the conversation
    and ask again) and `param`: relayed as `upstream_rejected` without a param, it read as some other error."""
    with pytest.raises(openai.BadRequestError) as refused:
        if stream:
            list(client.chat.completions.create(model="small", messages=TOO_LONG, stream=True))  # type: ignore[arg-type]
        else:
            client.chat.completions.create(model="small", messages=TOO_LONG)  # type: ignore[arg-type]
    assert (refused.value.code, refused.value.param) == ("context_length_exceeded", "messages")
    assert refused.value.type == "invalid_request_error"
    assert "deployment 'small' rejected the request" in refused.value.message


def test_upstream_retry_after_is_honoured_before_retrying(gateway: GatewayServer, simulator: Simulator) -> None:
    before = _sim_requests(simulator, "sim-busy")
    started = time.monotonic()
    resp = _post(gateway, "busy")  # sim-busy answers its first request 429 with Retry-After: 1
    assert resp.status_code == 200, resp.text
    assert time.monotonic() - started >= 1.0
    assert _sim_requests(simulator, "sim-busy") == before + 2


def test_retry_after_beyond_the_deadline_goes_to_the_fallback_at_once(gateway: GatewayServer,
                                                                      simulator: Simulator) -> None:
    before = _sim_requests(simulator, "sim-busy-long")
    started = time.monotonic()
    resp = _post(gateway, "router/busy-fallback", **{"x-switchyard-timeout-ms": "5000"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-switchyard-model"] == "small"
    assert time.monotonic() - started < 1.0
    assert _sim_requests(simulator, "sim-busy-long") == before + 1  # Retry-After: 30 does not fit: no retry


def test_an_upstream_s_retry_after_that_did_not_fit_is_passed_on(gateway: GatewayServer,
                                                                  simulator: Simulator) -> None:
    """The deployment said to come back in 30 s, which the request's deadline could not wait: the 502 said
    nothing of it, and the openai SDK asked again within a second, into the same refusal."""
    before = _sim_requests(simulator, "sim-busy-long")
    resp = _post(gateway, "busy-long", **{"x-switchyard-timeout-ms": "2000"})
    assert resp.status_code == 502, resp.text
    assert resp.headers["retry-after"] == "30"
    assert _sim_requests(simulator, "sim-busy-long") == before + 1
    refused = _post(gateway, "failing")  # a 500 says nothing of when to come back: nor does the answer
    assert refused.status_code == 502 and "retry-after" not in refused.headers


def test_timeout_header_bounds_every_attempt_of_the_request_together(gateway: GatewayServer) -> None:
    started = time.monotonic()
    resp = _post(gateway, "slow", **{"x-switchyard-timeout-ms": "300"})
    elapsed = time.monotonic() - started
    assert resp.status_code == 504, resp.text
    assert resp.json()["error"]["code"] == "upstream_timeout"
    assert elapsed < 1.5


def test_policy_timeout_bounds_the_request(gateway: GatewayServer) -> None:
    started = time.monotonic()
    resp = _post(gateway, "router/quick")
    assert resp.status_code == 504, resp.text
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "", "1_000"])
def test_invalid_timeout_header_is_400(gateway: GatewayServer, value: str) -> None:
    resp = _post(gateway, "small", **{"x-switchyard-timeout-ms": value})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "x-switchyard-timeout-ms"


def test_missing_provider_credential_is_a_500_naming_the_variable(client: openai.OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="keyless", messages=HELLO)
    assert time.monotonic() - started < 1.0
    assert info.value.status_code == 500 and info.value.code == "provider_misconfigured"
    assert UNSET_KEY in info.value.message
    # Only an operator setting the variable helps: the openai SDKs, which send any 500 again twice by
    # default, are told not to.
    assert info.value.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_upstream_that_does_not_know_the_model_is_not_asked_again_by_the_sdk(
        gateway: GatewayServer, stream: bool) -> None:
    """A deployment whose upstream answers 404 (a model name it does not serve) fails the same way however
    often it is asked: the 502 said nothing of it, and the openai SDK sent every such request twice more."""
    sent: list[httpx.Request] = []
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="x", max_retries=2,
                           http_client=httpx.Client(event_hooks={"request": [sent.append]}))
    with pytest.raises(openai.InternalServerError) as info:
        if stream:
            list(client.chat.completions.create(model="misnamed", messages=HELLO, stream=True))  # type: ignore[arg-type]
        else:
            client.chat.completions.create(model="misnamed", messages=HELLO)  # type: ignore[arg-type]
    assert info.value.status_code == 502 and "upstream answered 404" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1


def test_a_failing_upstream_is_still_asked_again_by_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="failing", messages=HELLO)
    assert info.value.status_code == 502 and "x-should-retry" not in info.value.response.headers


def test_pinned_deployment_with_an_open_circuit_fails_fast_with_503_and_retry_after(
        gateway: GatewayServer, simulator: Simulator) -> None:
    for _ in range(3):  # two attempts each: the circuit opens after five consecutive failures
        assert _post(gateway, "broken").status_code == 502
    before = _sim_requests(simulator, "sim-broken")
    resp = _post(gateway, "broken")
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "deployment_unavailable"
    assert 1 <= int(resp.headers["retry-after"]) <= 15
    assert _sim_requests(simulator, "sim-broken") == before  # the upstream was not called


def test_a_policy_whose_every_plan_is_behind_an_open_circuit_is_a_503_with_retry_after(
        gateway: GatewayServer, simulator: Simulator) -> None:
    for _ in range(5):  # one attempt each: the circuit opens after five consecutive failures
        assert _post(gateway, "router/doomed").status_code == 502
    before = _sim_requests(simulator, "sim-broken")
    resp = _post(gateway, "router/doomed")  # an outage that passes, not a request no plan can meet (422)
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "deployment_unavailable"
    assert 1 <= int(resp.headers["retry-after"]) <= 15
    assert _sim_requests(simulator, "sim-broken") == before


def test_upstream_errors_name_the_deployment_not_the_upstream_address(gateway: GatewayServer) -> None:
    resp = _post(gateway, "unreachable")
    assert resp.status_code == 502, resp.text
    message = resp.json()["error"]["message"]
    assert message == "deployment 'unreachable' failed: connection failed"
    for leak in ("127.0.0.1", "Client", "aiohttp", "ssl"):
        assert leak not in resp.text


def test_upstream_failure_message_says_how_the_deployment_failed(gateway: GatewayServer) -> None:
    resp = _post(gateway, "failing")
    assert resp.status_code == 502, resp.text
    assert resp.json()["error"]["message"] == "deployment 'failing' failed: upstream answered 500"
    assert "Simulated" not in resp.text and "127.0.0.1" not in resp.text
