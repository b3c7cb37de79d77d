"""The keys admin API (`/admin/keys`, the admin key only) and `GET /v1/budget` (any caller's own).

| method and path                  | does                                                   |
| -------------------------------- | ------------------------------------------------------ |
| POST /admin/keys                 | create a key: returns it once (`key`) with its record  |
| GET /admin/keys                  | every key's record: never the key, its `prefix` and    |
|                                  | `sha256_prefix`, and `status` (active/revoked/expired) |
| GET /admin/keys/{id}             | one record                                             |
| PATCH /admin/keys/{id}           | change limits, policies, expiry, metadata (null clears)|
| DELETE /admin/keys/{id}          | revoke (the record stays, `status: revoked`)           |
| POST /admin/keys/{id}/rotate     | a new secret for the key: returned once; the old stops |

No admin key configured: 403 (the API is off). Missing or unknown key: 401; a valid key without
admin rights (a tenant's, the dashboard viewer's): 403.
Bad bodies: 400; unknown id: 404.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from gateway.admission import Scope, budget_hold
from gateway.api.problems import refusal
from gateway.api.routes import read_json
from gateway.auth import Tenant
from gateway.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied, StoreOutage
from gateway.keys import KeyCreate, KeyLimits, KeyRecord, KeyRevoked
from gateway.pipeline import Services
from gateway.query_params import checked_query
from gateway.state import StoreUnavailable, window_key
from gateway.windows import period_bounds

M = TypeVar("M", bound=BaseModel)
_BODY_LIMIT = 64 * 1024


def _svc(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _require_admin(svc: Services, request: Request) -> None:
    authorization = request.headers.get("authorization")
    if svc.auth.is_admin(authorization):
        return
    if not svc.auth.has_admin_key:
        raise PermissionDenied("the keys admin API is off: configure admin_api_key_sha256 "
                               "(or SWITCHYARD_ADMIN_KEY_SHA256)", code="admin_api_disabled")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthenticationFailed("this needs the admin key: send 'Authorization: Bearer <admin key>'")
    if svc.auth.is_viewer(authorization):  # a valid key, though no tenant's: named as the one it is
        raise PermissionDenied("this needs the admin key, not the dashboard's viewer key", code="admin_key_required")
    await svc.auth.authenticate(authorization)  # unknown keys: 401
    raise PermissionDenied("this needs the admin key, not a tenant's key", code="admin_key_required")


def _parse(model: type[M], raw: Any) -> M:
    if not isinstance(raw, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        # `policies[0]`, not `policies.0`; `metadata.a`, not `metadata.a.str` (the union member that failed)
        raise refusal(exc) from None


def _check_names(svc: Services, limits: KeyLimits, tenant: str) -> None:
    """Policies and deployments a key names must exist, and be its tenant's: a typo, or a name its tenant may
    not use (the key narrows its tenant), would silently forbid them: a key made for nothing it may do."""
    allowed = svc.auth.configured(tenant)
    for i, name in enumerate(limits.policies or ()):
        if name not in svc.policies.policies:
            known = ", ".join(sorted(svc.policies.policies))
            raise InvalidRequest(f"policies[{i}]: '{name[:64]}' is not a policy ({known})", param=f"policies[{i}]")
        if allowed is not None and not allowed.may_use(name):
            raise InvalidRequest(f"policies[{i}]: tenant '{tenant}' may not use '{name}' "
                                 f"({_listed(allowed.policies)})", param=f"policies[{i}]")
    for i, name in enumerate(limits.deployments or ()):
        if name not in svc.catalog.deployments:
            raise InvalidRequest(f"deployments[{i}]: '{name[:64]}' is not a deployment "
                                 f"({', '.join(svc.catalog.deployments)})", param=f"deployments[{i}]")
        if allowed is not None and not allowed.may_pin(name):
            raise InvalidRequest(f"deployments[{i}]: tenant '{tenant}' may not pin '{name}' "
                                 f"({_listed(allowed.deployments)})", param=f"deployments[{i}]")


def _listed(names: frozenset[str] | None) -> str:
    return f"it may: {', '.join(sorted(names))}" if names else "it may: none"


async def _stored(call: Any) -> Any:
    try:
        return await call
    except StoreUnavailable as exc:
        raise StoreOutage(f"the key store cannot be reached right now; retry shortly ({exc})",
                          headers={"retry-after": "2"}) from None


async def _record(svc: Services, request: Request) -> KeyRecord:
    key_id = request.path_params["key_id"]
    record: KeyRecord | None = await _stored(svc.auth.keys.get(key_id))
    if record is None:
        raise NotFound(f"no key with id '{key_id[:64]}'", code="key_not_found", param="id")
    return record


async def create_key(request: Request) -> Response:
    svc = _svc(request)
    await _require_admin(svc, request)
    spec = _parse(KeyCreate, await read_json(request, _BODY_LIMIT))
    _check_names(svc, spec, spec.tenant)
    if spec.expires_at is not None and spec.expires_at.timestamp() <= time.time():
        # a key born expired answers every request with 401 key_expired: a typo in the year, not a wish
        raise InvalidRequest(f"expires_at: {spec.expires_at.isoformat()} is not in the future", param="expires_at")
    record, key = await _stored(svc.auth.keys.create(spec))
    return _json({**record.public(), "key": key}, status=201)


def _tenant_filter(request: Request) -> str | None:
    """`?tenant=`, the one filter of a listing (the operator acts on the list it gets)."""
    return checked_query(request, frozenset({"tenant"})).get("tenant")


async def list_keys(request: Request) -> Response:
    svc = _svc(request)
    await _require_admin(svc, request)
    tenant = _tenant_filter(request)
    records = await _stored(svc.auth.keys.list())
    now = time.time()
    data = [r.public(now) for r in records if tenant is None or r.tenant == tenant]
    return _json({"object": "list", "data": data})


async def key_detail(request: Request) -> Response:
    svc = _svc(request)
    await _require_admin(svc, request)
    if request.method == "GET":
        return _json((await _record(svc, request)).public())
    if request.method == "DELETE":
        record = await _record(svc, request)
        return _json((await _stored(svc.auth.keys.revoke(record))).public())
    patch = _parse(KeyLimits, await read_json(request, _BODY_LIMIT))
    record = await _record(svc, request)
    _check_names(svc, patch, record.tenant)
    return _json((await _stored(svc.auth.keys.update(record, patch))).public())


async def rotate_key(request: Request) -> Response:
    svc = _svc(request)
    await _require_admin(svc, request)
    record = await _record(svc, request)
    try:
        rotated, key = await _stored(svc.auth.keys.rotate(record))
    except KeyRevoked:
        raise InvalidRequest(f"key '{record.id}' is revoked; create a new one", code="key_revoked") from None
    return _json({**rotated.public(), "key": key})


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _budget_row(svc: Services, scope: Scope, now: float) -> dict[str, Any]:
    limits = scope.limits
    assert limits.budget_usd is not None
    hold = budget_hold(scope, 0.0, now, ())
    spent, reserved = await svc.auth.store.budget_state(hold.spend_key, hold.holds_key)
    _, end = period_bounds(limits.period, now)
    return {"scope": "tenant" if scope.key_id is None else "key", "period": limits.period,
            "limit_usd": limits.budget_usd, "spent_usd": round(spent, 9), "reserved_usd": round(reserved, 9),
            "remaining_usd": round(max(0.0, limits.budget_usd - spent - reserved), 9), "resets_at": _iso(end)}


async def _rate_rows(svc: Services, scope: Scope) -> list[dict[str, Any]]:
    rows = []
    for name, short, value in (("requests_per_minute", "rpm", scope.limits.requests_per_minute),
                               ("tokens_per_minute", "tpm", scope.limits.tokens_per_minute)):
        if value is not None:
            # requests and tokens are counted whole; the store keeps them as floats, a typed client reads integers
            used = round(await svc.auth.store.window_usage(window_key(scope.tenant, scope.key_id, short)))
            rows.append({"scope": "tenant" if scope.key_id is None else "key", "limit": name, "value": value,
                         "used": used, "remaining": max(0, value - used)})
    return rows


async def budget(request: Request) -> Response:
    """The caller's own budgets (its tenant's and its key's) and rate windows, as of now."""
    svc = _svc(request)
    tenant: Tenant = await svc.auth.authenticate(request.headers.get("authorization"))
    now = time.time()
    budgets: list[dict[str, Any]] = []
    rates: list[dict[str, Any]] = []
    try:
        for scope in tenant.scopes():
            if scope.limits.budget_usd is not None:
                budgets.append(await _budget_row(svc, scope, now))
            rates += await _rate_rows(svc, scope)
    except StoreUnavailable:
        # a tenant is not told what the store said (its host and port): that is the operator's to read
        raise StoreOutage("budgets cannot be read right now; retry shortly", headers={"retry-after": "2"}) from None
    return _json({"object": "budget", "tenant": tenant.name, "key_id": tenant.key_id, "budgets": budgets,
                  "rate_limits": rates})


KEY_ROUTES: tuple[tuple[str, Any, list[str]], ...] = (
    ("/admin/keys", create_key, ["POST"]),
    ("/admin/keys", list_keys, ["GET"]),
    ("/admin/keys/{key_id}", key_detail, ["GET", "PATCH", "DELETE"]),
    ("/admin/keys/{key_id}/rotate", rotate_key, ["POST"]),
    ("/v1/budget", budget, ["GET"]),
)
