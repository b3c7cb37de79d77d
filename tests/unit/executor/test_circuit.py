"""Circuits: which failures count, the single half-open trial, and an open circuit that is never called."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.errors import DeploymentUnavailable, GatewayError, InvalidRequest, UpstreamError
from gateway.executor import Deadline
from gateway.providers.base import ProviderFailure, is_retryable_status
from gateway.providers.health import DeploymentHealth
from tests.support.fake_backend import Delay, Stream, answer, chunk, deployment, fake_upstreams

BODY = {"messages": [{"role": "user", "content": "hi"}]}


def _call(up: Any, *names: str) -> Any:
    return up.call(names, BODY, None, deadline=Deadline.after(10))


def _failing(status: int | None, *, timeout: bool = False) -> ProviderFailure:
    retryable = True if status is None else is_retryable_status(status)
    return ProviderFailure(f"upstream said {status}", status=status, timeout=timeout, retryable=retryable)


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_upstream_4xx_caused_by_the_request_does_not_count_toward_the_circuit(status: int) -> None:
    up, backend = fake_upstreams(lambda d, b: _failing(status), deployment("small"), failure_threshold=2)

    async def scenario() -> None:
        for _ in range(6):
            with pytest.raises(GatewayError):
                await _call(up, "small")

    asyncio.run(scenario())
    assert backend.called("small") == 6  # never retried
    assert not up.health["small"].is_open(time.monotonic())
    assert up.health["small"].consecutive_failures == 0


def test_a_request_the_upstream_rejects_does_not_fall_back() -> None:
    up, backend = fake_upstreams(lambda d, b: _failing(400) if d.name == "small" else answer(),
                                 deployment("small"), deployment("large"))
    with pytest.raises(InvalidRequest):
        asyncio.run(_call(up, "small", "large"))
    assert backend.called("large") == 0


@pytest.mark.parametrize("failure", [_failing(500), _failing(503), _failing(429), _failing(408),
                                     _failing(None, timeout=True), _failing(None)],
                         ids=["500", "503", "429", "408", "timeout", "connection"])
def test_failures_that_say_something_about_the_deployment_open_its_circuit(failure: ProviderFailure) -> None:
    up, backend = fake_upstreams(lambda d, b: failure, deployment("small", max_retries=0), failure_threshold=3)

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(GatewayError):
                await _call(up, "small")
        with pytest.raises(DeploymentUnavailable):
            await _call(up, "small")

    asyncio.run(scenario())
    assert backend.called("small") == 3  # the open circuit was not called


def _half_open(up: Any, name: str) -> None:
    health: DeploymentHealth = up.health[name]
    health.consecutive_failures = health.failure_threshold
    health.opened_at = time.monotonic() - health.cooldown_s - 0.01


def test_half_open_circuit_admits_exactly_one_trial() -> None:
    up, backend = fake_upstreams(lambda d, b: Delay(0.05), deployment("small"))
    _half_open(up, "small")

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(_call(up, "small") for _ in range(5)), return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert backend.called("small") == 1
    assert sum(1 for o in outcomes if isinstance(o, tuple)) == 1
    assert sum(1 for o in outcomes if isinstance(o, DeploymentUnavailable)) == 4
    assert not up.health["small"].is_open(time.monotonic())  # the trial succeeded: closed for everyone


def test_half_open_health_admits_one_trial_until_it_reports() -> None:
    health = DeploymentHealth(failure_threshold=1, cooldown_s=10)
    health.record_failure(now=100.0)
    assert health.admit(105.0) is None  # cooling down
    assert health.admit(111.0) == "trial"
    assert health.admit(111.5) is None and health.is_open(111.5)  # the trial is out: others still skip
    health.record_neutral(trial=True)  # no verdict (the request's own fault): the next caller tries
    assert health.admit(112.0) == "trial"
    health.record_success(0.1)
    assert health.admit(112.5) == "closed"


def test_failed_trial_reopens_the_circuit_for_another_cooldown() -> None:
    up, backend = fake_upstreams(lambda d, b: _failing(503), deployment("small", max_retries=2))
    _half_open(up, "small")
    with pytest.raises(UpstreamError):
        asyncio.run(_call(up, "small"))
    assert backend.called("small") == 1  # the re-opened circuit refuses the retries too
    health = up.health["small"]
    assert health.is_open(time.monotonic()) and not health.trial_in_flight
    assert health.retry_after_s(time.monotonic()) == 15


def test_a_cancelled_trial_lets_the_next_caller_try() -> None:
    up, _backend = fake_upstreams(lambda d, b: Delay(5), deployment("small"))
    _half_open(up, "small")

    async def scenario() -> None:
        trial = asyncio.create_task(_call(up, "small"))
        await asyncio.sleep(0.02)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial

    asyncio.run(scenario())
    assert up.health["small"].admit(time.monotonic()) == "trial"


def test_every_circuit_open_fails_fast_with_retry_after() -> None:
    up, backend = fake_upstreams(lambda d, b: answer(), deployment("small"), deployment("large"))
    now = time.monotonic()
    for name in ("small", "large"):
        up.health[name].consecutive_failures = 5
        up.health[name].opened_at = now - 5
    with pytest.raises(DeploymentUnavailable) as err:
        asyncio.run(_call(up, "small"))
    assert err.value.status == 503 and err.value.code == "deployment_unavailable"
    assert err.value.headers["retry-after"] == "10"
    assert backend.calls == []


def test_fallback_skips_an_open_circuit() -> None:
    up, backend = fake_upstreams(lambda d, b: answer(), deployment("small"), deployment("large"))
    up.health["small"].consecutive_failures = 5
    up.health["small"].opened_at = time.monotonic()
    _, record = asyncio.run(_call(up, "small", "large"))
    assert record.deployment == "large" and backend.called("small") == 0



def _long_or_short(d: Any, body: dict[str, Any]) -> Delay:
    """An upstream that writes `max_tokens` at 100 tokens a second (a stream's first chunk included):
    a long answer outlasts timeout_s, a short one does not."""
    return Delay(body["max_tokens"] / 100)


def _burst(up: Any, long: int, rounds: int, *, stream: bool = False) -> tuple[list[Any], int]:
    """`long` calls for 100 tokens at once, `rounds` times, while short calls keep being answered:
    the long calls' outcomes, and how many short calls failed."""
    long_body = {**BODY, "max_tokens": 100}

    async def scenario() -> tuple[list[Any], int]:
        done, refused = asyncio.Event(), 0

        async def short_calls() -> None:
            nonlocal refused
            while not done.is_set():
                try:
                    await up.call(("small",), {**BODY, "max_tokens": 1}, None, deadline=Deadline.after(10))
                except GatewayError:
                    refused += 1
                await asyncio.sleep(0.03)

        shorts = asyncio.create_task(short_calls())
        await asyncio.sleep(0.02)
        outcomes: list[Any] = []
        for _ in range(rounds):
            opened = up.open_stream if stream else up.call
            outcomes += await asyncio.gather(*(opened(("small",), long_body, None, deadline=Deadline.after(10))
                                               for _ in range(long)), return_exceptions=True)
        done.set()
        await shorts
        return outcomes, refused

    return asyncio.run(scenario())


def test_whole_answers_too_long_for_timeout_s_do_not_open_a_circuit_that_answers_others() -> None:
    up, _ = fake_upstreams(_long_or_short, deployment("small", timeout_s=0.2, max_retries=0), failure_threshold=3)
    outcomes, refused = _burst(up, long=6, rounds=2)
    assert all(isinstance(o, GatewayError) and o.status == 504 for o in outcomes)
    health = up.health["small"]
    assert refused == 0 and health.failures == 0 and not health.is_open(time.monotonic())


@pytest.mark.parametrize("status", [504, 408])
def test_an_upstreams_own_timeouts_of_long_answers_do_not_open_a_circuit_that_answers_others(status: int) -> None:
    """A proxy in front of a model server (or the server itself) times a long generation out with a 504
    or 408 of its own: the request's length, as with our timeout_s, while short calls are answered."""
    def handler(d: Any, body: dict[str, Any]) -> Any:
        return Delay(0.15, _failing(status)) if body["max_tokens"] > 1 else answer()
    up, _ = fake_upstreams(handler, deployment("small", timeout_s=1.0, max_retries=0), failure_threshold=3)
    outcomes, refused = _burst(up, long=6, rounds=2)
    assert all(isinstance(o, GatewayError) for o in outcomes)
    health = up.health["small"]
    assert refused == 0 and health.failures == 0 and not health.is_open(time.monotonic())


def test_whole_answer_timeouts_count_when_the_deployment_answered_nobody_meanwhile() -> None:
    up, _ = fake_upstreams(lambda d, b: Delay(5), deployment("small", timeout_s=0.1, max_retries=0),
                           failure_threshold=3)
    up.health["small"].record_success(0.01)  # it answered once, before these calls began

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(_call(up, "small") for _ in range(3)), return_exceptions=True)

    assert all(isinstance(o, GatewayError) for o in asyncio.run(scenario()))
    assert up.health["small"].is_open(time.monotonic())


