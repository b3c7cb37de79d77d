"""A deployment's pace: observed ÷ configured latency of whole answers, bounded per call; streams are
paced by their readers and do not count."""

from __future__ import annotations

import pytest

from gateway.config import DeploymentConfig
from gateway.providers.health import PACE_RANGE, DeploymentHealth, HealthBoard, configured_latency_ms

AS_CONFIGURED = DeploymentConfig.model_validate({"name": "small", "model": "openai/small", "api_base": "http://x",
                                                "expected_ttft_ms": 20, "expected_tokens_per_s": 400})


def test_an_answer_as_long_as_configured_says_is_on_pace_whatever_its_length() -> None:
    h = DeploymentHealth()
    for out in (10, 400, 4000):  # 20 ms to first token, 400 tokens a second, as configured
        took = 0.02 + out / 400
        h.record_success(took, configured_s=configured_latency_ms(AS_CONFIGURED, out) / 1000)
    assert h.pace_ewma == pytest.approx(1.0)


def test_a_long_prompt_is_allowed_its_reading_time() -> None:
    assert configured_latency_ms(AS_CONFIGURED, 10, 50_000) == pytest.approx(1000 * (0.02 + 10.0 + 0.025))


def test_one_call_moves_the_pace_by_a_bounded_factor() -> None:
    h = DeploymentHealth()
    h.record_success(600.0, configured_s=0.1)  # stuck until a ten-minute timeout
    assert h.pace_ewma == PACE_RANGE[1]
    h = DeploymentHealth()
    h.record_success(0.0, configured_s=0.1)  # served from somewhere's cache
    assert h.pace_ewma == PACE_RANGE[0]


def test_streams_feed_first_token_times_not_the_pace() -> None:
    board = HealthBoard(["small"])
    board["small"].record_success(30.0, 0.05)  # a stream its reader took half a minute over
    assert board["small"].pace_ewma is None and board["small"].ttft_ewma_s == 0.05
    assert board.view().pace == {}
    board["small"].record_success(0.2, configured_s=0.1)
    assert board.view().pace == {"small": 2.0}
