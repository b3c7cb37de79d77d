"""Retries, fallbacks and streams through `Upstreams`, against the fake backend (no sockets)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.config import DeploymentConfig
from gateway.errors import InvalidRequest, UpstreamError
from gateway.executor import Deadline
from gateway.logs import prompts_logged
from gateway.providers.base import ProviderFailure
from tests.support.fake_backend import Stream, answer, chunk, deployment, fake_upstreams

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "Say hello."}]}


def _fails_then_answers(failures: int, failure: ProviderFailure) -> Callable[[DeploymentConfig, dict[str, Any]], Any]:
    count = itertools.count()

    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        return failure if next(count) < failures else answer("hello", model=d.name)
    return handler


def _call(up: Any, names: tuple[str, ...]) -> Any:
    return asyncio.run(up.call(names, BODY, None, deadline=Deadline.after(10)))


def test_a_retryable_failure_is_retried_on_the_same_deployment_until_it_answers() -> None:
    up, backend = fake_upstreams(_fails_then_answers(2, ProviderFailure("503", status=503, retry_after_s=0)),
                                 deployment("small", max_retries=2))
    done, record = _call(up, ("small",))
    assert backend.called("small") == 3
    assert record.deployment == "small" and done.body["choices"][0]["message"]["content"] == "hello"


def test_retries_are_bounded_by_max_retries_then_the_fallback_answers() -> None:
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        return ProviderFailure("503", status=503, retry_after_s=0) if d.name == "small" else answer(model=d.name)
    up, backend = fake_upstreams(handler, deployment("small", max_retries=1), deployment("large"))
    _, record = _call(up, ("small", "large"))
    assert (backend.called("small"), backend.called("large")) == (2, 1)
    assert record.deployment == "large"


@pytest.mark.parametrize(("failed_before", "waits"), [(1, [30]), (0, [0, 30])])
def test_a_failure_that_opens_the_circuit_goes_to_the_fallback_without_waiting_for_a_retry(
        failed_before: int, waits: list[float]) -> None:
    """The failure that opened a deployment's circuit (its 2nd in a row: on the first attempt, or on a retry)
    still had its Retry-After waited out, 30 s here, only for the retry to find the circuit open: the client
    waited for nothing and the fallback was asked after it."""
    told = iter(waits)

    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        if d.name == "small":
            return ProviderFailure("429", status=429, retry_after_s=next(told))
        return answer(model=d.name)
    up, backend = fake_upstreams(handler, deployment("small", max_retries=3), deployment("large"), failure_threshold=2)
    for _ in range(failed_before):
        up.health["small"].record_failure(time.monotonic())

    async def run() -> Any:
        return await asyncio.wait_for(up.call(("small", "large"), BODY, None, deadline=Deadline.after(60)), 5)
    _, record = asyncio.run(run())
    assert (backend.called("small"), record.deployment) == (len(waits), "large")
    assert up.health["small"].is_open(time.monotonic())


def test_a_failure_that_is_not_retryable_goes_to_the_fallback_without_a_retry() -> None:
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        if d.name == "small":
            raise ProviderFailure("401", status=401, retryable=False)
        return answer(model=d.name)
    up, backend = fake_upstreams(handler, deployment("small", max_retries=3), deployment("large"))
    _, record = _call(up, ("small", "large"))
    assert (backend.called("small"), record.deployment) == (1, "large")


def test_when_every_deployment_fails_the_client_is_told_which_and_how() -> None:
    up, _ = fake_upstreams(lambda d, b: ProviderFailure("boom", status=502, retryable=False),
                           deployment("small"), deployment("large"))
    with pytest.raises(UpstreamError) as failed:
        _call(up, ("small", "large"))
    assert "deployment 'small' failed: upstream answered 502" in failed.value.message
    assert "deployment 'large' failed: upstream answered 502" in failed.value.message


def test_a_rejected_request_is_a_400_naming_the_deployment() -> None:
    up, _ = fake_upstreams(lambda d, b: ProviderFailure("bad", status=400, retryable=False), deployment("small"))
    with pytest.raises(InvalidRequest) as rejected:
        _call(up, ("small",))
    assert rejected.value.status == 400 and "deployment 'small' rejected the request" in rejected.value.message


def test_an_answer_without_usage_is_billed_on_counted_tokens() -> None:
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        out = answer("hello there, how are you today?", model=d.name)
        del out["usage"]
        return out
    up, _ = fake_upstreams(handler, deployment("small"))
    _, record = _call(up, ("small",))
    assert record.usage.prompt_tokens > 0 and record.usage.completion_tokens > 0
    assert record.cost_usd == pytest.approx(record.usage.prompt_tokens * 1e-6 + record.usage.completion_tokens * 2e-6)


@pytest.mark.parametrize("message", [
    {"role": "assistant", "content": None, "refusal": "I can't help with that request, I'm afraid."},
    {"role": "assistant", "content": None,
     "function_call": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}},
], ids=["refusal", "function_call"])
def test_an_answer_without_usage_is_billed_for_its_refusal_or_function_call(message: dict[str, Any]) -> None:
    """What the model wrote is counted, whichever field holds it, as a stream's is (`Accumulator`)."""
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        out = answer("", model=d.name)
        del out["usage"]
        out["choices"][0]["message"] = message
        return out
    up, _ = fake_upstreams(handler, deployment("small"))
    _, record = _call(up, ("small",))
    assert record.usage.completion_tokens >= 8


