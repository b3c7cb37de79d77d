"""The simulator over real HTTP, spoken to with the official openai SDK.

The simulator runs as a real subprocess (``--port 0``) on loopback, exactly as
the demo and the benchmarks start it.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gateway.simulator import SimModel, count_tokens, difficulty_of, p_correct, start, truth_of

REPO = Path(__file__).resolve().parents[2]
MODELS_FILE = REPO / "tests" / "fixtures" / "sim_models.yaml"
READY = "switchyard-simulator listening on "
ARITHMETIC = [{"role": "user", "content": "What is 17 + 25?"}]


def _launch(*args: str, stderr_path: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with stderr_path.open("w") as stderr:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.simulator", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=REPO,
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 10)
    line = process.stdout.readline() if ready else ""
    if not line.startswith(READY):
        process.kill()
        process.wait()
        process.stdout.close()
        raise AssertionError(f"simulator did not start: {line!r} {stderr_path.read_text()}")
    return process, line[len(READY) :].strip()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    stderr_path = tmp_path_factory.mktemp("sim") / "stderr.log"
    process, url = _launch("--models", str(MODELS_FILE), "--seed", "7", stderr_path=stderr_path)
    yield url
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=5)
    assert process.stdout is not None
    process.stdout.close()
    assert returncode == 0, stderr_path.read_text()


@pytest.fixture(autouse=True)
def _fresh_stats(base_url: str) -> None:
    _http("POST", base_url.removesuffix("/v1") + "/sim/reset")


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key="sk-anything", max_retries=0, timeout=10) as sdk:
        yield sdk


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _counts(requests: int, errors: int, served: int = 0) -> dict:
    return {"requests": requests, "errors": errors, "served": served, "abandoned": 0, "faults": {}}


def _stats(base_url: str) -> dict:
    return _http("GET", base_url.removesuffix("/v1") + "/sim/stats")[1]


def test_usage_counts_match_the_content(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
    ]
    reply = client.chat.completions.create(model="sim-coin", messages=messages)
    content = reply.choices[0].message.content or ""
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_tokens("You are terse.") + count_tokens("What is the capital of France?")
    assert reply.usage.completion_tokens == count_tokens(content) == 40
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion" and reply.model == "sim-coin"


def test_max_tokens_truncates_and_reports_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="sim-oracle", messages=ARITHMETIC, max_completion_tokens=6)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6
    assert count_tokens(reply.choices[0].message.content or "") == 6


def test_a_strong_model_answers_arithmetic_at_temperature_zero(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="sim-oracle", messages=ARITHMETIC, temperature=0)
    assert (reply.choices[0].message.content or "").startswith("The answer is 42.")


@pytest.mark.parametrize("cut", [5, 16, 37])
def test_a_trailing_assistant_message_is_continued_not_repeated(client: openai.OpenAI, cut: int) -> None:
    whole = client.chat.completions.create(model="sim-oracle", messages=ARITHMETIC, temperature=0)
    text = whole.choices[0].message.content or ""
    partial = text[:cut]
    rest = client.chat.completions.create(model="sim-oracle", temperature=0, messages=[
        *ARITHMETIC, {"role": "assistant", "content": partial}])  # type: ignore[list-item]
    continued = rest.choices[0].message.content or ""
    assert partial + continued == text  # only the rest: the start is not said again
    assert rest.usage is not None and rest.usage.completion_tokens == count_tokens(continued)
    assert rest.usage.prompt_tokens == count_tokens(ARITHMETIC[0]["content"]) + count_tokens(partial)


def test_temperature_zero_is_deterministic(client: openai.OpenAI) -> None:
    prompts = [f"Question {i}\nA. yes\nB. no\nC. maybe" for i in range(8)]
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        answers = {
            client.chat.completions.create(model="sim-coin", messages=messages, temperature=0, n=2)
            .choices[i]
            .message.content
            for i in range(2)
        }
        again = client.chat.completions.create(model="sim-coin", messages=messages, temperature=0)
        assert answers == {again.choices[0].message.content}


def test_n_returns_independent_choices_at_positive_temperature(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Prove it step by step.\nA. one\nB. two\nC. three\nD. four"}]
    reply = client.chat.completions.create(model="sim-coin", messages=messages, n=24, temperature=1.0)
    assert [c.index for c in reply.choices] == list(range(24))
    letters = {(c.message.content or "")[len("The answer is ") :][:1] for c in reply.choices}
    assert len(letters) > 1 and letters <= set("ABCD")
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sum(count_tokens(c.message.content or "") for c in reply.choices)


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Derive the answer.\nA. one\nB. two\nC. three"}]
    first, second = (
        [
            c.message.content
            for c in client.chat.completions.create(
                model="sim-coin", messages=messages, n=10, temperature=0.8, seed=1234
            ).choices
        ]
        for _ in range(2)
    )
    assert first == second


def test_logprobs_give_the_models_confidence(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="sim-coin", messages=ARITHMETIC, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entry = choice.logprobs.content[0]
    p = p_correct(0.0, difficulty_of(ARITHMETIC[0]["content"]))
    expected = p if entry.token == "42" else (1 - p) / 4
    assert math.isclose(math.exp(entry.logprob), expected, rel_tol=1e-9)
    assert f"The answer is {entry.token}." in (choice.message.content or "")
    assert entry.top_logprobs[0].token == "42"


def test_streaming_sends_role_content_finish_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="sim-coin",
        messages=ARITHMETIC,
        stream=True,
        stream_options={"include_usage": True},
        n=2,
    )
    chunks = list(stream)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    content_chunks = chunks[:-1]
    assert all(c.usage is None for c in content_chunks)
    assert {c.id for c in chunks} == {chunks[0].id}
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in content_chunks:
        (choice,) = chunk.choices
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert finishes == {0: "stop", 1: "stop"}
    assert usage_chunk.usage.completion_tokens == sum(count_tokens(t) for t in texts.values()) == 80
    assert usage_chunk.usage.prompt_tokens == count_tokens("What is 17 + 25?")


@pytest.mark.asyncio
async def test_async_streaming_paces_chunks_of_a_few_tokens(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(model="sim-coin", messages=ARITHMETIC, stream=True)
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 10
    assert all(count_tokens(p) <= 4 for p in pieces)
    assert "".join(pieces).startswith("The answer is ")


@pytest.mark.asyncio
async def test_async_client_gets_plain_completions(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        reply = await sdk.chat.completions.create(model="sim-oracle", messages=ARITHMETIC, temperature=0)
    assert (reply.choices[0].message.content or "").startswith("The answer is 42.")


def test_latency_follows_ttft_and_token_rate(client: openai.OpenAI) -> None:
    started = time.perf_counter()
    client.chat.completions.create(model="sim-slow", messages=ARITHMETIC)
    assert time.perf_counter() - started >= 0.150 + 20 / 1000


def test_streams_wait_ttft_before_the_first_token(client: openai.OpenAI) -> None:
    started = time.perf_counter()
    with client.chat.completions.create(model="sim-slow", messages=ARITHMETIC, stream=True) as stream:
        first = next(c for c in stream if c.choices and c.choices[0].delta.content)
        waited = time.perf_counter() - started
        rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert waited >= 0.150
    assert count_tokens((first.choices[0].delta.content or "") + rest) == 20


def test_fails_first_then_succeeds(client: openai.OpenAI, base_url: str) -> None:
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="sim-flaky", messages=ARITHMETIC)
    reply = client.chat.completions.create(model="sim-flaky", messages=ARITHMETIC)
    assert reply.choices[0].message.content
    assert _stats(base_url)["sim-flaky"] == _counts(3, 2, served=1)


def test_error_rate_one_returns_the_status_with_an_openai_error_body(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as server_error:
        client.chat.completions.create(model="sim-broken", messages=ARITHMETIC)
    assert server_error.value.status_code == 500
    assert set(server_error.value.response.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.RateLimitError) as throttled:
        client.chat.completions.create(model="sim-throttled", messages=ARITHMETIC)
    assert throttled.value.response.headers["retry-after"] == "0"
    assert throttled.value.response.json()["error"]["code"] == "rate_limit_exceeded"


def test_unknown_model_is_404_with_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-nonexistent", messages=ARITHMETIC)
    assert missing.value.code == "model_not_found"
    assert missing.value.param == "model"


def test_bad_json_and_bad_fields_are_400(base_url: str) -> None:
    status, body = _http("POST", base_url + "/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    bad_n = json.dumps({"model": "sim-coin", "messages": ARITHMETIC, "n": 0}).encode()
    status, body = _http("POST", base_url + "/chat/completions", bad_n)
    assert status == 400 and body["error"]["param"] == "n"


@pytest.mark.parametrize("function", ["add", 5, None, ["add"]])
def test_a_named_tool_choice_without_a_function_object_is_a_400(client: openai.OpenAI, function: object) -> None:
    """`tool_choice: {"type": "function", "function": "add"}` was a 500 (the simulator read `function` as an
    object): in front of the gateway, an upstream failure it retried and counted against the deployment's
    circuit, where a provider refuses the request."""
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="sim-oracle", messages=ARITHMETIC, tools=tools,  # type: ignore[arg-type]
                                       tool_choice={"type": "function", "function": function})  # type: ignore[typeddict-item]
    assert refused.value.param == "tool_choice"


def test_stats_count_requests_and_errors_per_model(client: openai.OpenAI, base_url: str) -> None:
    client.chat.completions.create(model="sim-oracle", messages=ARITHMETIC)
    client.chat.completions.create(model="sim-oracle", messages=ARITHMETIC, stream=True).close()
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="sim-broken", messages=ARITHMETIC)
    stats = _stats(base_url)
    oracle = stats["sim-oracle"]
    # The stream was closed at once: its first chunk went out, or found the client gone.
    assert (oracle["requests"], oracle["errors"], oracle["served"] + oracle["abandoned"]) == (2, 0, 2)
    assert stats["sim-broken"] == _counts(1, 1)
    assert _http("POST", base_url.removesuffix("/v1") + "/sim/reset")[0] == 200
    assert _stats(base_url)["sim-oracle"] == _counts(0, 0)


def test_models_and_health_endpoints(client: openai.OpenAI, base_url: str) -> None:
    names = [m.id for m in client.models.list()]
    assert names == ["sim-oracle", "sim-coin", "sim-slow", "sim-flaky", "sim-broken", "sim-throttled"]
    assert _http("GET", base_url.removesuffix("/v1") + "/healthz") == (200, {"status": "ok"})


def test_invalid_model_file_exits_with_the_culprit(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: a, ability: 1, speed: 3}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.simulator", "--port", "0", "--models", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
    )
    assert result.returncode == 2
    assert "bad.yaml: models[0].speed" in result.stderr


@pytest.mark.asyncio
async def test_start_runs_in_process_and_closes() -> None:
    model = SimModel("inproc", ability=12.0, ttft_ms=0, tokens_per_s=0, output_tokens=10)
    async with await start([model], "127.0.0.1", 0, seed=1) as simulator:
        assert simulator.url.startswith("http://127.0.0.1:") and simulator.url.endswith("/v1")
        async with openai.AsyncOpenAI(base_url=simulator.url, api_key="x", max_retries=0) as sdk:
            reply = await sdk.chat.completions.create(
                model="inproc", messages=[{"role": "user", "content": "calculate 6 * 7"}], temperature=0
            )
    assert (reply.choices[0].message.content or "").startswith(f"The answer is {truth_of('calculate 6 * 7').answer}.")
