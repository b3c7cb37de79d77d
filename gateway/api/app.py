"""`create_app(config)`: the one place where the gateway's parts are built and wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter

from gateway import messages
from gateway.api import gc_tuning
from gateway.api.errors import install_error_handlers
from gateway.api.keys import KEY_ROUTES
from gateway.api.openapi import install_openapi
from gateway.api.request_ids import RequestIds
from gateway.api.routes import ROUTES
from gateway.auth import Authenticator
from gateway.cache import ExactCache
from gateway.config import DeploymentConfig, GatewayConfig
from gateway.dashboard.stats import RequestStats
from gateway.dashboard.view import DASHBOARD_ROUTES
from gateway.errors import ConfigError
from gateway.executor import Upstreams
from gateway.feedback import RequestLog
from gateway.inflight import InFlight
from gateway.keyed import Digests, configured_secret
from gateway.ledger import Ledger
from gateway.metrics import CIRCUIT_STATES, Metrics
from gateway.observer import Observer
from gateway.pipeline import Services
from gateway.policy import Catalog, PolicySet
from gateway.policy.seed import SeedSample
from gateway.policy.sharing import SYNC_INTERVAL_S, Calibrator
from gateway.policy.sources import shipped_policies_dir, user_policies_dir
from gateway.policy.versions import PolicyFollower, PolicyVersions
from gateway.providers.base import Backend
from gateway.providers.direct import DirectBackend
from gateway.providers.health import HealthBoard
from gateway.providers.litellm_backend import LiteLLMBackend, provider_takes_n
from gateway.providers.pricing import prices_for
from gateway.quotas import DeploymentQuotas
from gateway.router import Router
from gateway.router.registry import RouterRegistry
from gateway.router.serving import ServingRouter, configured_dir, load_dir, version_of_object
from gateway.router.sync import RouterSync
from gateway.shadow import ShadowEvaluator
from gateway.signal import RememberingRouter
from gateway.state import MemoryStore, RedisStore, open_store
from gateway.telemetry import Telemetry

log = logging.getLogger("switchyard")
_OPENAI_COMPATIBLE = ("openai/", "hosted_vllm/", "vllm/", "local/")


def uses_direct_path(d: DeploymentConfig) -> bool:
    if d.backend != "auto":
        return d.backend == "direct"
    return bool(d.api_base) and d.model.startswith(_OPENAI_COMPATIBLE)


def with_known_n(d: DeploymentConfig) -> DeploymentConfig:
    """`d`, taken as `supports_n: false` when it goes through litellm to a provider that takes no `n` and its
    config does not say: a best-of plan asked it for all its samples in one call, which litellm refused before
    sending, so every request of such a policy failed for a field its client never sent."""
    if uses_direct_path(d) or "supports_n" in d.model_fields_set or provider_takes_n(d.model) is not False:
        return d
    log.info("deployment '%s': litellm sends its provider no `n`: it answers one choice per call "
             "(supports_n: false)", d.name, extra={"event": "supports_n_off", "deployment": d.name})
    return d.model_copy(update={"supports_n": False})


def build_backends(deployments: list[DeploymentConfig]) -> dict[str, Backend]:
    direct, lite = DirectBackend(), LiteLLMBackend()
    return {d.name: direct if uses_direct_path(d) else lite for d in deployments}


def check_policy_names(config: GatewayConfig, policies: PolicySet) -> None:
    """The default policies the config names are loaded, the gateway's and each tenant's (a typo left the
    tenant's every call, pinned ones too, a 404 that listed the gateway's policies); an allow-list naming
    one that is not is a warning: a file may define it later (and a policy unloaded while the gateway
    ran must not stop the next start for every tenant)."""
    def why(name: str) -> str:
        skipped = policies.skipped.get(name)
        return f"is shipped but does not fit this config: {skipped}" if skipped else \
            f"is not a policy ({', '.join(sorted(policies.policies))})"

    named = [("default_policy", config.default_policy)]
    named += [(f"tenants[{i}].default_policy", t.default_policy) for i, t in enumerate(config.tenants)
              if t.default_policy]
    for field_, name in named:
        if policies.get(name) is None:
            raise ConfigError(f"{field_}: '{name}' {why(name)}")
    for i, t in enumerate(config.tenants):
        for name in t.policies or ():
            if policies.get(name) is None:
                log.warning("tenants[%d].policies: '%s' %s; tenant %s cannot use it until a file defines it",
                            i, name, why(name), t.name, extra={"event": "policy_not_loaded", "tenant": t.name,
                                                               "policy": name})


def load_policies(config: GatewayConfig, policies_dir: Path | None = None) -> PolicySet:
    """The policies the config names, loaded and checked (`check_policy_names`): a ConfigError names a bad one."""
    policies = PolicySet(policies_dir or user_policies_dir(config), config.deployments,
                         shipped=shipped_policies_dir(), default_policy=config.default_policy,
                         kept=[t.default_policy for t in config.tenants if t.default_policy])
    check_policy_names(config, policies)
    return policies


def warn_unset_metrics_token(config: GatewayConfig) -> None:
    """A `metrics_token_env` naming a variable that is unset or empty leaves `/metrics` to loopback callers:
    every scrape from another host is a 401 until the gateway is restarted with it set. Said at start-up (not
    fatal: the gateway serves without its metrics), as nothing else said why the token was refused."""
    var = config.metrics_token_env
    if var and not os.environ.get(var):
        log.warning("metrics_token_env: the variable %s is unset or empty; /metrics answers loopback callers "
                    "only until it is set and the gateway restarted", var,
                    extra={"event": "metrics_token_unset", "variable": var})


def check_start_up(config: GatewayConfig) -> None:
    """What `build_services` refuses a config for, checked without building the services (no telemetry,
    metrics, tokenizer or store): for a supervisor that starts workers which would each fail on it."""
    load_policies(config)
    configured_secret(config.digest_secret_env)
    Authenticator(config.tenants, MemoryStore(), config.on_store_outage, config.admin_api_key_sha256,
                  config.viewer_api_key_sha256)
    serving_router(config)


def build_services(config: GatewayConfig, *, span_exporter: SpanExporter | None = None,
                   router: Router | None = None, policies_dir: Path | None = None,
                   metrics: Metrics | None = None) -> Services:
    """Everything that can fail on a bad config fails here, before the server takes traffic
    (`check_start_up` checks the same without building anything)."""
    deployments = {d.name: with_known_n(d) for d in config.deployments}
    policies = load_policies(config, policies_dir)
    digests = Digests(configured_secret(config.digest_secret_env))  # else the store's, read at start-up
    warn_unset_metrics_token(config)
    store = open_store(config.redis_url)
    metrics = metrics or Metrics()
    auth = Authenticator(config.tenants, store, config.on_store_outage, config.admin_api_key_sha256,
                         config.viewer_api_key_sha256, budget_alerts=config.budget_alerts,
                         alerts=metrics.budget_alerts)
    messages.load()  # the tokenizer's vocabulary, read once now rather than on the first request
    telemetry = Telemetry(span_exporter)
    prices = prices_for(config.deployments)
    health = HealthBoard(list(deployments))
    catalog = Catalog(deployments, prices)
    upstreams = Upstreams(deployments, build_backends(config.deployments), prices, health, telemetry, metrics,
                          DeploymentQuotas(store, deployments))
    ledger = Ledger(store, metrics=metrics)
    settings = config.request_log
    requests = RequestLog(store, settings, digests=digests) if settings.enabled else None
    shadow = ShadowEvaluator(upstreams, catalog, auth, ledger, requests, telemetry,
                             concurrency=settings.shadow_concurrency,
                             queue_size=settings.shadow_queue_size,
                             tenant_concurrency=settings.shadow_tenant_concurrency) if requests is not None else None
    serving = serving_router(config, router)
    seeds = SeedSample(serving.uncached(), config.deployments, catalog)  # no assessment-memory pollution
    calibrator = Calibrator(store, seeds, lambda: policies.policies.values())
    stats = RequestStats()  # this replica's recent requests: the observer feeds it, the dashboard reads it
    inflight = InFlight()
    observe_state(metrics, health, policies, calibrator, requests, shadow)
    metrics.observe_gauge("switchyard.requests.in_flight", "{request}",
                          "requests in flight per tenant under a cap, in this process", "tenant",
                          inflight.gauge)
    return Services(
        config=config,
        auth=auth,
        cache=ExactCache(store, config.deployments, config.cache_namespace),
        router=serving,
        policies=policies,
        catalog=catalog,
        upstreams=upstreams,
        ledger=ledger,
        telemetry=telemetry,
        observer=Observer(metrics, {d.name: d.tier for d in config.deployments}, stats),
        stats=stats,
        requests=requests,
        shadow=shadow,
        calibrator=calibrator,
        digests=digests,
        inflight=inflight,
    )


def observe_state(metrics: Metrics, health: HealthBoard, policies: PolicySet, calibrator: Calibrator,
                  requests: RequestLog | None, shadow: ShadowEvaluator | None) -> None:
    """Gauges and counts that their owners keep, read when metrics are collected."""
    metrics.observe_gauge("switchyard.circuit.state", "1", "circuit per deployment: 0 closed, 1 half-open, 2 open",
                          "deployment", lambda: {n: CIRCUIT_STATES[s] for n, s in health.states().items()})
    # Target policies' calibrated thresholds, per tenant (policies deciding by value_usd have none).
    metrics.observe_gauge("switchyard.policy.threshold", "1",
                          "the calibrated routing threshold of each target policy for each tenant with recent traffic",
                          ("policy", "tenant"), lambda: calibrator.thresholds(policies.policies.values()))
    if requests is not None:
        metrics.observe_counter("switchyard.request_log.records", "{record}",
                                "request records: written, dropped (queue full), failed (store down)",
                                "outcome", lambda: {k: v for k, v in requests.stats().items() if k != "queued"})
        metrics.observe_counter("switchyard.feedback", "{label}",
                                "feedback labels stored, by source and origin (client: POST /v1/feedback; gateway: "
                                "its own shadow evaluation)", ("source", "origin"),
                                lambda: dict(requests.feedback_counts))
    if shadow is not None:
        metrics.observe_counter("switchyard.shadow.jobs", "{job}",
                                "shadow evaluations: queued, dropped, labelled, unlabelled, failed, skipped_budget",
                                "outcome", lambda: dict(shadow.counts))


def serving_router(config: GatewayConfig, router: Router | None = None) -> ServingRouter:
    """The configured router (`router_artifact`, else the shipped one), or the one handed in."""
    if router is not None:
        return ServingRouter(RememberingRouter(router, version=version_of_object(router)))
    root = configured_dir(config.router_artifact)
    return ServingRouter(load_dir(root), configured=root)


def router_sync(services: Services, interval_s: float | None) -> RouterSync | None:
    """Replicas sharing a store follow its promoted router; its own client, with a timeout that fits
    fetching a few MB, and a breaker of its own, so this never trips the request path's."""
    url = services.config.redis_url
    if not url or not interval_s:
        return None
    return RouterSync(services.router, RouterRegistry(RedisStore(url, timeout_s=5.0)), interval_s)