def test_a_stream_that_fails_before_its_first_chunk_falls_back() -> None:
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        if d.name == "small":
            return ProviderFailure("503", status=503, retryable=False)
        return Stream([chunk("hi", finish="stop"), chunk(usage=(7, 1))])
    up, backend = fake_upstreams(handler, deployment("small"), deployment("large"))

    async def relay() -> tuple[str, list[dict[str, Any]], Any]:
        live = await up.open_stream(("small", "large"), BODY, None, deadline=Deadline.after(10))
        rest = [c async for c in live.rest]
        return live.deployment, [live.first, *rest], up.close_stream(live)
    name, chunks, record = asyncio.run(relay())
    assert (backend.called("small"), backend.called("large")) == (1, 1)
    assert name == "large" and chunks[0]["choices"][0]["delta"]["content"] == "hi"
    assert (record.usage.prompt_tokens, record.usage.completion_tokens) == (7, 1)
    assert record.cost_usd == pytest.approx(7e-6 + 2e-6)


def test_a_stream_failing_midway_is_not_retried_and_counts_against_its_deployment() -> None:
    up, backend = fake_upstreams(
        lambda d, b: Stream([chunk("par")], fail=ProviderFailure("reset", retryable=True)),
        deployment("small"), failure_threshold=1)

    async def relay() -> None:
        live = await up.open_stream(("small",), BODY, None, deadline=Deadline.after(10))
        try:
            async for _ in live.rest:
                pass
        except ProviderFailure as exc:
            up.close_stream(live, exc)
    asyncio.run(relay())
    assert backend.called("small") == 1
    assert "small" in up.health.view().open_circuits


def test_a_call_without_an_output_limit_is_sent_each_deployments_own_under_its_backends_name() -> None:
    """Budgets and cost caps bound such a call by its deployment's max_output_tokens: the call must
    carry it, under the name its backend's providers take; a client's own limit is left as sent."""
    up, backend = fake_upstreams(lambda d, body: ProviderFailure("503", status=503) if d.name == "a" else answer(),
                                 deployment("a", max_output_tokens=100, max_retries=0),
                                 deployment("b", max_output_tokens=30))
    backend.output_limit = "max_completion_tokens"
    _call(up, ("a", "b"))
    assert [(n, b.get("max_completion_tokens"), b.get("max_tokens")) for n, b in backend.calls] == [
        ("a", 100, None), ("b", 30, None)]
    backend.calls.clear()
    asyncio.run(up.call(("b",), {**BODY, "max_tokens": 7}, None, deadline=Deadline.after(10)))
    assert [(b.get("max_completion_tokens"), b.get("max_tokens")) for _, b in backend.calls] == [(None, 7)]


QUOTED = "[{'type': 'extra_forbidden', 'input': {'messages': [{'role': 'user', 'content': 'Say hello.'}]}}]"


@pytest.mark.parametrize("logged", [False, True])
def test_an_upstream_refusal_quoting_the_prompt_is_logged_without_it_unless_the_tenant_logs_prompts(
        logged: bool, caplog: pytest.LogCaptureFixture) -> None:
    """A server's 400 may quote the request back (vLLM's validation errors hold the body they refused): its
    words went into the upstream_failure line and the call's span whatever the tenant's `log_prompts`."""
    failure = ProviderFailure(f"small: upstream answered 400: {QUOTED}", status=400, retryable=False,
                              reason=f"upstream answered 400: {QUOTED}")
    up, _ = fake_upstreams(lambda d, b: failure, deployment("small"))

    async def call() -> None:
        prompts_logged.set(logged)
        with pytest.raises(InvalidRequest):
            await up.call(("small",), BODY, None, deadline=Deadline.after(10))

    with caplog.at_level(logging.WARNING, logger="switchyard.upstream"):
        asyncio.run(call())
    line = next(r for r in caplog.records if getattr(r, "event", None) == "upstream_failure")
    assert ("Say hello." in line.getMessage()) is logged and ("Say hello." in line.reason) is logged  # type: ignore[attr-defined]
    assert "upstream answered 400" in line.getMessage() and line.status == 400  # type: ignore[attr-defined]
