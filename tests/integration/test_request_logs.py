"""Request logs of the real server: `switchyard serve --log-format json` writes one JSON object per
line, a `switchyard.request` line for every chat request (answers, errors, streams), and structured
lines for upstream failures, retries, circuit transitions, budget and rate refusals and policy
reloads; never an API key, and the prompt only for a tenant with `log_prompts: true`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.support.jsonl import whole_records
from tests.support.processes import ROOT, Simulator, free_port, terminate, wait_until

KEYS = {"SY_LOGS_KEY_PLAIN": "sk-logs-plain-6d1f", "SY_LOGS_KEY_PROMPTS": "sk-logs-prompts-88a0",
        "SY_LOGS_KEY_RATE": "sk-logs-rate-0c3b"}
SECRET_PROMPT = "What is the capital of the hidden kingdom of Zyxwv?"
SHARED_PROMPT = "Name a primary colour."


def _dep(sim_url: str, name: str, model: str, tier: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "model": f"openai/{model}", "api_base": sim_url, "tier": tier,
            "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}, **kw}


@dataclass
class Served:
    url: str
    log_file: Path
    policies: Path
    process: subprocess.Popen[bytes]

    def lines(self) -> list[dict[str, Any]]:
        """Every line the server has ended so far, each parsed as JSON (a line that is not JSON fails the test)."""
        return whole_records(self.log_file)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    def client(self, key_env: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEYS[key_env], max_retries=0)


@pytest.fixture(scope="module")
def served(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("logs")
    policies = folder / "policies"
    policies.mkdir()
    for f in (ROOT / "routing_policies").glob("*.yaml"):
        shutil.copy(f, policies / f.name)
    (policies / "mine.yaml").write_text("candidates:\n  - single: small\n")
    config = {
        "deployments": [
            _dep(simulator.url, "small", "sim-small", "small", router_profile="Meta-Llama-3.1-8B-Instruct"),
            _dep(simulator.url, "large", "sim-large", "large", router_profile="Meta-Llama-3.1-70B-Instruct"),
            _dep(simulator.url, "broken", "sim-broken", "lab", max_retries=1),
            _dep(simulator.url, "streamy", "sim-streamy", "lab"),
            _dep(simulator.url, "slow", "sim-slow", "lab", max_retries=0),
        ],
        "policies_dir": str(policies),
        "tenants": [
            {"name": "plain", "api_key_env": "SY_LOGS_KEY_PLAIN"},
            {"name": "talkative", "api_key_env": "SY_LOGS_KEY_PROMPTS", "log_prompts": True},
            {"name": "limited", "api_key_env": "SY_LOGS_KEY_RATE", "requests_per_minute": 2},
        ],
    }
    config_file = folder / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log_file = folder / "server.log"
    port = free_port()
    with log_file.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_file), "--port", str(port),
             "--log-format", "json", "--log-level", "info"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **KEYS}, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200, timeout_s=60,
                   what="gateway")
        yield Served(url, log_file, policies, process)
    finally:
        terminate(process)


def _request_line(served: Served, request_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((x for x in served.events("request") if x["request_id"] == request_id), None)
    wait_until(lambda: found() is not None, timeout_s=5, what=f"the log line of {request_id}")
    line = found()
    assert line is not None
    return line


def test_every_line_of_the_json_log_is_a_json_object_with_time_level_and_logger(served: Served) -> None:
    served.client("SY_LOGS_KEY_PLAIN").chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hello"}])
    lines = served.lines()
    assert lines, "the server logged nothing"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines), "the server's own lines are JSON too"


def test_an_answered_request_leaves_one_line_with_its_account(served: Served) -> None:
    raw = served.client("SY_LOGS_KEY_PLAIN").chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is 17 + 25?"}], temperature=0)
    reply = raw.parse()
    rid = raw.headers["x-request-id"]
    line = _request_line(served, rid)
    assert [x["request_id"] for x in served.events("request")].count(rid) == 1
    assert line["logger"] == "switchyard.request" and line["level"] == "INFO"
    assert line["tenant"] == "plain" and line["policy"] == "balanced" and line["status"] == 200
    assert line["plan"] == raw.headers["x-switchyard-plan"]
    assert line["deployment"] == raw.headers["x-switchyard-model"]
    assert line["cache"] == raw.headers["x-switchyard-cache"]
    assert line["cost_usd"] == pytest.approx(float(raw.headers["x-switchyard-cost-usd"]), abs=1e-12)
    assert reply.usage is not None
    assert (line["input_tokens"], line["output_tokens"]) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert 0 <= line["overhead_ms"] <= line["duration_ms"]
    assert line["upstream_ms"] > 0 and line["stream"] is False
    assert "trace_id" in line and line["policy_version"] and line["router_version"]
    assert "error_code" not in line


def test_a_streamed_request_is_logged_when_the_stream_ends(served: Served) -> None:
    client = served.client("SY_LOGS_KEY_PLAIN")
    with client.chat.completions.with_streaming_response.create(
            model="streamy", messages=[{"role": "user", "content": "Tell me a long story."}], stream=True,
            stream_options={"include_usage": True}) as response:
        rid = response.headers["x-request-id"]
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    usage = next(c for c in chunks if c.get("usage"))
    line = _request_line(served, rid)
    assert line["stream"] is True and line["status"] == 200 and line["deployment"] == "streamy"
    assert line["policy"] == "pinned" and line["output_tokens"] == usage["usage"]["completion_tokens"]
    assert line["cost_usd"] == pytest.approx(usage["switchyard"]["cost_usd"], abs=1e-12)


def test_a_request_asked_for_as_a_stream_is_logged_as_one_however_it_was_answered(served: Served) -> None:
    client = served.client("SY_LOGS_KEY_PLAIN")
    ask = {"model": "auto", "messages": [{"role": "user", "content": f"Name a prime {time.time_ns()}."}],
           "temperature": 0, "stream": True}
    served_as: list[tuple[str, str]] = []
    for _ in range(2):  # relayed live, then from the cache
        with client.chat.completions.with_streaming_response.create(**ask) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            list(response.iter_lines())
            served_as.append((response.headers["x-request-id"], response.headers["x-switchyard-cache"]))
    assert [cache for _, cache in served_as] == ["miss", "hit"]
    rid = f"req-stream-fail-{time.time_ns()}"
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}], stream=True,
                                       extra_headers={"x-request-id": rid})
    for request_id in [r for r, _ in served_as] + [rid]:
        assert _request_line(served, request_id)["stream"] is True, request_id


def test_a_failed_request_is_logged_with_its_status_and_error_code_and_each_upstream_failure(served: Served) -> None:
    client = served.client("SY_LOGS_KEY_PLAIN")
    rid = f"req-fail-{time.time_ns()}"
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-request-id": rid})
    assert failed.value.status_code == 502
    line = _request_line(served, rid)
    assert line["status"] == 502 and line["error_code"] == "upstream_failed" and line["level"] == "INFO"
    # the plan that failed, as its metric's plan_kind says (no deployment answered)
    assert (line["plan"], line["deployment"]) == ("single:broken", "none")
    failures = [x for x in served.events("upstream_failure") if x["deployment"] == "broken"]
    retries = [x for x in served.events("upstream_retry") if x["deployment"] == "broken"]
    assert len(failures) >= 2 and failures[0]["error_type"] == "500" and failures[0]["status"] == 500
    assert retries and retries[0]["retry"] == 1 and retries[0]["wait_s"] >= 0
    assert all(x["logger"] == "switchyard.upstream" for x in failures + retries)


def test_a_failed_request_counts_its_wait_on_upstreams_as_upstream_time_not_overhead(served: Served) -> None:
    rid = f"req-late-{time.time_ns()}"
    with pytest.raises(openai.APIStatusError) as failed:  # sim-slow's first token comes after 3 s
        served.client("SY_LOGS_KEY_PLAIN").chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": rid, "x-switchyard-timeout-ms": "800"})
    assert failed.value.status_code == 504
    line = _request_line(served, rid)
    assert line["duration_ms"] >= 790
    # the 800 ms went waiting on the deployment: overhead_ms (and the overhead histogram) is what the gateway added
    assert line["upstream_ms"] >= 790 and line["overhead_ms"] < 400


def test_a_request_refused_before_routing_is_logged_too(served: Served) -> None:
    rid = f"req-404-{time.time_ns()}"
    response = httpx.post(served.url + "/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {KEYS['SY_LOGS_KEY_PLAIN']}", "x-request-id": rid},
                          json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404
    line = _request_line(served, rid)
    assert (line["status"], line["error_code"], line["tenant"]) == (404, "model_not_found", "plain")
    version = line["router_version"]
    assert version.startswith("default@")
    bad = httpx.post(served.url + "/v1/chat/completions", timeout=10, content=b"{not json",
                     headers={"authorization": f"Bearer {KEYS['SY_LOGS_KEY_PLAIN']}", "x-request-id": rid + "-bad"})
    assert bad.status_code == 400
    assert _request_line(served, rid + "-bad")["error_code"] == "invalid_json"
    # without a key the body is never read: a 401, logged as one
    keyless = httpx.post(served.url + "/v1/chat/completions", timeout=10, headers={"x-request-id": rid + "-nokey"},
                         content=b"{not json")
    assert keyless.status_code == 401
    nokey = _request_line(served, rid + "-nokey")
    assert nokey["status"] == 401 and nokey["router_version"] == version  # it was ""


def test_a_circuit_opening_is_logged(served: Served) -> None:
    client = served.client("SY_LOGS_KEY_PLAIN")
    for _ in range(4):  # 2 failed attempts each: the circuit opens after 5
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    wait_until(lambda: served.events("circuit"), timeout_s=5, what="a circuit line")
    opened = served.events("circuit")[0]
    assert opened["deployment"] == "broken" and opened["state"] == "open" and opened["was"] == "closed"
    assert opened["logger"] == "switchyard.circuit" and opened["level"] == "WARNING"


def test_a_rate_refusal_is_logged(served: Served) -> None:
    client = served.client("SY_LOGS_KEY_RATE")
    statuses = []
    for _ in range(3):
        try:
            client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            statuses.append(200)
        except openai.RateLimitError:
            statuses.append(429)
    assert 429 in statuses
    wait_until(lambda: served.events("rate_refused"), timeout_s=5, what="a rate refusal line")
    refusal = served.events("rate_refused")[0]
    assert refusal["tenant"] == "limited" and refusal["requests_per_minute"] == 2
    def refused() -> list[dict[str, Any]]:  # request lines are written in batches, within LOG_FLUSH_S
        return [x for x in served.events("request") if x["tenant"] == "limited" and x["status"] == 429]
    wait_until(lambda: refused(), timeout_s=5, what="the refused request's line")
    assert refused()[0]["error_code"] == "rate_limit_exceeded"


def test_a_policy_reload_is_logged_with_its_version(served: Served) -> None:
    path = served.policies / "mine.yaml"
    path.write_text("description: edited\ncandidates:\n  - single: large\n")
    new_mtime = time.time() + 5  # a different mtime even on coarse file systems
    os.utime(path, (new_mtime, new_mtime))
    wait_until(lambda: served.events("policy_reload"), timeout_s=10, what="a policy reload line")
    reload = served.events("policy_reload")[0]
    assert reload["policy"] == "mine" and reload["file"] == "mine.yaml" and len(reload["version"]) == 12


def test_a_policy_file_that_is_not_utf8_is_rejected_and_the_other_files_still_reload(served: Served) -> None:
    """A file saved in another encoding was a UnicodeDecodeError the reloader did not catch: a traceback
    every second, and no file after it in the folder was ever reloaded or added."""
    (served.policies / "a-cp1252.yaml").write_bytes("# caf\u00e9\ncandidates: [{single: small}]\n".encode("cp1252"))
    (served.policies / "zz-added.yaml").write_text("candidates:\n  - single: large\n")
    wait_until(lambda: [e for e in served.events("policy_reload") if e["policy"] == "zz-added"], timeout_s=10,
               what="the file after the bad one reloaded")
    rejected = [e for e in served.events("policy_rejected") if e["policy"] == "a-cp1252"]
    assert rejected and "a-cp1252.yaml: not UTF-8 text" in rejected[0]["error"]
    answer = served.client("SY_LOGS_KEY_PLAIN").chat.completions.create(
        model="router/zz-added", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    assert "Traceback" not in served.log_file.read_text()


def test_the_prompt_is_logged_only_for_a_tenant_with_log_prompts_and_no_key_ever(served: Served) -> None:
    quiet = served.client("SY_LOGS_KEY_PLAIN").chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SECRET_PROMPT}])
    told = served.client("SY_LOGS_KEY_PROMPTS").chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SHARED_PROMPT}])
    assert "prompt" not in _request_line(served, quiet.headers["x-request-id"])
    assert _request_line(served, told.headers["x-request-id"])["prompt"] == SHARED_PROMPT
    text = served.log_file.read_text()
    assert SECRET_PROMPT not in text
    assert not any(key in text for key in KEYS.values())
