"""`create_app(config)`: the one place where the gateway's parts are built and wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter

from gateway import tokens
from gateway.api.errors import install_error_handlers
from gateway.api.routes import ROUTES
from gateway.auth import Authenticator
from gateway.cache import ExactCache
from gateway.config import DeploymentConfig, GatewayConfig
from gateway.errors import ConfigError
from gateway.executor import Upstreams
from gateway.ledger import Ledger
from gateway.pipeline import Services
from gateway.policy import Catalog, PolicySet
from gateway.policy.seed import SeedSample
from gateway.policy.sharing import SYNC_INTERVAL_S, Calibrator
from gateway.policy.sources import shipped_policies_dir, user_policies_dir
from gateway.providers.base import Backend
from gateway.providers.direct import DirectBackend
from gateway.providers.health import HealthBoard
from gateway.providers.litellm_backend import LiteLLMBackend
from gateway.providers.pricing import prices_for
from gateway.router import Router, load_router
from gateway.signal import RememberingRouter
from gateway.state import open_store
from gateway.telemetry import Telemetry

log = logging.getLogger("switchyard")
_OPENAI_COMPATIBLE = ("openai/", "hosted_vllm/", "vllm/", "local/")


def uses_direct_path(d: DeploymentConfig) -> bool:
    if d.backend != "auto":
        return d.backend == "direct"
    return bool(d.api_base) and d.model.startswith(_OPENAI_COMPATIBLE)


def build_backends(deployments: list[DeploymentConfig]) -> dict[str, Backend]:
    direct, lite = DirectBackend(), LiteLLMBackend()
    return {d.name: direct if uses_direct_path(d) else lite for d in deployments}


def build_services(config: GatewayConfig, *, span_exporter: SpanExporter | None = None,
                   router: Router | None = None, policies_dir: Path | None = None) -> Services:
    """Everything that can fail on a bad config fails here, before the server takes traffic."""
    deployments = {d.name: d for d in config.deployments}
    policies = PolicySet(policies_dir or user_policies_dir(config), config.deployments,
                         shipped=shipped_policies_dir(), default_policy=config.default_policy)
    if policies.get(config.default_policy) is None:
        why = policies.skipped.get(config.default_policy)
        raise ConfigError(f"default_policy: '{config.default_policy}' "
                          + (f"is shipped but does not fit this config: {why}" if why else
                             f"is not a policy ({', '.join(sorted(policies.policies))})"))
    store = open_store(config.redis_url)
    tokens.load()  # the tokenizer's vocabulary, read once now rather than on the first request
    telemetry = Telemetry(span_exporter)
    prices = prices_for(config.deployments)
    health = HealthBoard(list(deployments))
    serving = router or load_router(config.router_artifact)
    catalog = Catalog(deployments, prices)
    seeds = SeedSample(serving, config.deployments, catalog)  # assessed by the raw router: no cache pollution
    return Services(
        config=config,
        auth=Authenticator(config.tenants, store, config.on_store_outage),
        cache=ExactCache(store, config.deployments, config.cache_namespace),
        router=RememberingRouter(serving),
        policies=policies,
        catalog=catalog,
        upstreams=Upstreams(deployments, build_backends(config.deployments), prices, health, telemetry),
        ledger=Ledger(store),
        telemetry=telemetry,
        calibrator=Calibrator(store, seeds, lambda: policies.policies.values()),
    )


def create_app(config: GatewayConfig, *, span_exporter: SpanExporter | None = None,
               router: Router | None = None, policies_dir: Path | None = None,
               watch_policies_s: float | None = 1.0, calibrate_s: float = SYNC_INTERVAL_S) -> FastAPI:
    services = build_services(config, span_exporter=span_exporter, router=router, policies_dir=policies_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Target policies start from the shipped traffic sample, scored before the first request.
        await asyncio.to_thread(services.calibrator.prepare)
        calibrating = asyncio.create_task(services.calibrator.run(calibrate_s))
        watcher = asyncio.create_task(services.policies.watch(watch_policies_s)) if watch_policies_s else None
        log.info("switchyard ready: %d deployments, policies %s, store %s", len(config.deployments),
                 ", ".join(sorted(services.policies.policies)), services.cache.store.kind)
        try:
            yield
        finally:
            calibrating.cancel()
            if watcher:
                watcher.cancel()
            for backend in {id(b): b for b in services.upstreams.backends.values()}.values():
                await backend.close()
            await services.cache.store.close()
            services.telemetry.shutdown()

    app = FastAPI(title="Switchyard", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = services
    install_error_handlers(app)
    for path, endpoint, methods in ROUTES:
        app.add_route(path, endpoint, methods=methods)
    return app