def test_late_first_chunks_do_not_open_a_circuit_that_answers_others() -> None:
    """One tenant's streams whose first chunk is slow to come (a long prompt's prefill, a response
    schema to compile) time out on their own while the deployment answers another tenant's calls:
    they must not open its circuit for everyone."""
    up, _ = fake_upstreams(_long_or_short, deployment("small", timeout_s=0.2, max_retries=0), failure_threshold=3)
    outcomes, refused = _burst(up, long=6, rounds=2, stream=True)
    assert all(isinstance(o, GatewayError) and o.status == 504 for o in outcomes)
    health = up.health["small"]
    assert refused == 0 and health.failures == 0 and not health.is_open(time.monotonic())


def test_late_first_chunks_count_when_the_deployment_answered_nobody_meanwhile() -> None:
    up, _ = fake_upstreams(lambda d, b: Delay(5), deployment("small", timeout_s=0.1, max_retries=0),
                           failure_threshold=3)
    up.health["small"].record_success(0.01)  # it answered once, before these calls began

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(up.open_stream(("small",), BODY, None, deadline=Deadline.after(10))
                                      for _ in range(3)), return_exceptions=True)

    assert all(isinstance(o, GatewayError) for o in asyncio.run(scenario()))
    assert up.health["small"].is_open(time.monotonic())


