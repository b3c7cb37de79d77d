"""The HTTP surface: OpenAI-compatible chat completions and models, the route explainer, feedback, health,
metrics.

Handlers take the raw `Request` and are mounted as plain Starlette routes: the body is parsed and
validated here (to give OpenAI-style errors and enforce the size limit), so FastAPI's
per-request dependency machinery would only add latency on the hot path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from opentelemetry.context import Context
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from gateway import ledger, pipeline
from gateway.api import http_limits
from gateway.api.request_ids import HEADER, chosen
from gateway.api.schemas import BodyBounds, RouteRequest, validate_chat, validate_feedback
from gateway.auth import OPEN_TENANT, Tenant
from gateway.decimals import written_number
from gateway.errors import (
    AuthenticationFailed,
    ClientClosedRequest,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    StoreOutage,
    UnsupportedMediaType,
)
from gateway.feedback import Feedback, not_found
from gateway.metrics import PROMETHEUS_CONTENT_TYPE
from gateway.observer import Trail
from gateway.pipeline import POLICY_HEADER, POLICY_PREFIX, Answer, CallContext, Outcome, Services
from gateway.policy import Overrides
from gateway.providers.pricing import format_usd
from gateway.query_params import checked_query
from gateway.state import StoreUnavailable
from gateway.streaming import DONE, replay, sse

log = logging.getLogger("switchyard.api")
T = TypeVar("T")


def headers_of(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict, built once: starlette's `Headers.get` scans the raw list
    on every call (~0.7 µs each), and the chat path reads eight of them. ASGI names are lower-case."""
    cached: dict[str, str] | None = request.scope.get("switchyard.headers")
    if cached is None:
        cached = request.scope["switchyard.headers"] = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
    return cached


