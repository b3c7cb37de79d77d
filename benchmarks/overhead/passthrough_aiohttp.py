"""The practical floor for a Python gateway: starlette + one raw aiohttp ClientSession.

POST /v1/... is forwarded byte for byte to ``$PASSTHROUGH_UPSTREAM`` (e.g.
``http://127.0.0.1:8081``); an SSE answer is streamed chunk by chunk, anything else is read
whole and returned. No parsing, no validation, no logging. Run it like the gateway:
``uvicorn benchmarks.overhead.passthrough_aiohttp:app --loop uvloop --http httptools --no-access-log``
(one worker). ``GET /healthz`` answers locally.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

FORWARDED = ("content-type", "authorization", "accept")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60, connect=5)
    async with aiohttp.ClientSession(
        os.environ["PASSTHROUGH_UPSTREAM"], connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        app.state.session = session
        yield


async def proxy(request: Request) -> Response:
    session: aiohttp.ClientSession = request.app.state.session
    headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
    upstream = await session.post(request.url.path, data=await request.body(), headers=headers)
    content_type = upstream.headers.get("content-type", "application/json")
    if content_type.startswith("text/event-stream"):
        return StreamingResponse(_relay(upstream), upstream.status, media_type=content_type)
    async with upstream:
        body = await upstream.read()
    return Response(body, upstream.status, media_type=content_type)


async def _relay(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async with upstream:
        async for chunk in upstream.content.iter_any():
            yield chunk


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/healthz", healthz), Route("/{path:path}", proxy, methods=["POST"])],
    lifespan=lifespan,
)
