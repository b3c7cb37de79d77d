"""assess_count runs its prompts outside callgrind too (instrumentation switches are no-ops there)."""

from __future__ import annotations

import pytest

from benchmarks.routing_quality import assess_count
from gateway.router.model import Assessment, Router


def test_counts_short_prompts_without_callgrind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHYARD_CALLGRIND", raising=False)
    seen: list[str] = []
    real = assess_count.load_router

    def counting_router() -> Router:
        router = real()
        assess = router.assess

        def counted(text: str) -> Assessment:
            seen.append(text)
            return assess(text)

        monkeypatch.setattr(router, "assess", counted)
        return router

    monkeypatch.setattr(assess_count, "load_router", counting_router)
    assess_count.main(["--kind", "short", "--n", "5"])
    assert len(seen) == 3 * len(assess_count.SHORT_PROMPTS) + 5  # the warm-up, then the counted calls
