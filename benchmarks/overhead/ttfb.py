"""Time to first byte of a streamed answer, which wrk cannot see (it times whole responses).

``python -m benchmarks.overhead.ttfb --url URL --body-file F --connections N --seconds S``
keeps N keep-alive HTTP/1.1 connections busy (closed loop, like wrk) on uvloop with the
httptools parser, and for every request records the time from writing the request to the
first *body* byte (the first SSE event, not the status line: a proxy could send headers
before it has anything to say) and to the end of the response. Prints one JSON line.
This client is Python, so its own cost is in every number, including the direct baseline;
the report subtracts the baseline, so it cancels in "added" latency. If the body contains
``@@N@@``, every request replaces it with a counter (a new prompt each time).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

from benchmarks.overhead.loadgen import HEADERS, PLACEHOLDER, percentiles


class _Connection(asyncio.Protocol):
    def __init__(self, request: Callable[[], bytes], deadline: float, stats: _Stats, closed: asyncio.Future[None]):
        self.request, self.deadline, self.stats, self.closed = request, deadline, stats, closed
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.started = self.first_byte = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.first_byte = 0.0
        self.started = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.request())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.stats.errors += 1
            self._close()

    def on_body(self, body: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        if 200 <= self.parser.get_status_code() < 300:
            self.stats.ttfb.append((self.first_byte or now) - self.started)
            self.stats.total.append(now - self.started)
        else:
            self.stats.errors += 1
        if now < self.deadline and self.parser.should_keep_alive():
            asyncio.get_running_loop().call_soon(self._send)
        else:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Stats:
    def __init__(self) -> None:
        self.ttfb: list[float] = []
        self.total: list[float] = []
        self.errors = 0


def _requests(url: str, body: bytes) -> tuple[str, int, Callable[[], bytes]]:
    """Host, port and a maker of request bytes; PLACEHOLDER in body becomes a per-request counter."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}"]
    head += [f"{k}: {v}" for k, v in HEADERS.items()]
    head.append("Accept: text/event-stream")
    prefix = ("\r\n".join(head) + "\r\n").encode()
    if PLACEHOLDER.encode() not in body:
        fixed = prefix + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        return host, port, lambda: fixed
    counter = itertools.count(1)

    def make() -> bytes:
        payload = body.replace(PLACEHOLDER.encode(), str(next(counter)).encode())
        return prefix + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload

    return host, port, make


async def measure(url: str, body: bytes, connections: int, seconds: float) -> dict[str, object]:
    host, port, request = _requests(url, body)
    loop = asyncio.get_running_loop()
    stats = _Stats()
    start = time.perf_counter()
    deadline = start + seconds
    closed: list[asyncio.Future[None]] = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        closed.append(done)
        await loop.create_connection(partial(_Connection, request, deadline, stats, done), host, port)
    await asyncio.wait_for(asyncio.gather(*closed), timeout=seconds + 30)
    elapsed = time.perf_counter() - start
    if not stats.total:
        raise RuntimeError(f"no successful streamed response from {url} ({stats.errors} errors)")
    ttfb = percentiles([t * 1000 for t in stats.ttfb])
    total = percentiles([t * 1000 for t in stats.total])
    return {
        "requests": len(stats.total),
        "seconds": elapsed,
        "errors": stats.errors,
        "ttfb": {str(k): v for k, v in ttfb.items()},
        "total": {str(k): v for k, v in total.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as f:
        body = f.read()
    result = uvloop.run(measure(args.url, body, args.connections, args.seconds))
    sys.stdout.write("TTFBJSON " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
