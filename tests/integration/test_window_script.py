"""The sliding-window script on a real Redis, with a short window (5 steps of 100 ms) so that sliding
can be watched: exact counts, a Retry-After that is right, buckets that slide out, tokens settled."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from gateway import admission_store
from gateway.admission_store import Admission, Settlement, Window
from gateway.state import RedisStore
from tests.support.processes import RedisServer

STEP_MS, STEPS = 100, 5


@pytest.fixture
def short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_store, "STEP_MS", STEP_MS)
    monkeypatch.setattr(admission_store, "WINDOW_STEPS", STEPS)


def _admission(*windows: Window) -> Admission:
    return Admission(uuid.uuid4().hex, 0.0, (), windows)


def test_requests_slide_out_of_the_window_when_the_refusal_said(redis_server: RedisServer,
                                                                 short_window: None) -> None:
    key = f"sy:window:{{t-{uuid.uuid4().hex[:6]}}}:rpm"

    async def scenario() -> None:
        store = RedisStore(redis_server.url, timeout_s=5)  # atomicity tested, not latency
        try:
            rpm = Window(key, 3, 1)
            verdicts = [(await store.admit(_admission(rpm))).verdict for _ in range(5)]
            assert verdicts == ["ok", "ok", "ok", "rate", "rate"]
            refused = await store.admit(_admission(rpm))
            assert refused.used == 3 and 0 < refused.retry_after_ms <= STEP_MS * STEPS
            await asyncio.sleep(refused.retry_after_ms / 1000 + 0.02)
            assert (await store.admit(_admission(rpm))).verdict == "ok"  # the old requests slid out
            await asyncio.sleep(STEP_MS * STEPS * 2 / 1000)  # idle for longer than the window
            assert [(await store.admit(_admission(rpm))).verdict for _ in range(4)] == ["ok", "ok", "ok", "rate"]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_window_counts_partly_expired_buckets_exactly(redis_server: RedisServer, short_window: None) -> None:
    key = f"sy:window:{{t-{uuid.uuid4().hex[:6]}}}:tpm"

    async def scenario() -> None:
        store = RedisStore(redis_server.url, timeout_s=5)  # atomicity tested, not latency
        try:
            first = await store.admit(_admission(Window(key, 1000, 100)))
            await asyncio.sleep(STEP_MS * 2 / 1000)
            await store.admit(_admission(Window(key, 1000, 200)))
            assert await store.window_usage(key) == 300
            # the first request used 40 of its 100 tokens: settled, 60 go back
            await store.settle_admission(Settlement(None, 0.0, (), ((key, first.step, -60),)))
            assert await store.window_usage(key) == 240
            refused = await store.admit(_admission(Window(key, 1000, 800)))
            assert refused.verdict == "rate" and refused.used == 240
            # 800 fit once the first bucket (40) leaves: 240 - 40 + 800 = 1000
            # ...which is at most 3 steps away (2 have passed); the second bucket would be 2 steps later
            assert 0 < refused.retry_after_ms <= (STEPS - 2) * STEP_MS
            await asyncio.sleep(refused.retry_after_ms / 1000 + 0.02)
            assert (await store.admit(_admission(Window(key, 1000, 800)))).verdict == "ok"
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_refusal_by_one_window_counts_in_none(redis_server: RedisServer, short_window: None) -> None:
    tag = uuid.uuid4().hex[:6]
    rpm, tpm = f"sy:window:{{{tag}}}:rpm", f"sy:window:{{{tag}}}:tpm"

    async def scenario() -> None:
        store = RedisStore(redis_server.url, timeout_s=5)  # atomicity tested, not latency
        try:
            got = await store.admit(_admission(Window(rpm, 10, 1), Window(tpm, 100, 150)))
            assert got.verdict == "rate" and got.index == 1 and got.retry_after_ms == -1
            assert await store.window_usage(rpm) == 0 and await store.window_usage(tpm) == 0
        finally:
            await store.close()

    asyncio.run(scenario())
