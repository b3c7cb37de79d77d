"""One deadline per request; Retry-After; a missing credential fails at once."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from typing import Any

import pytest

from gateway.errors import ProviderMisconfigured, UpstreamTimeout
from gateway.executor import Deadline
from gateway.pipeline import request_deadline
from gateway.providers.base import MAX_RETRY_AFTER_S, ProviderFailure, parse_retry_after
from tests.support.fake_backend import Delay, answer, deployment, fake_upstreams

BODY = {"messages": [{"role": "user", "content": "hi"}]}


def _throttled(wait_s: float) -> ProviderFailure:
    return ProviderFailure("429", status=429, retry_after_s=wait_s)


class _Script:
    """Answers from a list, one per call, and notes when each call came."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.times: list[float] = []

    def __call__(self, d: Any, body: Any) -> Any:
        self.times.append(time.monotonic())
        return self.replies.pop(0) if self.replies else answer()


def test_retry_after_is_honoured_when_it_fits_the_deadline() -> None:
    script = _Script(_throttled(0.3))
    up, backend = fake_upstreams(script, deployment("small", max_retries=2))
    _done, record = asyncio.run(up.call(("small",), BODY, None, deadline=Deadline.after(5)))
    assert record.deployment == "small" and backend.called("small") == 2
    assert script.times[1] - script.times[0] >= 0.3


def test_retry_after_beyond_the_deadline_goes_to_the_fallback_at_once() -> None:
    script = _Script(_throttled(30))
    up, backend = fake_upstreams(script, deployment("small", max_retries=2), deployment("large"))
    started = time.monotonic()
    _, record = asyncio.run(up.call(("small", "large"), BODY, None, deadline=Deadline.after(5)))
    assert record.deployment == "large" and backend.called("small") == 1
    assert time.monotonic() - started < 0.5


def test_deadline_bounds_retries_and_fallbacks_together() -> None:
    up, backend = fake_upstreams(lambda d, b: Delay(2), deployment("small", timeout_s=30),
                                 deployment("large", timeout_s=30))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as err:
        asyncio.run(up.call(("small", "large"), BODY, None, deadline=Deadline.after(0.3)))
    assert time.monotonic() - started < 0.6
    assert err.value.status == 504 and "deadline of 0.3 s" in err.value.message
    assert backend.called("large") == 0  # the deadline had passed: nothing more was tried
    # a client's short deadline says nothing about the deployment
    assert up.health["small"].consecutive_failures == 0


class _EarlyTimer(Deadline):
    """A deadline whose waits end 5 ms before the clock says it has passed, as an event loop's timer
    that fires early does (uvloop's fire up to a millisecond early)."""

    def remaining(self) -> float:
        return super().remaining() - 0.005


@pytest.mark.parametrize("names", [("small",), ("small", "large")])
def test_a_wait_the_deadline_ended_early_is_a_504_not_an_open_circuit(names: tuple[str, ...]) -> None:
    up, backend = fake_upstreams(lambda d, b: Delay(2), deployment("small", timeout_s=30),
                                 deployment("large", timeout_s=30))
    now = time.monotonic()
    with pytest.raises(UpstreamTimeout) as err:
        asyncio.run(up.call(names, BODY, None, deadline=_EarlyTimer(now + 0.2, 0.2)))
    assert err.value.status == 504 and backend.called("large") == 0
    assert up.health["small"].consecutive_failures == 0


def test_each_attempt_gets_the_remaining_deadline_not_a_fresh_timeout() -> None:
    script = _Script(ProviderFailure("503", status=503), Delay(2))
    up, _backend = fake_upstreams(script, deployment("small", timeout_s=30, max_retries=3))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        asyncio.run(up.call(("small",), BODY, None, deadline=Deadline.after(0.4)))
    assert 0.35 < time.monotonic() - started < 0.8


