"""Which deployments a tenant may pin, and the config check that names a missing one."""

from __future__ import annotations

import pytest

from gateway.auth import Authenticator, hash_key
from gateway.config import TenantConfig, parse_config
from gateway.errors import ConfigError, PermissionDenied
from gateway.state import MemoryStore


def _tenant(**fields: object) -> Authenticator:
    config = TenantConfig.model_validate({"name": "t", "api_key_sha256": hash_key("sk-1"), **fields})
    return Authenticator([config], MemoryStore())


def test_a_tenant_restricted_to_policies_pins_no_deployment_by_default() -> None:
    auth = _tenant(policies=["cost-saver"])
    with pytest.raises(PermissionDenied) as info:
        auth.check_pin(auth.identify("Bearer sk-1"), "large")
    assert info.value.code == "deployment_not_allowed" and info.value.status == 403


def test_an_open_tenant_pins_any_deployment_by_default() -> None:
    auth = _tenant()
    auth.check_pin(auth.identify("Bearer sk-1"), "large")


def test_a_tenant_pins_exactly_the_deployments_it_lists() -> None:
    for fields in ({"deployments": ["small"]}, {"deployments": ["small"], "policies": ["cost-saver"]}):
        auth = _tenant(**fields)
        tenant = auth.identify("Bearer sk-1")
        auth.check_pin(tenant, "small")
        with pytest.raises(PermissionDenied, match="allowed: small"):
            auth.check_pin(tenant, "large")


def test_config_names_a_tenant_deployment_that_does_not_exist() -> None:
    raw = {"deployments": [{"name": "small", "model": "openai/x"}, {"name": "large", "model": "openai/y"}],
           "tenants": [{"name": "t", "api_key_env": "K", "deployments": ["small", "huge"]}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "gateway.yaml")
    assert str(info.value).startswith("gateway.yaml: tenants[0].deployments[1]: 'huge' is not a deployment")


def test_every_status_the_admin_and_viewer_keys_get_from_a_tenants_endpoint_is_documented() -> None:
    """The viewer key on /v1/spend is a 403 tenant_key_required, which its OpenAPI operation did not list."""
    from starlette.testclient import TestClient

    from gateway.api.app import create_app
    from gateway.config import embedded_config

    raw = embedded_config("http://127.0.0.1:9").model_dump(mode="json", exclude_none=True)
    raw |= {"tenants": [{"name": "acme", "api_key_sha256": hash_key("sk-tenant")}],
            "admin_api_key_sha256": hash_key("sk-admin"), "viewer_api_key_sha256": hash_key("sk-viewer")}
    app = create_app(parse_config(raw, "test"), watch_policies_s=None, watch_router_s=None)
    with TestClient(app) as client:
        paths = client.get("/openapi.json").json()["paths"]
        for method, path in (("get", "/v1/spend"), ("get", "/v1/budget"), ("get", "/v1/models"),
                             ("post", "/v1/feedback"), ("post", "/v1/route")):
            for key in ("sk-admin", "sk-viewer"):
                status = client.request(method, path, headers={"authorization": f"Bearer {key}"}).status_code
                assert str(status) in paths[path][method]["responses"], (method, path, key, status)