def policy_follower(services: Services, interval_s: float | None) -> PolicyFollower | None:
    """The policy watch task: with a shared store its own client (a reload never trips the request
    path's breaker), with the in-memory store an audit of this process only."""
    if not interval_s:
        return None
    url = services.config.redis_url
    store = RedisStore(url, timeout_s=2.0) if url else services.cache.store
    return PolicyFollower(services.policies, PolicyVersions(store), shared=bool(url), interval_s=interval_s)


# How long a stopping gateway waits for the calls it gave up on and still reads (each billed as it ends).
# uvicorn first gives open requests up to 10 s (`cli._uvicorn_config`); this, the cut calls' 2 s and the
# ledger's last write then fit in the 30 s most orchestrators give a stopping process (Kubernetes'
# default grace period, as in deploy/kubernetes).
SHUTDOWN_DRAIN_S = 12.0


async def _finish_draining(services: Services) -> None:
    waiting = len(services.upstreams.draining)
    if not waiting:
        return
    log.info("stopping: waiting up to %g s for %d calls still being read, billed as they end", SHUTDOWN_DRAIN_S,
             waiting, extra={"event": "shutdown_draining", "calls": waiting})
    cut, worst_usd = await services.upstreams.draining.finish(SHUTDOWN_DRAIN_S)
    if cut:  # rare and final: what the upstreams may have served and nobody will bill
        log.warning("stopping: %d calls still being read were cut; they may have cost up to $%.6f that is not "
                    "billed", cut, worst_usd, extra={"event": "shutdown_cut_calls", "calls": cut,
                                                      "worst_usd": worst_usd})


