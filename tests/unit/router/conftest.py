"""Shared fixtures for router specs: a 30-row cut of the recorded routing data."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.router import Router, load_router

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "router_small.jsonl"


@pytest.fixture(scope="session")
def router() -> Router:
    return load_router()


@pytest.fixture(scope="session")
def small_data() -> Path:
    return FIXTURE
