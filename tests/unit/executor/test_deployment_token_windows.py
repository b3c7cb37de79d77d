"""A deployment's tokens-per-minute window holds each call's worst case only while it runs: whole
answers, whole streams and streams cut short all settle to the tokens really used."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.config import DeploymentConfig
from gateway.executor import Deadline
from gateway.executor.upstreams import Upstreams
from gateway.messages import count_messages
from gateway.providers.base import Usage
from gateway.quotas import DeploymentQuotas
from gateway.state import MemoryStore, deployment_window_key
from tests.support.fake_backend import Stream, answer, chunk, deployment, fake_upstreams

MESSAGES = [{"role": "user", "content": "Tell me a long story."}]
BODY: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 500}
TPM = deployment_window_key("small", "tpm")


def _limited(handler: Any) -> tuple[Upstreams, MemoryStore]:
    d = deployment("small", tokens_per_minute=100_000)
    up, _ = fake_upstreams(handler, d)
    store = MemoryStore()
    up.quotas = DeploymentQuotas(store, {"small": d})
    return up, store


def _story(d: DeploymentConfig, body: dict[str, Any]) -> Any:
    return Stream([chunk("Once"), chunk(" upon a time", finish="stop"), chunk(usage=(12, 30))])


def test_a_whole_stream_settles_its_window_to_the_usage_it_reported() -> None:
    up, store = _limited(_story)

    async def relay() -> tuple[float, float]:
        live = await up.open_stream(("small",), BODY, None, deadline=Deadline.after(10))
        during = await store.window_usage(TPM)
        async for _ in live.rest:
            pass
        await up.end_stream(live)
        return during, await store.window_usage(TPM)
    during, after = asyncio.run(relay())
    assert during == count_messages(MESSAGES) + 500  # the worst case, while the stream runs
    assert after == 12 + 30


def test_a_stream_cut_short_settles_its_window_to_what_was_counted() -> None:
    up, store = _limited(_story)

    async def relay() -> float:
        live = await up.open_stream(("small",), BODY, None, deadline=Deadline.after(10))
        await live.rest.aclose()  # type: ignore[attr-defined]  # the client left after the first chunk
        live.stats.usage = Usage(count_messages(MESSAGES), 1)  # as the pipeline bills a cut stream
        await up.end_stream(live)
        return await store.window_usage(TPM)
    assert asyncio.run(relay()) == count_messages(MESSAGES) + 1


def test_a_whole_answer_settles_its_window_too() -> None:
    up, store = _limited(lambda d, b: answer("The end.", model=d.name))

    async def call() -> tuple[Usage, float]:
        done, _ = await up.call(("small",), BODY, None, deadline=Deadline.after(10))
        return done.usage, await store.window_usage(TPM)
    usage, used = asyncio.run(call())
    assert used == usage.prompt_tokens + usage.completion_tokens < count_messages(MESSAGES) + 500


def test_a_request_no_deployment_window_ever_takes_is_told_not_to_retry() -> None:
    from gateway.api.errors import error_response
    from gateway.quotas import DeploymentOverQuota, over_quota_error

    never = over_quota_error([DeploymentOverQuota("small", "tokens_per_minute", -1)])
    assert "retry-after" not in never.headers and error_response(never).headers["x-should-retry"] == "false"
    soon = over_quota_error([DeploymentOverQuota("small", "tokens_per_minute", -1),
                             DeploymentOverQuota("large", "requests_per_minute", 2_000)])
    assert soon.headers["retry-after"] == "2" and "x-should-retry" not in error_response(soon).headers
