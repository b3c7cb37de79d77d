"""Audio prompts (`input_audio` parts) over real HTTP with the `openai` SDK: held by budgets and cost
caps at the deployment's audio prompt rate before any upstream call, billed at it for the audio tokens
the answer's usage reports (`prompt_tokens_details.audio_tokens`), and refused under a budget or cap
where no audio rate is known.

`gpt-audio` and `gpt-4o` are priced from litellm's cost map (gpt-audio: text input 2.5e-6, audio input
3.2e-5, output 1e-5 a token; gpt-4o names no audio rate); `ear` by its config `price:` ($1/M text in,
$2/M out, $40/M audio in). The simulator bills a clip 10 tokens a second at 8 kbit/s (300 for 30 KB)
and reports them as OpenAI does; the gateway holds the same clip as 960 (`gateway.media_tokens`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.providers.pricing import load_litellm_cost_map
from tests.support.lab import PRICE, budgeted_gateway, simulator_of
from tests.support.processes import Simulator

TEXT = {"type": "text", "text": "Transcribe this."}
CLIP = {"type": "input_audio", "input_audio": {"data": "SUQz" * 10_000, "format": "mp3"}}  # 30 KB decoded
HEARD, BILLED_AUDIO = 960, 300  # the clip's tokens: as the gateway holds them, as the simulator bills them
# name → (simulated model, settings, (text input, audio input, output) USD a token)
RATES = {"audio": ("gpt-audio", {"price": None}, (2.5e-6, 3.2e-5, 1e-5)),
         "ear": ("sim-ear", {"price": {**PRICE, "audio_input_per_mtok": 40.0}}, (1e-6, 4e-5, 2e-6))}
DEPLOYMENTS = {name: (model, {**settings, "max_retries": 0}) for name, (model, settings, _) in RATES.items()}
DEPLOYMENTS["4o"] = ("gpt-4o", {"price": None, "max_retries": 0})

pytestmark = pytest.mark.skipif(not load_litellm_cost_map(), reason="litellm's cost map is not installed")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    models = [{"name": n, "ability": 2.0, "ttft_ms": 0, "tokens_per_s": 0, "output_tokens": 10}
              for n in ("gpt-audio", "sim-ear", "gpt-4o")]
    with simulator_of(models, tmp_path_factory.mktemp("sim")) as simulator:
        yield simulator


def _policy(name: str) -> dict[str, Any]:
    return {"candidates": [{"single": name}]}


def _ask(client: openai.OpenAI, model: str, content: list[dict[str, Any]], **more: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, max_tokens=20, messages=[{"role": "user", "content": content}], **more)


@pytest.mark.parametrize("via", ["routed", "pinned"])
@pytest.mark.parametrize("name", ["audio", "ear"])
def test_an_audio_prompt_is_held_at_the_audio_rate_before_any_call(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, via: str) -> None:
    """gpt-audio: the clip's 960 tokens were held at the text rate, ~$0.0026 with the output, and sent on
    a $0.01 budget; at the audio rate they may be billed $0.031. `ear`: $0.001 held, $0.038 at $40/M."""
    model, _, (text_in, audio_in, out) = RATES[name]
    assert (HEARD * text_in + 100 * text_in + 20 * out) < 0.01 < HEARD * audio_in
    target = "router/thrifty" if via == "routed" else name
    with budgeted_gateway(sim, tmp_path, monkeypatch, 0.01, _policy(name), DEPLOYMENTS) as gw:
        with pytest.raises(openai.RateLimitError) as refused:
            _ask(gw.client, target, [TEXT, CLIP])
        assert refused.value.code == "budget_exceeded"
        assert sim.stats()[model]["requests"] == 0
        assert _ask(gw.client, target, [TEXT]).parse().choices[0].message.content  # the words alone fit
    (tmp_path / "capped").mkdir()
    with budgeted_gateway(sim, tmp_path / "capped", monkeypatch, None, _policy(name), DEPLOYMENTS) as gw:
        with pytest.raises(openai.UnprocessableEntityError) as capped:  # a cost cap holds it the same
            _ask(gw.client, target, [TEXT, CLIP], extra_headers={"x-switchyard-max-cost-usd": "0.01"})
        assert capped.value.code == "constraint_unsatisfiable"
        assert sim.stats()[model]["requests"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("name", ["audio", "ear"])
def test_the_audio_tokens_the_usage_reports_are_billed_at_the_audio_rate(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, stream: bool) -> None:
    """300 audio tokens of gpt-audio cost $0.0096; the gateway billed them at the text rate, $0.00075."""
    _, _, (text_in, audio_in, out) = RATES[name]
    with budgeted_gateway(sim, tmp_path, monkeypatch, 10.0, _policy(name), DEPLOYMENTS) as gw:
        if stream:
            chunks = list(gw.client.chat.completions.create(
                model=name, max_tokens=20, messages=[{"role": "user", "content": [TEXT, CLIP]}],  # type: ignore[call-overload]
                stream=True, stream_options={"include_usage": True}))
            last = next(c for c in chunks if c.usage is not None)
            usage, charged = last.usage, (last.model_extra or {})["switchyard"]["cost_usd"]
        else:
            raw = _ask(gw.client, name, [TEXT, CLIP])
            usage, charged = raw.parse().usage, float(raw.headers["x-switchyard-cost-usd"])
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.audio_tokens == BILLED_AUDIO
        billed = ((usage.prompt_tokens - BILLED_AUDIO) * text_in + BILLED_AUDIO * audio_in
                  + usage.completion_tokens * out)
        assert float(charged) == pytest.approx(billed, rel=1e-6)
        assert gw.spent() == pytest.approx(billed, rel=1e-6)


def test_an_audio_prompt_no_audio_rate_covers_is_refused_under_a_budget_or_cap_and_else_sent(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-4o's cost map entry names no audio rate: a budget cannot bound what its audio is billed (an
    audio model's rate is 6-66× its text rate), so the request is a 400, not held at the text rate.
    Without a budget or cap there is nothing to understate: it is sent."""
    with budgeted_gateway(sim, tmp_path, monkeypatch, 10.0, _policy("4o"), DEPLOYMENTS) as gw:
        for target in ("router/thrifty", "4o"):
            with pytest.raises(openai.BadRequestError) as refused:
                _ask(gw.client, target, [TEXT, CLIP])
            assert refused.value.code == "invalid_request" and refused.value.param == "input_audio"
        assert sim.stats()["gpt-4o"]["requests"] == 0
        _ask(gw.client, "4o", [TEXT])  # no audio: priced, sent
        assert sim.stats()["gpt-4o"]["requests"] == 1
    (tmp_path / "open").mkdir()
    with budgeted_gateway(sim, tmp_path / "open", monkeypatch, None, _policy("4o"), DEPLOYMENTS) as gw:
        with pytest.raises(openai.BadRequestError) as capped:
            _ask(gw.client, "4o", [TEXT, CLIP], extra_headers={"x-switchyard-max-cost-usd": "1"})
        assert capped.value.param == "input_audio"
        assert _ask(gw.client, "4o", [TEXT, CLIP]).parse().choices[0].message.content
        assert sim.stats()["gpt-4o"]["requests"] == 1