def _writer(d: Any, body: dict[str, Any]) -> Any:
    """A live upstream that writes `max_tokens` tokens at 100 a second: streamed, its first token comes
    at once and the rest as written; a whole answer comes only once all of it is written."""
    tokens = body["max_tokens"]
    if body.get("stream"):
        return Stream([chunk("x ") for _ in range(tokens)] + [chunk(finish="stop"), chunk(usage=(10, tokens))],
                      pause_s=0.01)
    return Delay(tokens / 100, answer("x " * tokens))


LONG, SHORT = {**BODY, "max_tokens": 100}, {**BODY, "max_tokens": 1}


def _writers(**kw: Any) -> tuple[Any, Any]:
    """The direct path's upstreams (whole answers read from upstream streams) in front of `_writer`."""
    return fake_upstreams(_writer, deployment("small", timeout_s=0.2, max_retries=0), deployment("large"),
                          failure_threshold=3, streams_whole_answers=True, **kw)


def test_one_tenants_long_answers_on_a_quiet_deployment_do_not_open_its_circuit_for_another() -> None:
    """Nobody else calls the deployment meanwhile, so no other answer excuses the timeouts: the first
    token, which comes in time whatever the answer's length, does."""
    up, backend = _writers()

    async def scenario() -> tuple[list[Any], Any]:
        long = [(await asyncio.gather(up.call(("small",), LONG, None, deadline=Deadline.after(10)),
                                      return_exceptions=True))[0] for _ in range(3)]  # one after another
        return long, await up.call(("small", "large"), SHORT, None, deadline=Deadline.after(10))

    long, (_, record) = asyncio.run(scenario())
    assert all(isinstance(o, GatewayError) and o.status == 504 for o in long)  # their own answers time out
    assert record.deployment == "small"  # the other tenant is still served by it, not sent elsewhere
    assert up.health["small"].failures == 0 and not up.health["small"].is_open(time.monotonic())
    # Asked for whole, a long answer's unexplained timeout is held; the next call is asked for as a
    # stream, and its first token settles what was held.
    streamed = [bool(body.get("stream")) for _, body in backend.calls]
    assert streamed[:2] == [False, True] and streamed[-1] and up.health["small"].unexplained == 0


def test_a_long_answer_that_takes_the_half_open_trial_does_not_keep_the_circuit_open() -> None:
    up, _ = _writers()
    _half_open(up, "small")

    async def scenario() -> Any:
        with pytest.raises(GatewayError):  # the trial: its whole answer outlasts timeout_s
            await up.call(("small",), LONG, None, deadline=Deadline.after(10))
        return await up.call(("small", "large"), SHORT, None, deadline=Deadline.after(10))

    _, record = asyncio.run(scenario())
    assert record.deployment == "small"
    assert up.health["small"].state(time.monotonic()) == "closed"


