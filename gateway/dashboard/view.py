"""`/dashboard` (the page and its two assets) and `/dashboard/data` (what it draws).

Spend, savings, routing mix and the cache hit ratio come from the durable ledger, so with Redis they
cover every replica; latency, error rates and circuit states are this replica's own (the process
that answers), and the JSON says which replica that is.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from gateway import ledger
from gateway.errors import AuthenticationFailed, InvalidRequest, NotFound
from gateway.pipeline import Services
from gateway.query_params import checked_query
from gateway.state import StoreUnavailable

STATIC = Path(__file__).parent / "static"
MAX_HOURS = 24 * 7
# Scripts and styles from this gateway only, nothing inline, nothing framed, no form posts: the page
# holds a key in sessionStorage, so nothing but its own script may run there.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
            "x-frame-options": "DENY", "cache-control": "no-store"}
_ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}


@functools.cache
def _read(name: str) -> bytes:
    """A shipped file, read once (only names from this module reach here)."""
    return (STATIC / name).read_bytes()


def _svc(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def page(request: Request) -> Response:
    """The page: a shell that says whether a key is needed; the data comes from `/dashboard/data`."""
    svc = _svc(request)
    needs_key = not svc.auth.may_view(None)
    return Response(_page(needs_key), media_type="text/html; charset=utf-8", headers=_HEADERS)


@functools.cache
def _page(needs_key: bool) -> bytes:
    return _read("index.html").replace(b"{{auth}}", b"key" if needs_key else b"open")


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    media = _ASSETS.get(name)
    if media is None:  # the JSON envelope, as any other unknown path
        raise NotFound(f"no dashboard asset {name[:64]!r}", code="not_found")
    return Response(_read(name), media_type=media, headers=_HEADERS)


async def data(request: Request) -> Response:
    """Everything the page shows, for the admin or viewer key (401 and nothing else without one)."""
    svc = _svc(request)
    if not svc.auth.may_view(request.headers.get("authorization")):
        raise AuthenticationFailed("the dashboard needs the admin key or the viewer key: send "
                                   "'Authorization: Bearer <key>'")
    hours = _hours(checked_query(request, _QUERY).get("hours"))  # `?hour=168` was 24 hours, said nowhere
    body = await dashboard_data(svc, hours, time.time())
    return Response(orjson.dumps(body), media_type="application/json", headers=_HEADERS)


_QUERY = frozenset({"hours"})


def _hours(raw: str | None) -> int:
    if raw is None:
        return 24
    # ASCII digits only: str.isdigit also takes "²" (which int() refuses) and other scripts' digits
    # and few of them: int() refuses more than 4,300 digits (a 500 before)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not 1 <= int(raw) <= MAX_HOURS:
        raise InvalidRequest(f"hours must be a whole number from 1 to {MAX_HOURS}, got {raw[:32]!r}", param="hours")
    return int(raw)


async def dashboard_data(svc: Services, hours: int, now: float) -> dict[str, Any]:
    window = ledger.Window(now - hours * ledger.HOUR_S, now)
    await svc.ledger.flushed()  # this replica's own bills are in before it answers
    try:
        spend = _spend(await ledger.read_spend(svc.ledger.store, window), window)
        ledger_error = None
    except StoreUnavailable as exc:
        # The ledger's half is left empty and says why; this replica's latency, errors and circuits are
        # still served: in a store outage they are what an operator opens the page for, and a 503 hid them.
        spend = {"total": None, "spend_by_hour": [], "routing_mix": [], "cache": None}
        ledger_error = f"spend cannot be read right now ({exc}); retry shortly"
    return {
        "object": "dashboard", "generated_at": ledger.iso(now), "from": ledger.iso(window.start),
        "to": ledger.iso(window.end), "store": svc.ledger.store.kind, "ledger_error": ledger_error,
        **spend,
        "policies": [{"name": p.name, "version": p.version, "default": p.name == svc.config.default_policy}
                     for _, p in sorted(svc.policies.policies.items())],
        "router": {"version": svc.router.version, "configured_version": svc.router.configured_version},
        "replica": {"host": socket.gethostname(), "pid": os.getpid(), **svc.stats.summary()},
        "deployments": svc.upstreams.health.snapshot(),
    }


def _spend(hashes: list[tuple[str, int, dict[str, float]]], window: ledger.Window) -> dict[str, Any]:
    """The ledger's half of the page: totals, spend by hour, routing mix and cache hits."""
    # one pass over the hashes for the four tables (`ledger.spend_tables`)
    total, kinds, hourly_rows, routing_mix = ledger.spend_tables(
        hashes, ((), ("plan_kind",), ("hour",), ("policy", "plan_kind", "deployment")))
    by_kind = {row["plan_kind"]: row["requests"] for row in kinds}
    requests = sum(by_kind.values())
    return {
        "total": total[0] if total else ledger.empty_row(),
        "spend_by_hour": hourly(hourly_rows, window),
        "routing_mix": routing_mix,
        "cache": {"hits": by_kind.get(ledger.CACHE, 0), "requests": requests,
                  "hit_ratio": by_kind.get(ledger.CACHE, 0) / requests if requests else None},
    }


def hourly(rows: list[dict[str, Any]], window: ledger.Window) -> list[dict[str, Any]]:
    """One row per hour of the window, zeros where nothing was spent, so the chart's axis is time."""
    by_hour = {row["hour"]: row for row in rows}
    keep = ("requests", "cost_usd", "counterfactual_usd", "savings_usd")
    out = []
    for h in window.hours:
        at = ledger.hour_iso(h)
        row = by_hour.get(at)
        out.append({"hour": at, **{k: (row[k] if row else 0) for k in keep}})
    return out


DASHBOARD_ROUTES: tuple[tuple[str, Any, list[str]], ...] = (
    ("/dashboard", page, ["GET"]),
    ("/dashboard/data", data, ["GET"]),
    ("/dashboard/static/{name}", asset, ["GET"]),
)
