"""While an app serves, numpy's BLAS runs on the calling thread (the router's small products on the
request path gain nothing from a second thread and wait for it when the other core is busy); the
last app to stop gives BLAS its threads back."""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI
from threadpoolctl import threadpool_info, threadpool_limits

from gateway.api.app import create_app
from gateway.config import parse_config


def _app() -> FastAPI:
    config = parse_config({"deployments": [
        {"name": tier, "model": f"openai/sim-{tier}", "api_base": "http://127.0.0.1:9/v1", "tier": tier,
         "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}} for tier in ("small", "large")
    ]}, "blas test")
    return create_app(config, watch_policies_s=None, watch_router_s=None)


def _blas_threads() -> set[int]:
    assert np.ones(1) is not None  # numpy (and its BLAS) is loaded
    return {int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"}


async def test_a_serving_app_runs_blas_on_one_thread_and_gives_the_threads_back() -> None:
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        assert _blas_threads() == {2}
        first, second = _app(), _app()
        async with first.router.lifespan_context(first):
            assert _blas_threads() == {1}
            async with second.router.lifespan_context(second):
                assert _blas_threads() == {1}
            assert _blas_threads() == {1}  # the first still serves
        assert _blas_threads() == {2}
