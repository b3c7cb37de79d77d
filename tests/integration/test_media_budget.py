"""A request's images, audio and files are billed as prompt tokens: its budget reservation must hold
them before any upstream call, over real HTTP with the `openai` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway import media_tokens
from tests.support.lab import PRICE, budgeted_gateway, simulator_of
from tests.support.processes import Simulator

BUDGET = 0.004  # at $1/M prompt and $2/M output: ~4,000 prompt tokens, a text question's many times over
# audio prompt tokens at the text rate: a deployment with no audio rate cannot take audio on a budget at all
EYE = {"eye": ("sim-eye", {"max_retries": 0, "price": {**PRICE, "audio_input_per_mtok": PRICE["input_per_mtok"]}})}
TEXT = {"type": "text", "text": "Describe these."}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "SUQz" * 100_000, "format": "mp3"}}   # 300 KB: 9,600
PDF = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64," + "JVBE" * 500}}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with simulator_of([{"name": "sim-eye", "ability": 2.0, "ttft_ms": 0, "tokens_per_s": 0, "output_tokens": 5}],
                      tmp_path_factory.mktemp("sim")) as simulator:
        yield simulator


@pytest.mark.parametrize("model", ["router/thrifty", "eye"], ids=["routed", "pinned"])
@pytest.mark.parametrize("parts", [[IMAGE] * 20, [AUDIO], [PDF]], ids=["20-images", "audio", "pdf"])
def test_a_request_whose_media_exceed_the_budget_is_refused_before_any_call(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str,
        parts: list[dict[str, Any]]) -> None:
    """20 images at detail low and one line of text were reserved as the line alone ($0.000052 of the
    $0.004 budget, 12 prompt tokens and 20 output tokens) and sent; a provider may bill the images
    ~32,000 tokens ($0.032). The audio and the PDF were reserved the same $0.00005."""
    assert media_tokens.split_parts_tokens(parts)[0] * 1e-6 > BUDGET
    policy = {"candidates": [{"single": "eye"}]}
    with budgeted_gateway(sim, tmp_path, monkeypatch, BUDGET, policy, EYE) as gw:
        def ask(content: list[dict[str, Any]]) -> object:
            return gw.client.chat.completions.create(model=model, max_tokens=20,  # type: ignore[call-overload]
                                                     messages=[{"role": "user", "content": content}])
        with pytest.raises(openai.RateLimitError) as refused:
            ask([TEXT, *parts])
        assert refused.value.status_code == 429 and refused.value.code == "budget_exceeded"
        assert sim.stats()["sim-eye"]["requests"] == 0  # refused before any upstream call
        # The same words without the media fit, and are answered.
        assert ask([TEXT]).choices[0].message.content  # type: ignore[attr-defined]
        assert sim.stats()["sim-eye"]["served"] == 1


@pytest.mark.parametrize("model", ["router/thrifty", "eye"], ids=["routed", "pinned"])
def test_a_cost_cap_counts_the_images(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      model: str) -> None:
    """A cap of $0.01 cannot pay for 20 images (~32,000 prompt tokens at $1/M): the request is a 422,
    not sent with its images priced at nothing."""
    policy = {"candidates": [{"single": "eye"}]}
    with budgeted_gateway(sim, tmp_path, monkeypatch, 1.0, policy, EYE) as gw:
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            gw.client.chat.completions.create(model=model, max_tokens=20,  # type: ignore[call-overload]
                                              messages=[{"role": "user", "content": [TEXT, *[IMAGE] * 20]}],
                                              extra_headers={"x-switchyard-max-cost-usd": "0.01"})
        assert refused.value.code == "constraint_unsatisfiable"
        assert sim.stats()["sim-eye"]["requests"] == 0