def _svc(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _over(digits: str, limit: int) -> bool:
    """Is this run of digits a number above `limit`? Without `int()` on all of it: it refuses more than
    4,300 digits, and a Content-Length of 5,000 (leading zeros and a 5) was a 500."""
    digits = digits.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


async def read_json(request: Request, limit: int) -> Any:
    # A refused body is never read to its end: its connection is closed (lingering: see `http_limits`).
    close = {"connection": "close"}
    headers = headers_of(request)
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        # Nothing decodes a compressed body: read as it came, it was a 400 saying the JSON was invalid (not
        # UTF-8), which sent its client looking for a fault in JSON it wrote correctly.
        raise UnsupportedMediaType(f"a request body sent with content-encoding {encoding[:64]!r} is not read: send "
                                   "it uncompressed", headers={**close, "accept-encoding": "identity"})
    declared = headers.get("content-length")
    if declared and declared.isdigit() and _over(declared, limit):
        raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit", headers=close)
    body = bytearray()
    try:
        async with asyncio.timeout(http_limits.BODY_TIMEOUT_S):  # in all, not per part: see `http_limits`
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise PayloadTooLarge(f"request body is over the {limit}-byte limit", headers=close)
    except TimeoutError:
        raise RequestTimeout(f"the request's body did not arrive within {http_limits.BODY_TIMEOUT_S:g} s",
                             headers=close) from None
    except ClientDisconnect:  # not the gateway's fault: no "unexpected error" and traceback in its log
        raise ClientClosedRequest(f"the client closed the connection after {len(body)} bytes of the request's "
                                  "body") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None


def _positive_finite_header(headers: Mapping[str, str], name: str) -> float | None:
    """A header that must be a positive, finite number (`nan`, `inf`, `0` and `-1` are 400s), or absent."""
    raw = headers.get(name)
    if raw is None:
        return None
    value = written_number(raw)  # float() also took "1_000" and "nan"
    if value is None:
        raise InvalidRequest(f"header {name} must be a number, got {raw[:64]!r}", param=name)
    if not (0 < value < math.inf):  # also false for nan
        raise InvalidRequest(f"header {name} must be a positive finite number, got {raw[:64]!r}", param=name)
    return value


CACHE_DIRECTIVES = frozenset({"force", "bypass", "no-store"})


def _cache_header(headers: Mapping[str, str]) -> str | None:
    """`force`, `bypass` or `no-store`; anything else is a 400 rather than silently ignored."""
    raw = headers.get("x-switchyard-cache")
    if raw is None:
        return None
    value = raw.strip().lower()
    if value not in CACHE_DIRECTIVES:
        raise InvalidRequest(f"header x-switchyard-cache must be one of {', '.join(sorted(CACHE_DIRECTIVES))}, "
                             f"got {raw[:64]!r}", param="x-switchyard-cache")
    return value


def request_id(request: Request) -> str:
    """The client's `x-request-id` if it is valid, else a generated one (`request_ids.chosen`)."""
    return chosen(headers_of(request).get(HEADER))


def _timeout_header(headers: Mapping[str, str]) -> float | None:
    """x-switchyard-timeout-ms → seconds; anything but a positive finite number is a 400."""
    ms = _positive_finite_header(headers, "x-switchyard-timeout-ms")
    return None if ms is None else ms / 1000.0


def call_context(request: Request, rid: str = "", trace_parent: Context | None = None) -> CallContext:
    headers = headers_of(request)
    return CallContext(
        authorization=headers.get("authorization"),
        policy=headers.get(POLICY_HEADER),
        overrides=Overrides(_positive_finite_header(headers, "x-switchyard-max-cost-usd"),
                            _positive_finite_header(headers, "x-switchyard-latency-slo-ms")),
        cache=_cache_header(headers),
        timeout_s=_timeout_header(headers),
        request_id=rid,
        trace_parent=trace_parent,
    )


def _headers(outcome: Outcome, rid: str) -> dict[str, str]:
    """A live stream's cost is not known yet when its headers go: its usage chunk carries it."""
    headers = {"x-request-id": rid, "x-switchyard-model": outcome.deployment,
               "x-switchyard-plan": outcome.plan, "x-switchyard-cache": outcome.cache}
    if outcome.trace_id:
        headers["x-switchyard-trace-id"] = outcome.trace_id
    if not isinstance(outcome, Answer):
        return headers
    headers["x-switchyard-cost-usd"] = format_usd(outcome.cost_usd)
    if outcome.evidence:  # how best-of-n / cascade chose: votes, scores, escalations, per-call costs
        headers["x-switchyard-evidence"] = _evidence_header(outcome.evidence)
    return headers


_EVIDENCE_CHARS = 4096  # one header's share of what servers and proxies take for all of them (8 KiB)


def _evidence_header(evidence: dict[str, Any]) -> str:
    """The evidence as JSON of at most `_EVIDENCE_CHARS`, whole (cut, it parses as nothing): without its list
    of calls when that does not fit (each call's cost and tokens: the cost header and `usage` sum them, the
    request's span keeps them all), and else saying only that it is on the span."""
    text = _ascii_json(evidence)
    if len(text) > _EVIDENCE_CHARS and "calls" in evidence:
        text = _ascii_json({**{k: v for k, v in evidence.items() if k != "calls"},
                            "calls_omitted": len(evidence["calls"])})
    if len(text) > _EVIDENCE_CHARS:
        text = _ascii_json({"omitted": f"{len(text)} characters of evidence: see the request's span"})
    return text


def _ascii_json(value: Any) -> str:
    """JSON in ASCII alone, as a header's value must be: text outside it (the answers votes name, in any
    script) as JSON's own `\\u` escapes, surrogate pairs beyond the BMP. Python's backslashreplace wrote
    `\\xfc` and `\\U0001d400`, which no JSON reader takes."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _bounds(svc: Services) -> BodyBounds:
    c = svc.config
    return BodyBounds(c.max_messages, c.max_message_parts, c.max_tools)


async def chat_completions(request: Request) -> Response:
    svc = _svc(request)
    request.state.request_id = rid = request_id(request)
    trail = Trail(rid, time.perf_counter())
    try:
        # Who asks before what is asked: parsing and validating a 2 MB body holds the event loop for up
        # to half a second, which a caller without a valid key must not be able to make it spend.
        tenant = trail.tenant = await svc.auth.authenticate(headers_of(request).get("authorization"))
        body = validate_chat(await read_json(request, svc.config.max_body_bytes), bounds=_bounds(svc))
        ctx = call_context(request, rid, svc.telemetry.extract(headers_of(request)))  # the dict already decoded
    except GatewayError as exc:  # refused before the pipeline: still one request line, and one span
        pipeline.refused(svc, svc.telemetry.extract(headers_of(request)), trail, exc)
        svc.observer.finish(trail, exc.status, exc.code)
        request.state.trace_id = trail.trace_id
        raise
    try:
        outcome = await pipeline.handle(svc, body, ctx, trail, tenant)
    except Exception:
        request.state.trace_id = trail.trace_id  # a failed request's trace, the one an operator looks up
        raise
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if isinstance(outcome, Answer):
        if not body.get("stream"):
            return Response(orjson.dumps(outcome.body), media_type="application/json", headers=_headers(outcome, rid))
        # a whole answer (cache hit, best-of-n, cascade) replayed as a stream
        return StreamingResponse(_replayed(outcome.body, include_usage), media_type="text/event-stream",
                                 headers=_headers(outcome, rid))
    # The background task settles the stream even if the client left before its first chunk.
    return _RelayResponse(_relayed(outcome.stream, include_usage), media_type="text/event-stream",
                          headers=_headers(outcome, rid), background=BackgroundTask(outcome.settle))


class _ClientLeft(Exception):
    """The client of a relayed stream has gone: nothing more is sent."""


class _RelayResponse(StreamingResponse):
    """A relayed stream whose client leaving stops the relay between chunks, never in the middle of
    reading one. Starlette's own response cancels the relay wherever it waits, most often in the read of
    the upstream's next chunk, and a read cancelled there closes the upstream stream: what the upstream
    went on to bill (a reasoning model's thinking, reported only in its final usage chunk) could then not
    be read on (`Upstreams.read_on`). Here the relay stops at its next send, its upstream stream intact,
    and the settlement (the background task) hands it over."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        left = False

        async def relay_send(message: Any) -> None:
            if left:
                raise _ClientLeft
            await send(message)

        relay = asyncio.ensure_future(self.stream_response(relay_send))
        listener = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            try:
                await asyncio.wait((relay, listener), return_when=asyncio.FIRST_COMPLETED)
                left = listener.done()
                try:
                    await relay
                except (_ClientLeft, OSError):  # OSError: a server that says so itself (ASGI 2.4)
                    pass
            finally:
                listener.cancel()
                relay.cancel()  # only if this response itself was cancelled (the server stopping)
        finally:
            # However the relay ended, an exception included: the stream is settled and its tenant's
            # in-flight slot given back (the settlement releases it), or the slot stays taken for good.
            if self.background is not None:  # settles first: it hands an upstream still being read over whole
                await self.background()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def _replayed(body: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    for chunk in replay(body, include_usage):
        yield sse(chunk)
    yield DONE


async def _relayed(stream: AsyncIterator[dict[str, Any]], include_usage: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            if not chunk.get("choices") and chunk.get("usage") and not include_usage:
                continue  # we asked upstream for usage to price the stream; the client did not
            yield sse(chunk)
        yield DONE
    except GatewayError as exc:
        log.warning("stream ended early: %s", exc.message)
        yield sse(exc.body())
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def explain_route(request: Request) -> Response:
    svc = _svc(request)
    tenant = await svc.auth.authenticate(request.headers.get("authorization"))  # before the body, as above
    # Under the tenant's cap on requests in flight, shared with its chat completions, from before its
    # body is read: an explanation reads, parses and routes up to `max_body_bytes` on the event loop,
    # and without a slot one key could have any number of them going at once.
    slot = svc.inflight.enter(tenant.name, pipeline.in_flight_cap(svc, tenant))
    try:
        body = validate_chat(await read_json(request, svc.config.max_body_bytes), RouteRequest, _bounds(svc))
        explained = await pipeline.explain(svc, body, call_context(request), tenant)
    finally:
        slot.release()
    return Response(orjson.dumps(explained), media_type="application/json")


_FEEDBACK_BODY_LIMIT = 4096


async def feedback(request: Request) -> Response:
    """Label a request this key made (its x-request-id): stored with the request's record, one label
    per source, a later one from the same source replacing the earlier."""
    svc = _svc(request)
    tenant = await svc.auth.authenticate(request.headers.get("authorization"))
    # Under the tenant's cap on requests in flight, as an explanation is: a label for a request not (yet)
    # recorded waits about a second for it, and without a slot one key could have any number waiting.
    slot = svc.inflight.enter(tenant.name, pipeline.in_flight_cap(svc, tenant))
    try:
        given = validate_feedback(await read_json(request, _FEEDBACK_BODY_LIMIT))
        if svc.requests is None:
            raise not_found()
        # Whatever `source` it names, a posted label is a client's: only the gateway's shadow writes its own.
        fb = Feedback(given.request_id, given.source, given.value, given.thumbs, origin="client")
        stored, replaced = await svc.requests.put_feedback(tenant.name, fb)
    finally:
        slot.release()
    return Response(orjson.dumps({"object": "feedback", **stored, "replaced": replaced}),
                    media_type="application/json")


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "switchyard"}


async def list_models(request: Request) -> Response:
    """With tenants configured this needs a key, and lists only what that key may call."""
    svc = _svc(request)
    tenant = await svc.auth.authenticate(request.headers.get("authorization"))
    data = [_model(i) for i in pipeline.entry_points(svc, tenant)]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    """One model of the list (the SDK's `models.retrieve`). A model the key may not call is a 404 like one
    that does not exist: the list keeps its name from the key, so this must not confirm it."""
    if not request.path_params["model"]:  # `/v1/models/`: the list, which a trailing slash redirected to
        return await list_models(request)
    svc = _svc(request)
    tenant = await svc.auth.authenticate(request.headers.get("authorization"))
    model, ids = request.path_params["model"], pipeline.entry_points(svc, tenant)
    # A policy's bare name is a model chat completions takes (`router/` is optional there), so it is found too.
    bare_policy = model not in svc.catalog.deployments and f"{POLICY_PREFIX}{model}" in ids
    if model not in ids and not bare_policy:
        raise NotFound(f"model '{model[:64]}' does not exist: use one of {', '.join(ids) or 'none'} "
                       "(GET /v1/models lists them)", param="model")
    return Response(orjson.dumps(_model(model)), media_type="application/json")


_SPEND_PARAMS = frozenset({"group_by", "from", "to"})
# Spend reports one caller may have being read at once, per process. A report over the longest window
# reads one ledger hash per hour (9,600), tens of milliseconds of the event loop and a store
# connection each: unbounded, one key's burst of them stalled every tenant's requests for seconds
# and ran the store's calls past their timeout, which marks the store down for everyone.
SPEND_REPORTS = 2


async def spend(request: Request) -> Response:
    """The durable ledger, grouped as asked: a tenant's key sees its own spend, the admin key (and
    anyone on a gateway without tenants) everyone's."""
    svc = _svc(request)
    authorization = request.headers.get("authorization")
    tenants = None if svc.auth.open or svc.auth.is_admin(authorization) else \
        [(await svc.auth.authenticate(authorization)).name]
    slot = svc.reports.enter("" if tenants is None else tenants[0], SPEND_REPORTS)  # "": the admin, an open gateway
    try:
        return await _spend_report(svc, request, tenants)
    finally:
        slot.release()


async def _spend_report(svc: Services, request: Request, tenants: list[str] | None) -> Response:
    query = checked_query(request, _SPEND_PARAMS, lists=frozenset({"group_by"}))
    # group_by=a&group_by=b is group_by=a,b (read as the last alone, it grouped by one facet and said so)
    group_by = _spend_param("group_by", lambda: ledger.parse_group_by(",".join(query.getlist("group_by"))))
    start = _spend_param("from", lambda: ledger.parse_time(query["from"]) if "from" in query else None)
    end = _spend_param("to", lambda: ledger.parse_time(query["to"]) if "to" in query else None)
    window = _spend_param("from", lambda: ledger.window(start, end))
    await svc.ledger.flushed()  # this replica's own bills are in before it answers
    try:
        hashes = await ledger.read_spend(svc.ledger.store, window, tenants)
    except StoreUnavailable:
        # a tenant is not told what the store said (its host and port): that is the operator's to read
        raise StoreOutage("spend cannot be read right now; retry shortly", headers={"retry-after": "2"}) from None
    total, data = ledger.spend_tables(hashes, ((), group_by))
    body = {"object": "spend", "from": ledger.iso(window.start), "to": ledger.iso(window.end),
            "group_by": list(group_by), "data": data,
            "total": total[0] if total else ledger.empty_row()}
    return Response(orjson.dumps(body), media_type="application/json")


def _spend_param(name: str, parse: Callable[[], T]) -> T:
    try:
        return parse()
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {exc}", param=name) from None


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Ready unless requests would be refused. A store outage is `degraded` (200: the gateway still
    serves, the cache is skipped) unless `on_store_outage: fail_closed` and some tenant has a budget
    or rate limit, or admin-made keys exist (they are looked up in the store, and never let through
    unchecked), then it is `unavailable` (503). Anonymous callers of a gateway with tenants see the
    status alone."""
    svc = _svc(request)
    store = svc.cache.store
    store_ok = await store.ping()  # bounded by the store's timeout, immediate while its breaker is open
    keys = await svc.auth.keys.probe() if store_ok else svc.auth.keys.in_use
    refuses = not store_ok and (svc.auth.outage_refuses or bool(keys))
    status = "ready" if store_ok else ("unavailable" if refuses else "degraded")
    body: dict[str, Any] = {"status": status}
    caller = OPEN_TENANT if svc.auth.open else await _caller(svc, request)
    if caller is not None:
        health = svc.upstreams.health.snapshot()
        body |= {"process": os.getpid(),  # which worker or replica answered
                 "store": "up" if store_ok else "down", "store_kind": store.kind, "store_reachable": store_ok,
                 "on_store_outage": svc.config.on_store_outage,
                 # a tenant's key is told of the policies and deployments it may call, as /v1/models lists them
                 "policies": [p for p in sorted(svc.policies.policies) if caller.may_use(p)],
                 "virtual_keys": "unknown" if keys is None else ("in use" if keys else "none"),
                 "deployments": {d: h for d, h in health.items() if caller.may_pin(d)}}
        if svc.requests is not None:
            body["request_log"] = svc.requests.stats()
        if svc.shadow is not None:
            body["shadow"] = dict(svc.shadow.counts)
        body["ledger"] = svc.ledger.stats()
    return Response(orjson.dumps(body), status_code=503 if refuses else 200, media_type="application/json")


async def _caller(svc: Services, request: Request) -> Tenant | None:
    """Who may see readiness detail: the tenant of a valid key, or (seeing all) the admin or viewer key."""
    authorization = request.headers.get("authorization")
    if svc.auth.is_admin(authorization) or svc.auth.is_viewer(authorization):
        return OPEN_TENANT
    try:
        return await svc.auth.authenticate(authorization)
    except (AuthenticationFailed, StoreOutage):
        return None


_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


async def metrics(request: Request) -> Response:
    """Prometheus text format. Open on a gateway without tenants; with tenants, only to loopback
    callers or with `Authorization: Bearer <token>` (the token in the `metrics_token_env` variable)."""
    svc = _svc(request)
    if not svc.auth.open and not _may_scrape(svc, request):
        raise AuthenticationFailed("metrics need the metrics token ('Authorization: Bearer <token>', "
                                   "see metrics_token_env) or a loopback caller", code="metrics_token_required")
    return Response(svc.observer.metrics.prometheus_text(), media_type=PROMETHEUS_CONTENT_TYPE)


def _may_scrape(svc: Services, request: Request) -> bool:
    if request.client is not None and request.client.host in _LOOPBACK:
        return True
    var = svc.config.metrics_token_env
    token = os.environ.get(var, "") if var else ""
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


ROUTES: tuple[tuple[str, Any, list[str]], ...] = (
    ("/v1/chat/completions", chat_completions, ["POST"]),
    ("/v1/route", explain_route, ["POST"]),
    ("/v1/feedback", feedback, ["POST"]),
    ("/v1/models", list_models, ["GET"]),
    # `:path`: a policy's id has a slash (`router/balanced`), which the SDK sends as %2F, decoded by then
    ("/v1/models/{model:path}", retrieve_model, ["GET"]),
    ("/v1/spend", spend, ["GET"]),
    ("/healthz", healthz, ["GET"]),
    ("/readyz", readyz, ["GET"]),
    ("/metrics", metrics, ["GET"]),
)