def test_a_field_sent_unpriced_on_every_request_is_logged_once_a_while_not_once_a_request(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Without a budget or cap the audio is sent to gpt-4o and billed at the text rate, with a warning:
    one a request was a line a client could write into the operator's logs at will."""
    with budgeted_gateway(sim, tmp_path, monkeypatch, None, _policy("4o"), DEPLOYMENTS) as gw, \
            caplog.at_level(logging.WARNING, logger="switchyard.pipeline"):
        for _ in range(12):
            _ask(gw.client, "4o", [TEXT, CLIP])
    lines = [r for r in caplog.records if getattr(r, "event", None) == "unpriced_field"]
    assert len(lines) == 1 and "no known price for `input_audio`" in lines[0].getMessage()


def test_audio_output_no_audio_rate_covers_is_refused_under_a_budget_before_any_call(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-4o's cost map entry names no audio output rate: audio asked of it was held and billed at the
    text output rate. Under a budget it is now a 400 naming `modalities`, as unpriced audio input is."""
    with budgeted_gateway(sim, tmp_path, monkeypatch, 10.0, _policy("4o"), DEPLOYMENTS) as gw:
        with pytest.raises(openai.BadRequestError) as refused:
            gw.client.chat.completions.create(model="4o", messages=[{"role": "user", "content": "Say hi."}],
                                              max_tokens=20, modalities=["text", "audio"],
                                              audio={"voice": "alloy", "format": "wav"})
        assert refused.value.param == "modalities" and "no known price for `modalities`" in refused.value.message
        assert sim.stats().get("gpt-4o", {}).get("requests", 0) == 0
