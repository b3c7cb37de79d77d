"""While an app serves, what was alive at start-up is left out of garbage collections and the young
generation is collected less often; the last app to stop gives the collector back its settings."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from gateway.api import gc_tuning
from gateway.api.app import create_app
from gateway.config import parse_config


def _app() -> FastAPI:
    config = parse_config({"deployments": [
        {"name": tier, "model": f"openai/sim-{tier}", "api_base": "http://127.0.0.1:9/v1", "tier": tier,
         "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}} for tier in ("small", "large")
    ]}, "gc test")
    return create_app(config, watch_policies_s=None, watch_router_s=None)


async def test_a_serving_app_freezes_its_start_up_objects_and_collects_the_young_generation_less_often() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    alone = gc_tuning.serving_apps() == 0  # no app of an earlier test left serving
    first, second = _app(), _app()
    async with first.router.lifespan_context(first):
        assert gc.get_threshold()[0] == max(gc_tuning.YOUNG_THRESHOLD, before[0])
        assert gc.get_threshold()[1:] == before[1:]
        assert gc_tuning.serving_apps() >= 1
        assert gc.get_freeze_count() > 0  # the services built at start-up among them
        async with second.router.lifespan_context(second):
            assert gc.get_threshold()[0] == max(gc_tuning.YOUNG_THRESHOLD, before[0])
        assert gc.get_threshold()[0] == max(gc_tuning.YOUNG_THRESHOLD, before[0])  # the first still serves
        assert gc.get_freeze_count() > 0
    if alone:
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0  # collectable again
    else:  # another app still serves: nothing was unfrozen (that would move every frozen object out at
        # once); the count may still fall by a few frozen objects freed meanwhile
        assert gc.get_freeze_count() > 0 and gc.get_freeze_count() >= frozen // 2