def create_app(config: GatewayConfig, *, span_exporter: SpanExporter | None = None,
               router: Router | None = None, policies_dir: Path | None = None,
               watch_policies_s: float | None = 1.0, watch_router_s: float | None = 1.0,
               calibrate_s: float = SYNC_INTERVAL_S, metrics: Metrics | None = None) -> FastAPI:
    """`metrics`: instruments with readers of the caller's (tests); by default the app builds its own,
    served at /metrics (and pushed over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)."""
    services = build_services(config, span_exporter=span_exporter, router=router, policies_dir=policies_dir,
                              metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sync = router_sync(services, watch_router_s)
        if sync is not None:
            await sync.check()  # a promoted router is served from the first request
        # Target policies start from the shipped traffic sample, scored (by that router) before the first request.
        await asyncio.to_thread(services.calibrator.prepare)
        calibrating = asyncio.create_task(services.calibrator.run(calibrate_s))
        follower = policy_follower(services, watch_policies_s)
        if follower is not None:
            await follower.publish()  # the start-up versions, audited before the first request
        watcher = asyncio.create_task(follower.run()) if follower is not None else None
        router_task = asyncio.create_task(sync.run()) if sync is not None else None
        for backend in {id(b): b for b in services.upstreams.backends.values()}.values():
            if isinstance(backend, LiteLLMBackend):
                await backend.prepare()  # not on the first request, holding the event loop for seconds
        await services.auth.keys.probe()  # readiness knows whether admin-made keys need the store
        # The digest secret every replica shares, before the first request (or retried until the store answers).
        loading = None if await services.digests.load(services.cache.store) else \
            asyncio.create_task(services.digests.keep_loading(services.cache.store))
        for background in (services.ledger, services.requests, services.shadow):
            if background is not None:
                background.start()
        gc_tuning.serving()
        log.info("switchyard ready: %d deployments, policies %s, store %s, router %s", len(config.deployments),
                 ", ".join(sorted(services.policies.policies)), services.cache.store.kind, services.router.version)
        try:
            yield
        finally:
            gc_tuning.stopped()
            if services.shadow is not None:  # first: a shadow call its worker was waiting for is read on
                await services.shadow.close()
            await _finish_draining(services)  # while the ledger, the store and the connections are open
            calibrating.cancel()
            if loading is not None:
                loading.cancel()
            if watcher is not None and follower is not None:
                watcher.cancel()
                if follower.shared:
                    await follower.versions.store.close()
            if router_task is not None and sync is not None:
                router_task.cancel()
                await sync.registry.store.close()
            if services.requests is not None:
                await services.requests.close()  # what is queued is written before the store closes
            await services.ledger.close()  # after the shadow workers, whose bills it writes
            for backend in {id(b): b for b in services.upstreams.backends.values()}.values():
                await backend.close()
            await services.cache.store.close()
            services.telemetry.shutdown()
            services.observer.metrics.shutdown()

    # FastAPI's own telemetry off: the gateway's spans and metrics are its own (`Telemetry`, `Metrics`),
    # and FastAPI would otherwise look up the global OpenTelemetry providers on every request.
    # redirect_slashes off: a path with a trailing slash was a 307 with an empty body to a URL built from the
    # request's Host header (and, behind a TLS proxy, to plain http: a client following it sent its prompt
    # in clear); it is a 404 in the error envelope that names the path without the slash.
    app = FastAPI(title="Switchyard", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None,
                  redirect_slashes=False, telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.services = services
    install_error_handlers(app)
    app.add_middleware(RequestIds)  # outside the error handlers: their 500 carries an id too
    for path, endpoint, methods in (*ROUTES, *KEY_ROUTES, *DASHBOARD_ROUTES):
        app.add_route(path, endpoint, methods=methods)
    install_openapi(app)
    return app
