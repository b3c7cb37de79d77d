"""Fault injection in the simulated models: every fault kind as an HTTP client meets it, set by the
control endpoint or the model file, and the per-model counts a soak compares billing against."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.simulator import SimConfigError, SimModel, load_models, start

ASK = {"model": "sim-a", "messages": [{"role": "user", "content": "What is 17 + 25?"}]}


@pytest.fixture
async def sim() -> AsyncIterator[httpx.AsyncClient]:
    models = [SimModel("sim-a", ability=2.0, ttft_ms=0, tokens_per_s=0, output_tokens=30),
              SimModel("sim-b", ability=2.0, ttft_ms=0, tokens_per_s=0, output_tokens=30)]
    async with await start(models) as running, httpx.AsyncClient(
            base_url=running.url.removesuffix("/v1"), timeout=5) as client:
        yield client


async def _fault(client: httpx.AsyncClient, *faults: dict[str, Any], model: str = "sim-a") -> None:
    response = await client.post("/_sim/faults", json={"model": model, "faults": list(faults)})
    assert response.status_code == 200, response.text


async def _stats(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/_sim/stats")).json()


async def _stream_lines(client: httpx.AsyncClient, body: dict[str, Any]) -> list[bytes]:
    lines = []
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True,
                                                                    "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        try:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    lines.append(line[6:].encode())
        except httpx.RemoteProtocolError:
            pass  # the connection dropped: what arrived is what the test looks at
    return lines


async def test_http_500_and_429_with_retry_after(sim: httpx.AsyncClient) -> None:
    await _fault(sim, {"kind": "http_500", "rate": 1})
    assert (await sim.post("/v1/chat/completions", json=ASK)).status_code == 500
    await _fault(sim, {"kind": "http_429", "rate": 1, "retry_after_s": 3})
    limited = await sim.post("/v1/chat/completions", json=ASK)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    stats = (await _stats(sim))["sim-a"]
    assert stats["faults"] == {"http_500": 1, "http_429": 1}
    assert stats["errors"] == 2 and stats["served"] == 0


async def test_refused_and_hung_requests_get_no_response(sim: httpx.AsyncClient) -> None:
    await _fault(sim, {"kind": "refuse", "rate": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        await sim.post("/v1/chat/completions", json=ASK)
    await _fault(sim, {"kind": "hang", "rate": 1, "delay_ms": 2000})
    with pytest.raises(httpx.ReadTimeout):
        await sim.post("/v1/chat/completions", json=ASK, timeout=0.3)
    assert (await _stats(sim))["sim-a"]["served"] == 0


async def test_slow_fault_adds_its_delay_before_the_answer(sim: httpx.AsyncClient) -> None:
    await _fault(sim, {"kind": "slow", "rate": 1, "delay_ms": 300})
    started = time.perf_counter()
    assert (await sim.post("/v1/chat/completions", json=ASK)).status_code == 200
    assert time.perf_counter() - started >= 0.3
    assert (await _stats(sim))["sim-a"]["served"] == 1


async def test_dropped_stream_stops_half_way_without_finish_or_done(sim: httpx.AsyncClient) -> None:
    await _fault(sim, {"kind": "drop_stream", "rate": 1})
    lines = await _stream_lines(sim, ASK)
    assert b"[DONE]" not in lines
    chunks = [orjson.loads(line) for line in lines]
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks)
    assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    assert (await _stats(sim))["sim-a"]["served"] == 1  # tokens went out: a provider bills this


async def test_malformed_answers_are_not_json_whole_or_streamed(sim: httpx.AsyncClient) -> None:
    await _fault(sim, {"kind": "malformed", "rate": 1})
    whole = await sim.post("/v1/chat/completions", json=ASK)
    assert whole.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(whole.content)
    lines = await _stream_lines(sim, ASK)
    with pytest.raises(orjson.JSONDecodeError):
        [orjson.loads(line) for line in lines]


async def test_no_usage_fault_leaves_usage_out_whole_and_streamed(sim: httpx.AsyncClient) -> None:
    await _fault(sim, {"kind": "no_usage", "rate": 1})
    whole = (await sim.post("/v1/chat/completions", json=ASK)).json()
    assert whole["choices"][0]["message"]["content"] and "usage" not in whole
    lines = await _stream_lines(sim, ASK)
    assert lines[-1] == b"[DONE]"
    assert not any(orjson.loads(line).get("usage") for line in lines[:-1])


async def test_faults_hit_their_share_of_one_model_only(sim: httpx.AsyncClient) -> None:
    await _fault(sim, {"kind": "http_500", "rate": 0.2})
    statuses = [(await sim.post("/v1/chat/completions", json=ASK)).status_code for _ in range(300)]
    other = [(await sim.post("/v1/chat/completions", json={**ASK, "model": "sim-b"})).status_code
             for _ in range(50)]
    assert 0.12 < statuses.count(500) / 300 < 0.28
    assert set(other) == {200}
    stats = await _stats(sim)
    assert stats["sim-a"]["served"] == statuses.count(200) and stats["sim-b"]["served"] == 50
    await _fault(sim)  # cleared
    assert (await sim.get("/_sim/faults")).json()["sim-a"] == []


async def test_bad_fault_settings_are_rejected(sim: httpx.AsyncClient) -> None:
    too_much = {"model": "sim-a", "faults": [{"kind": "http_500", "rate": 0.7}, {"kind": "hang", "rate": 0.7}]}
    assert (await sim.post("/_sim/faults", json=too_much)).status_code == 400
    unknown = {"model": "sim-a", "faults": [{"kind": "gremlins", "rate": 0.1}]}
    assert (await sim.post("/_sim/faults", json=unknown)).status_code == 400
    nobody = {"model": "sim-z", "faults": []}
    assert (await sim.post("/_sim/faults", json=nobody)).status_code == 404


def test_faults_load_from_the_model_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  - {name: m, ability: 1, faults: [{kind: slow, rate: 0.05, delay_ms: 1500}]}\n")
    (model,) = load_models(good)
    assert model.faults[0].kind == "slow" and model.faults[0].delay_s == 1.5
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: m, ability: 1, faults: [{kind: slow, rate: 0.6}, {kind: hang, rate: 0.6}]}\n")
    with pytest.raises(SimConfigError, match="faults"):
        load_models(bad)
