"""The httpx floor: starlette + one httpx.AsyncClient (its default h11 transport).

Same contract as benchmarks/overhead/passthrough_aiohttp.py: POST /v1/... forwarded byte for byte to
``$PASSTHROUGH_UPSTREAM``, SSE streamed chunk by chunk, ``GET /healthz`` answered locally. The
pool is sized so it never queues or drops keep-alive connections under the benchmark's load
(httpx's default keeps only 20 idle connections, which would measure reconnects instead).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

FORWARDED = ("content-type", "authorization", "accept")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000, keepalive_expiry=60)
    timeout = httpx.Timeout(60.0, connect=5.0)
    async with httpx.AsyncClient(base_url=os.environ["PASSTHROUGH_UPSTREAM"], limits=limits, timeout=timeout) as client:
        app.state.client = client
        yield


async def proxy(request: Request) -> Response:
    client: httpx.AsyncClient = request.app.state.client
    headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
    upstream_request = client.build_request("POST", request.url.path, content=await request.body(), headers=headers)
    upstream = await client.send(upstream_request, stream=True)
    content_type = upstream.headers.get("content-type", "application/json")
    if content_type.startswith("text/event-stream"):
        return StreamingResponse(_relay(upstream), upstream.status_code, media_type=content_type)
    try:
        body = await upstream.aread()
    finally:
        await upstream.aclose()
    return Response(body, upstream.status_code, media_type=content_type)


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/healthz", healthz), Route("/{path:path}", proxy, methods=["POST"])],
    lifespan=lifespan,
)
