"""Spans are exported in large batches by default, and the standard OTEL_BSP_* variables still decide."""

from __future__ import annotations

import pytest

from gateway.telemetry import SPAN_BATCH, SPAN_QUEUE, batch_settings


def test_spans_go_out_in_batches_of_2048_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    assert batch_settings() == (SPAN_QUEUE, SPAN_BATCH) == (8192, 2048)


def test_an_operator_set_batch_size_is_left_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64")
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
    assert batch_settings() == (SPAN_QUEUE, None)