def test_a_passed_deadline_calls_nothing() -> None:
    up, backend = fake_upstreams(lambda d, b: answer(), deployment("small"))
    with pytest.raises(UpstreamTimeout):
        asyncio.run(up.call(("small",), BODY, None, deadline=Deadline.after(-1)))
    assert backend.calls == []


def test_cascade_steps_share_one_deadline() -> None:
    from gateway.executor import run
    from gateway.plans import Cascade

    up, _backend = fake_upstreams(lambda d, b: Delay(0.25), deployment("small"), deployment("large"))
    plan = Cascade(steps=("small", "large"), confidence="logprob", threshold=0.99)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        asyncio.run(run(up, plan, BODY, None, Deadline.after(0.4)))
    assert time.monotonic() - started < 0.7


def test_the_timeout_header_only_tightens_the_policy_timeout() -> None:
    assert request_deadline(60, 0.5).budget_s == 0.5
    assert request_deadline(2, 30).budget_s == 2
    assert request_deadline(60, None).budget_s == 60


def test_retry_after_accepts_seconds_and_http_dates_and_is_capped() -> None:
    assert parse_retry_after("5") == 5
    assert parse_retry_after("0") == 0
    assert parse_retry_after("100000") == MAX_RETRY_AFTER_S
    assert parse_retry_after("-3") == 0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    in_20_s = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 18 <= (parse_retry_after(in_20_s) or 0) <= 20


def test_a_missing_credential_fails_at_once_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SY_TEST_PROVIDER_KEY", "")
    with caplog.at_level(logging.WARNING, logger="switchyard.upstream"):
        up, backend = fake_upstreams(lambda d, b: answer(), deployment("hosted", api_key_env="SY_TEST_PROVIDER_KEY"))
    assert any("hosted" in r.getMessage() and "SY_TEST_PROVIDER_KEY" in r.getMessage() for r in caplog.records)
    with pytest.raises(ProviderMisconfigured) as err:
        asyncio.run(up.call(("hosted",), BODY, None, deadline=Deadline.after(5)))
    assert err.value.status == 500 and "SY_TEST_PROVIDER_KEY" in err.value.message
    assert backend.calls == []  # not called, let alone three times
    assert up.health["hosted"].consecutive_failures == 0


def test_a_missing_credential_falls_through_to_the_next_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SY_TEST_PROVIDER_KEY", raising=False)
    up, _backend = fake_upstreams(lambda d, b: answer(), deployment("hosted", api_key_env="SY_TEST_PROVIDER_KEY"),
                                 deployment("local"))
    _, record = asyncio.run(up.call(("hosted", "local"), BODY, None, deadline=Deadline.after(5)))
    assert record.deployment == "local"



class _EarlyTimers(asyncio.SelectorEventLoop):
    """An event loop whose timers fire before the clock reaches their time, as uvloop's do (it rounds a
    delay to whole milliseconds and keeps time in whole milliseconds)."""

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        return super().call_at(when - 0.003, callback, *args, context=context)


def test_a_cascade_whose_judge_the_deadline_cut_calls_nothing_more() -> None:
    """The judge's wait ended at the deadline, the clock a fraction of a millisecond short of it: the cascade
    escalated to `large` with no time left, which answered after the 504 and was billed for nothing."""
    from gateway.executor import run
    from gateway.plans import Cascade

    def handler(d: Any, body: Any) -> Any:
        return Delay(2, answer("9")) if d.name == "judge" else answer("The answer is A.", model=d.name)

    for _ in range(3):
        up, backend = fake_upstreams(handler, deployment("small"), deployment("large"), deployment("judge"))
        plan = Cascade(("small", "large"), "judge", 0.7, judge="judge")
        with asyncio.Runner(loop_factory=_EarlyTimers) as runner, pytest.raises(UpstreamTimeout):
            runner.run(run(up, plan, BODY, None, Deadline.after(0.2)))
        assert backend.called("judge") == 1 and backend.called("large") == 0
