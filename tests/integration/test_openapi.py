"""/openapi.json and /docs describe every mounted route, and a schema-driven fuzz run finds no 5xx.

The fuzz run is `benchmarks.fuzz` with a few cases per operation (`python -m benchmarks.fuzz` runs
the long one): schemathesis generates requests from the gateway's own document, valid and invalid,
with and without a key, and each response is checked: no 5xx, no stack trace, and a 2xx body that
matches the documented response model.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from benchmarks.fuzz import TENANT_KEY, fuzz, gateway_config
from gateway.api.app import create_app
from gateway.api.schemas import ChatRequest, FeedbackRequest
from gateway.config import parse_config
from tests.support.processes import GatewayServer, Simulator

pytest.importorskip("schemathesis", reason="pip install schemathesis (in the test extra)")

_FRAMEWORK = {"/openapi.json", "/docs", "/docs/oauth2-redirect"}


@pytest.fixture(scope="module")
def served(simulator: Simulator) -> Iterator[GatewayServer]:
    # the benchmark's gateway: working deployments only (a deliberately broken one answers 502 by design)
    server = GatewayServer(create_app(parse_config(gateway_config(simulator.url), "fuzz config"))).start()
    yield server
    server.stop()


def _document(server: GatewayServer) -> dict[str, Any]:
    got = httpx.get(server.base_url + "/openapi.json", timeout=10)
    assert got.status_code == 200
    return dict(got.json())


def test_the_document_names_exactly_the_mounted_routes(served: GatewayServer) -> None:
    # OpenAPI writes a path parameter without Starlette's converter: `{model:path}` is `{model}`
    mounted = {(re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path), m.lower()) for r in served.app.routes
               if isinstance(r, Route) and r.path not in _FRAMEWORK for m in (r.methods or ()) if m != "HEAD"}
    documented = {(path, method) for path, ops in _document(served)["paths"].items() for method in ops}
    assert documented == mounted
    assert not [r for r in served.app.routes if isinstance(r, APIRoute)]  # the hot path stays plain Starlette


def test_request_bodies_are_the_models_that_validate_them(served: GatewayServer) -> None:
    doc = _document(served)
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatRequest"}
    chat = doc["components"]["schemas"]["ChatRequest"]
    assert set(chat["required"]) == {"model", "messages"}
    assert set(chat["properties"]) == set(ChatRequest.model_fields)
    assert set(doc["components"]["schemas"]["FeedbackRequest"]["properties"]) == set(FeedbackRequest.model_fields)
    ok = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
    assert "text/event-stream" in ok


def test_usage_describes_its_details_objects(served: GatewayServer) -> None:
    schemas = _document(served)["components"]["schemas"]
    usage = schemas["Usage"]["properties"]
    assert {"prompt_tokens_details", "completion_tokens_details"} <= set(usage)

    def fields(prop: dict[str, Any]) -> set[str]:
        ref = next(p["$ref"] for p in prop.get("anyOf", [prop]) if "$ref" in p)
        return set(schemas[ref.rsplit("/", 1)[1]]["properties"])

    assert fields(usage["prompt_tokens_details"]) == {"cached_tokens", "audio_tokens"}
    assert fields(usage["completion_tokens_details"]) == {"reasoning_tokens", "audio_tokens",
                                                          "accepted_prediction_tokens", "rejected_prediction_tokens"}


def test_the_document_is_built_once(served: GatewayServer) -> None:
    _document(served)
    assert served.app.openapi() is served.app.openapi()


def test_docs_page_loads_the_document(served: GatewayServer) -> None:
    page = httpx.get(served.base_url + "/docs", timeout=10)
    assert page.status_code == 200 and "/openapi.json" in page.text


def test_fuzzing_every_operation_finds_no_server_error(served: GatewayServer) -> None:
    result = fuzz(served.base_url, examples=15)
    assert result.findings == []
    assert set(result.by_operation) == {f"{m.upper()} {p}" for p, ops in _document(served)["paths"].items()
                                        for m in ops}
    assert result.statuses[200] > 0 and result.cases >= 100


def test_the_fuzz_run_reports_a_response_that_breaks_its_model(served: GatewayServer) -> None:
    wrong = copy.deepcopy(_document(served))
    wrong["components"]["schemas"]["Health"]["properties"]["status"] = {"type": "string", "const": "healthy"}
    wrong["paths"] = {"/healthz": wrong["paths"]["/healthz"]}
    result = fuzz(served.base_url, examples=1, document=wrong)
    assert [f.operation for f in result.findings] == ["GET /healthz"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_answer_matches_its_documented_response(served: GatewayServer, stream: bool) -> None:
    import schemathesis
    from schemathesis.specs.openapi.checks import response_schema_conformance

    operation = schemathesis.openapi.from_dict(_document(served))["/v1/chat/completions"]["POST"]
    case = operation.Case(body={"model": "small", "stream": stream,
                                "messages": [{"role": "user", "content": "What is 17 + 25?"}]},
                          media_type="application/json")
    response = case.call(base_url=served.base_url, headers={"authorization": f"Bearer {TENANT_KEY}"})
    assert response.status_code == 200
    assert response.headers["content-type"][0].startswith("text/event-stream" if stream else "application/json")
    case.validate_response(response, checks=[response_schema_conformance])  # raises on a mismatch
