"""A gateway serving through litellm imports it while starting, so its first request does not hold
the event loop (every request in flight) for the seconds the import takes."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.config import parse_config
from gateway.providers.litellm_backend import LiteLLMBackend


def _app(backend: str) -> FastAPI:
    config = parse_config({"deployments": [
        {"name": tier, "model": f"openai/sim-{tier}", "api_base": "http://127.0.0.1:9/v1", "backend": backend,
         "tier": tier, "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}} for tier in ("small", "large")
    ]}, "litellm start-up test")
    return create_app(config, watch_policies_s=None, watch_router_s=None)


async def test_litellm_is_imported_before_the_first_request() -> None:
    app = _app("litellm")
    (backend,) = {id(b): b for b in app.state.services.upstreams.backends.values()}.values()
    assert isinstance(backend, LiteLLMBackend) and backend._litellm is None
    async with app.router.lifespan_context(app):
        assert backend._litellm is not None


async def test_a_gateway_without_litellm_deployments_does_not_import_it() -> None:
    app = _app("direct")
    async with app.router.lifespan_context(app):
        assert not any(isinstance(b, LiteLLMBackend) for b in app.state.services.upstreams.backends.values())