def test_a_hung_upstream_still_opens_the_circuit_when_whole_answers_are_streamed() -> None:
    up, _ = fake_upstreams(lambda d, b: Delay(5), deployment("small", timeout_s=0.1, max_retries=0),
                           failure_threshold=3, streams_whole_answers=True)

    async def scenario() -> list[Any]:
        return [(await asyncio.gather(_call(up, "small"), return_exceptions=True))[0] for _ in range(3)]

    assert all(isinstance(o, GatewayError) for o in asyncio.run(scenario()))
    assert up.health["small"].is_open(time.monotonic())
    _half_open(up, "small")  # and its trial, no first token in time either, re-opens it
    with pytest.raises(GatewayError):
        asyncio.run(_call(up, "small"))
    assert up.health["small"].state(time.monotonic()) == "open"


def test_a_deployment_that_cannot_stream_gets_whole_answers_asked_for_whole() -> None:
    """`whole_answers_as_streams: never` (a server or model that cannot stream): no stream is asked for,
    and with no first token to show, a quiet deployment's long answers count as before."""
    up, backend = fake_upstreams(_writer, deployment("small", timeout_s=0.2, max_retries=0,
                                                     whole_answers_as_streams="never"),
                                 failure_threshold=3, streams_whole_answers=True)

    async def scenario() -> list[Any]:
        return [(await asyncio.gather(up.call(("small",), LONG, None, deadline=Deadline.after(10)),
                                      return_exceptions=True))[0] for _ in range(3)]

    assert all(isinstance(o, GatewayError) and o.status == 504 for o in asyncio.run(scenario()))
    assert not any(body.get("stream") for _, body in backend.calls)
    assert up.health["small"].is_open(time.monotonic())


def test_a_hung_deployment_that_refused_a_stream_opens_its_circuit_at_its_threshold() -> None:
    """Once a deployment refused a whole answer asked for as a stream, none is asked for so again: a
    timeout of the call then asked whole (nothing explaining it) counts as a whole answer's does there,
    never held for a streamed verdict that cannot come."""
    def handler(d: Any, body: dict[str, Any]) -> Any:
        if body.get("stream"):
            return ProviderFailure("stream refused", status=400, retryable=False, refuses_streaming=True)
        return Delay(5)  # hung

    up, _ = fake_upstreams(handler, deployment("small", timeout_s=0.1, max_retries=0,
                                               whole_answers_as_streams="always"),
                           failure_threshold=3, streams_whole_answers=True)

    async def scenario() -> list[Any]:
        return [(await asyncio.gather(_call(up, "small"), return_exceptions=True))[0] for _ in range(3)]

    assert all(isinstance(o, GatewayError) for o in asyncio.run(scenario()))
    assert "small" in up.unstreamed
    assert up.health["small"].unexplained == 0
    assert up.health["small"].is_open(time.monotonic())


def _streams_break(d: Any, body: dict[str, Any]) -> Any:
    """An upstream whose streams break off after their first chunk while its whole answers are fine."""
    if body.get("stream"):
        return Stream([chunk("half ")], fail=ProviderFailure("connection reset mid-stream", reason="connection failed"))
    return answer("whole")


def test_a_deployment_whose_streams_break_still_answers_whole_answers_whole() -> None:
    """A broken stream left the deployment failing, so its whole answers were asked for as streams for a verdict,
    broke too, and kept it failing: every whole answer failed though the deployment answers them whole."""
    up, backend = fake_upstreams(_streams_break, deployment("small", max_retries=0), streams_whole_answers=True)

    up.health["small"].record_failure(time.monotonic())  # a client's stream broke off: the deployment is failing

    async def scenario() -> list[Any]:
        return [await up.call(("small",), BODY, None, deadline=Deadline.after(10)) for _ in range(3)]

    answers = asyncio.run(scenario())
    assert [done.body["choices"][0]["message"]["content"] for done, _ in answers] == ["whole"] * 3
    # one stream for the verdict, broken; asked again whole, which answered: the next ones are asked whole
    assert [bool(body.get("stream")) for _, body in backend.calls] == [True, False, False, False]
    assert not up.health["small"].is_open(time.monotonic())
