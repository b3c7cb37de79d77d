"""How a deployment behind litellm failed, told as it happened: a connection the upstream dropped without
answering, and a 200 whose body is not JSON, which litellm raises as 500s of its own making, are not an
answered 500 in the client's message, the `switchyard.upstream` log or `switchyard_upstream_failures_total`.
Over real HTTP with the official SDK, against a scripted upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.integration.test_metrics_endpoint import scrape, total
from tests.support.lab import policies_folder
from tests.support.processes import running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream


class _Misbehaving(ScriptedHandler):
    """`dropped` closes the connection unanswered; `not-json` answers 200 with half a JSON document; `fails`
    answers a real 500."""

    def do_POST(self) -> None:
        model = orjson.loads(self.rfile.read(int(self.headers["content-length"])))["model"]
        if model == "dropped":
            self.close_connection = True
            return
        if model == "not-json":
            self._send(b'{"id": "chatcmpl-x", "choices": [', "application/json")
            return
        self._send(orjson.dumps({"error": {"message": "boom", "type": "server_error"}}), "application/json", 500)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scripted_upstream(_Misbehaving) as base:
        rows = [{"name": name, "model": f"openai/{name}", "api_base": base, "backend": "litellm", "tier": "small",
                 "max_retries": 0, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
                for name in ("dropped", "not-json", "fails")]
        policies = policies_folder(Path(tmp_path_factory.mktemp("litellm-failures")),
                                   {"only": {"candidates": [{"single": "fails"}]}})
        config = parse_config({"deployments": rows, "default_policy": "only"}, "failures")
        with running_gateway(create_app(config, policies_dir=policies, watch_policies_s=None,
                                        watch_router_s=None)) as gw:
            yield gw.base_url + "/v1"


@pytest.mark.parametrize(("deployment", "reason", "error_type"), [
    ("dropped", "connection failed", "connection"),
    ("not-json", "upstream sent invalid JSON", "connection"),
    ("fails", "upstream answered 500", "500"),
])
def test_a_failure_through_litellm_is_told_as_it_happened(base_url: str, deployment: str, reason: str,
                                                          error_type: str) -> None:
    """A dropped connection and a body that is not JSON were both `upstream answered 500`, counted under
    error_type 500: an operator looked for a 500 in the upstream's logs that it never sent."""
    before = scrape(base_url.removesuffix("/v1"))
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502
    assert failed.value.message.endswith(f"deployment '{deployment}' failed: {reason}")
    after = scrape(base_url.removesuffix("/v1"))
    labels = {"deployment": deployment, "error_type": error_type}
    assert total(after, "switchyard_upstream_failures_total", **labels) \
        == total(before, "switchyard_upstream_failures_total", **labels) + 1
