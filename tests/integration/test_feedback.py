"""Request records, `POST /v1/feedback`, shadow evaluation and `switchyard logs export`, over real HTTP.

Every test runs against a gateway on Redis and one on the in-memory store.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis
import yaml

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.config import GatewayConfig, parse_config
from gateway.messages import count_messages
from gateway.pipeline import Services
from gateway.router.training.data import load_data
from gateway.state import RedisStore, request_key
from tests.integration.conftest import sim_config
from tests.support.jsonl import whole_records
from tests.support.lab import policies_folder
from tests.support.processes import ROOT, RedisServer, Simulator, running_gateway

TENANTS = [
    {"name": "alice", "api_key_sha256": hash_key("sk-alice"), "log_prompts": True},
    {"name": "bob", "api_key_sha256": hash_key("sk-bob")},
]
POLICIES = {
    "shadowed": {"candidates": [{"single": "small"}], "cache": {"enabled": False},
                 "shadow": {"rate": 1.0, "against": "large", "judge": "large"}},
    "shadow-fails": {"candidates": [{"single": "small"}], "cache": {"enabled": False},
                     "shadow": {"rate": 1.0, "against": "pricey-broken"}},
    "judge-fails": {"candidates": [{"single": "wordy"}], "cache": {"enabled": False},
                    "shadow": {"rate": 1.0, "against": "large", "judge": "broken"}},
    "uncached": {"candidates": [{"single": "small"}], "cache": {"enabled": False}},
    # several calls per request: three samples of small, then large unless all three agree
    "escalating": {"candidates": [{"cascade": {"steps": ["small", "large"], "confidence": "agreement",
                                               "samples": 3, "threshold": 1.0}}], "cache": {"enabled": False}},
    # small, then always large: no answer's mean token probability reaches 1
    "always-escalating": {"candidates": [{"cascade": {"steps": ["small", "large"], "confidence": "logprob",
                                                      "threshold": 1.0}}], "cache": {"enabled": False}},
}
SUM = [{"role": "user", "content": "What is 17 + 25?"}]


@dataclass
class Gateway:
    url: str
    kind: str
    sink: Path
    config_file: Path
    services: Services
    redis_url: str | None

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def ask(self, key: str, model: str = "router/uncached", messages: list[dict[str, str]] | None = None,
            **kw: Any) -> tuple[str, Any]:
        raw = self.client(key).chat.completions.with_raw_response.create(model=model, messages=messages or SUM, **kw)
        return raw.headers["x-request-id"], raw.parse()

    def feedback(self, key: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.url + "/v1/feedback", json=body, headers={"authorization": f"Bearer {key}"},
                          timeout=10)

    def sink_lines(self) -> list[dict[str, Any]]:
        return whole_records(self.sink)


def _config(simulator: Simulator, redis_url: str | None, sink: Path) -> GatewayConfig:
    raw = sim_config(simulator.url, redis_url, tenants=TENANTS,
                     request_log={"path": str(sink)}).model_dump(exclude_defaults=True)
    price = {"input_per_mtok": 5.0, "output_per_mtok": 10.0}
    raw["deployments"] += [
        {"name": "pricey-broken", "model": "openai/sim-broken", "api_base": simulator.url, "tier": "lab",
         "price": price, "max_retries": 0},
        {"name": "wordy", "model": "openai/sim-wordy", "api_base": simulator.url, "tier": "lab",
         "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}},
    ]
    return parse_config(raw, "test config")


@pytest.fixture(scope="module", params=["redis", "memory"])
def gw(request: pytest.FixtureRequest, simulator: Simulator, redis_server: RedisServer,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp(f"feedback-{request.param}")
    policies = policies_folder(folder, POLICIES)
    redis_url = redis_server.url if request.param == "redis" else None
    config = _config(simulator, redis_url, folder / "requests.jsonl")
    config_file = folder / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    app = create_app(config, policies_dir=policies)
    with running_gateway(app) as server:
        yield Gateway(server.base_url, request.param, folder / "requests.jsonl", config_file,
                      app.state.services, redis_url)


def _wait_for(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _judge_label(gw: Gateway, rid: str) -> dict[str, Any] | None:
    return next((x for x in gw.sink_lines() if x.get("kind") == "feedback" and x["request_id"] == rid
                 and x["source"] == "judge" and x.get("origin") != "client"), None)


def test_feedback_round_trip_stores_the_label_with_the_request(gw: Gateway) -> None:
    rid, _ = gw.ask("sk-alice")
    resp = gw.feedback("sk-alice", {"request_id": rid, "thumbs": "up"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["request_id"] == rid and body["source"] == "user" and body["score"] == 1.0
    assert body["thumbs"] == "up" and body["replaced"] is False
    if gw.redis_url:  # stored in the request's hash, beside its record, which expires
        client = redis.Redis.from_url(gw.redis_url)
        fields = client.hgetall(request_key("alice", rid))
        assert orjson.loads(fields[b"fb:user"])["score"] == 1.0
        assert orjson.loads(fields[b"record"])["request_id"] == rid
        assert 0 < client.ttl(request_key("alice", rid)) <= 7 * 24 * 3600
        assert any(orjson.loads(f[b"r"])["request_id"] == rid for _, f in client.xrevrange("sy:requests", count=50))


def test_request_record_carries_the_routing_facts_and_the_prompt_only_when_allowed(gw: Gateway) -> None:
    rid_a, _ = gw.ask("sk-alice", model="router/balanced")
    rid_b, _ = gw.ask("sk-bob", model="router/balanced")
    records = _wait_for(lambda: {x["request_id"]: x for x in gw.sink_lines()
                                 if x.get("kind") == "request" and x["request_id"] in (rid_a, rid_b)}
                        if len([x for x in gw.sink_lines() if x.get("request_id") in (rid_a, rid_b)]) >= 2 else None)
    a, b = records[rid_a], records[rid_b]
    assert a["tenant"] == "alice" and a["policy"] == "balanced" and a["entry"] == "router/balanced"
    assert a["plan"].startswith("single:") and a["deployment"] in ("small", "large")
    assert a["router_version"] and set(a["predicted"]) >= {"small", "large"}
    assert a["cost_usd"] > 0 and a["prompt_tokens"] > 0 and a["completion_tokens"] > 0
    assert a["prompt"] == "What is 17 + 25?" and "prompt_hmac" not in a
    assert "prompt" not in b and len(b["prompt_hmac"]) == 64


def _record(gw: Gateway, rid: str) -> dict[str, Any]:
    return _wait_for(lambda: next((x for x in gw.sink_lines()
                                   if x.get("kind") == "request" and x["request_id"] == rid), None))


def test_a_records_tokens_are_what_its_calls_were_billed_and_its_estimate_says_it_is_one(gw: Gateway) -> None:
    """The record's prompt_tokens, completion_tokens and cost_usd are billed, summed over every call
    (as the answer's usage and the ledger sum them); the router's own count of the prompt (tiktoken,
    one call's) is beside them as prompt_tokens_estimate. The simulated models count tokens their own
    way, so the two differ here, as a provider's count may differ from the gateway's."""
    rid, answer = gw.ask("sk-alice", model="router/escalating", temperature=0.9)
    record = _record(gw, rid)
    assert record["plan"].startswith("cascade:")
    assert (record["prompt_tokens"], record["completion_tokens"]) == \
        (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert record["prompt_tokens_estimate"] == count_messages(SUM) != record["prompt_tokens"]

    def spent() -> dict[str, Any] | None:
        rows = httpx.get(gw.url + "/v1/spend", params={"group_by": "policy"}, timeout=10,
                         headers={"authorization": "Bearer sk-alice"}).json()["data"]
        return next((r for r in rows if r["policy"] == "escalating"), None)
    row = _wait_for(spent)
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == \
        (1, record["prompt_tokens"], record["completion_tokens"])
    assert row["cost_usd"] == pytest.approx(record["cost_usd"])

    rid, answer = gw.ask("sk-alice", model="small")  # pinned: not counted by the gateway, no estimate
    record = _record(gw, rid)
    assert record["prompt_tokens"] == answer.usage.prompt_tokens and "prompt_tokens_estimate" not in record


def test_streamed_requests_are_recorded_and_take_feedback(gw: Gateway) -> None:
    raw = gw.client("sk-alice").chat.completions.with_raw_response.create(
        model="router/uncached", messages=SUM, stream=True)
    rid = raw.headers["x-request-id"]
    assert [c for c in raw.parse()]  # read the whole stream
    resp = gw.feedback("sk-alice", {"request_id": rid, "score": 0.25, "source": "eval"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["score"] == 0.25


def test_client_request_id_is_the_feedback_key(gw: Gateway) -> None:
    rid = f"client-chosen-{gw.kind}-{time.time_ns()}"
    got, _ = gw.ask("sk-alice", extra_headers={"x-request-id": rid})
    assert got == rid
    assert gw.feedback("sk-alice", {"request_id": rid, "score": 1}).status_code == 200


def test_a_reused_request_id_labels_its_latest_request_only(gw: Gateway) -> None:
    rid = f"reused-{gw.kind}-{time.time_ns()}"
    gw.ask("sk-alice", extra_headers={"x-request-id": rid})
    assert gw.feedback("sk-alice", {"request_id": rid, "thumbs": "down"}).json()["replaced"] is False
    gw.ask("sk-alice", extra_headers={"x-request-id": rid})
    _wait_for(lambda: len([x for x in gw.sink_lines() if x.get("kind") == "request" and x["request_id"] == rid]) == 2)
    # the new record does not inherit the earlier request's label
    assert gw.feedback("sk-alice", {"request_id": rid, "thumbs": "up"}).json()["replaced"] is False


def test_feedback_on_another_tenants_request_is_404_like_an_unknown_one(gw: Gateway) -> None:
    rid, _ = gw.ask("sk-alice")
    theirs = gw.feedback("sk-bob", {"request_id": rid, "thumbs": "down"})
    unknown = gw.feedback("sk-bob", {"request_id": "req_does_not_exist", "thumbs": "down"})
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.content == unknown.content  # nothing tells the two apart
    assert theirs.json()["error"]["code"] == "request_not_found"
    # and alice's own label was not touched
    assert gw.feedback("sk-alice", {"request_id": rid, "thumbs": "up"}).json()["replaced"] is False


def test_feedback_needs_a_key(gw: Gateway) -> None:
    resp = httpx.post(gw.url + "/v1/feedback", json={"request_id": "x", "score": 1}, timeout=10)
    assert resp.status_code == 401


@pytest.mark.parametrize("body", [
    {"score": 1.5}, {"score": -0.1}, {"score": "0.5"}, {"thumbs": "sideways"}, {"score": 1, "thumbs": "up"}, {},
    {"score": 1, "source": "oracle"}, {"score": 1, "extra": True},
])
def test_score_outside_zero_to_one_or_a_malformed_label_is_400(gw: Gateway, body: dict[str, Any]) -> None:
    rid, _ = gw.ask("sk-alice")
    resp = gw.feedback("sk-alice", {"request_id": rid, **body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    if body == {"score": 1.5}:
        assert resp.json()["error"]["param"] == "score"


def test_feedback_is_idempotent_per_request_and_source(gw: Gateway) -> None:
    rid, _ = gw.ask("sk-alice")
    first = gw.feedback("sk-alice", {"request_id": rid, "score": 0.2})
    again = gw.feedback("sk-alice", {"request_id": rid, "score": 0.9})
    other = gw.feedback("sk-alice", {"request_id": rid, "score": 0.5, "source": "eval"})
    assert first.status_code == again.status_code == other.status_code == 200
    assert first.json()["replaced"] is False and again.json()["replaced"] is True
    assert again.json()["score"] == 0.9  # the later label of a source replaces the earlier
    assert other.json()["replaced"] is False  # another source is another label
    if gw.redis_url:
        fields = redis.Redis.from_url(gw.redis_url).hgetall(request_key("alice", rid))
        assert orjson.loads(fields[b"fb:user"])["score"] == 0.9
        assert sorted(k for k in fields if k.startswith(b"fb:")) == [b"fb:eval", b"fb:user"]


def _shadow_spend(gw: Gateway) -> float:
    rows = httpx.get(gw.url + "/v1/spend", params={"group_by": "plan_kind,policy"},
                     headers={"authorization": "Bearer sk-alice"}, timeout=10).json()["data"]
    return sum(r["cost_usd"] for r in rows if r["plan_kind"] == "shadow" and r["policy"] == "shadowed")


def test_shadow_labels_a_sample_of_cheap_answers(gw: Gateway) -> None:
    before = _shadow_spend(gw)
    rid, answer = gw.ask("sk-alice", model="router/shadowed")
    assert answer.choices[0].message.content
    label = _wait_for(lambda: _judge_label(gw, rid))
    assert label["against"] == "large" and label["answered_by"] == "small"
    assert label["method"] == "agreement" and label["score"] in (0.0, 1.0)
    assert _shadow_spend(gw) > before  # billed, and counted apart under its policy
    if gw.redis_url:
        fields = redis.Redis.from_url(gw.redis_url).hgetall(request_key("alice", rid))
        assert orjson.loads(fields[b"fb:gateway:judge"])["against"] == "large"


def test_a_failing_shadow_never_affects_the_response(gw: Gateway) -> None:
    failed = gw.services.shadow.counts["failed"] if gw.services.shadow else 0
    for _ in range(3):
        raw = gw.client("sk-alice").chat.completions.with_raw_response.create(model="router/shadow-fails",
                                                                              messages=SUM)
        assert raw.status_code == 200 and raw.headers["x-switchyard-model"] == "small"
        assert raw.parse().choices[0].message.content
    assert gw.services.shadow is not None
    _wait_for(lambda: gw.services.shadow.counts["failed"] >= failed + 3)
    rid = raw.headers["x-request-id"]
    assert _judge_label(gw, rid) is None


def test_a_failing_judge_never_affects_the_response(gw: Gateway) -> None:
    assert gw.services.shadow is not None
    failed = gw.services.shadow.counts["failed"]
    rid, answer = gw.ask("sk-alice", model="router/judge-fails",
                         messages=[{"role": "user", "content": "Write a short story about a harbor."}])
    assert len(answer.choices[0].message.content.split()) > 40  # too long to compare: the judge must grade it
    _wait_for(lambda: gw.services.shadow.counts["failed"] > failed)
    assert _judge_label(gw, rid) is None
    assert gw.feedback("sk-alice", {"request_id": rid, "thumbs": "up"}).status_code == 200


def _export(gw: Gateway, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "logs", "export", "--out", str(out),
                           "--config", str(gw.config_file), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_logs_export_writes_routing_data_rows(gw: Gateway, tmp_path: Path) -> None:
    rid_a, _ = gw.ask("sk-alice")
    rid_b, _ = gw.ask("sk-bob")
    rid_none, _ = gw.ask("sk-alice")  # no feedback: not exported
    rid_shadowed, _ = gw.ask("sk-alice", model="router/shadowed")
    _wait_for(lambda: _judge_label(gw, rid_shadowed))
    assert gw.feedback("sk-alice", {"request_id": rid_a, "score": 0.75, "source": "eval"}).status_code == 200
    assert gw.feedback("sk-bob", {"request_id": rid_b, "thumbs": "up"}).status_code == 200
    out = tmp_path / "traffic.jsonl"
    done = _export(gw, out, "--since", "1h", "--origin", "gateway,client")
    assert done.returncode == 0, done.stderr
    assert "without prompt text" in done.stdout
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert rows
    for row in rows:  # the routing-data schema, as `switchyard train` reads it
        assert set(row) == {"id", "split", "category", "prompt", "prompt_tokens", "models"}
        assert row["split"] in ("train", "validation") and row["prompt"] and row["prompt_tokens"] > 0
        assert all(0.0 <= m["score"] <= 1.0 for m in row["models"].values())
    by_id = {r["id"]: r for r in rows}
    mine = by_id[f"traffic/alice/{rid_a}"]
    assert mine["models"]["Meta-Llama-3.1-8B-Instruct"]["score"] == 0.75  # the router_profile names the model
    assert mine["prompt"] == "What is 17 + 25?"
    assert f"traffic/bob/{rid_b}" not in by_id  # bob's records keep a hash, not the prompt
    assert f"traffic/alice/{rid_none}" not in by_id
    data = load_data(out)  # what `switchyard train --data` reads
    assert len(data.ids) == len(rows) and "Meta-Llama-3.1-8B-Instruct" in data.models
    shadowed = by_id[f"traffic/alice/{rid_shadowed}"]  # a judge label also names the reference deployment
    reference = shadowed["models"]["Meta-Llama-3.1-70B-Instruct"]  # what its shadow call cost: not free
    assert reference["score"] == 1.0 and reference["cost_usd"] == _judge_label(gw, rid_shadowed)["against_cost_usd"] > 0
    assert set(shadowed["models"]) == {"Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"}


def test_logs_export_gives_a_cascade_s_answering_model_its_own_calls_cost_not_the_plans(
        gw: Gateway, tmp_path: Path) -> None:
    raw = gw.client("sk-alice").chat.completions.with_raw_response.create(model="router/always-escalating",
                                                                           messages=SUM)
    rid, answer = raw.headers["x-request-id"], raw.parse()
    assert raw.headers["x-switchyard-plan"] == "cascade:small>large:escalated"
    calls = orjson.loads(raw.headers["x-switchyard-evidence"])["calls"]  # what each call cost
    own = {d: sum(c["cost_usd"] for c in calls if c["deployment"] == d) for d in ("small", "large")}
    assert own["small"] > 0 and own["large"] > 0
    record = _record(gw, rid)
    assert record["cost_usd"] == pytest.approx(own["small"] + own["large"])  # the record keeps the whole cost
    assert gw.feedback("sk-alice", {"request_id": rid, "score": 1.0, "source": "eval"}).status_code == 200
    out = tmp_path / "traffic.jsonl"
    done = _export(gw, out, "--since", "1h", "--origin", "client")
    assert done.returncode == 0, done.stderr
    row = next(orjson.loads(line) for line in out.read_bytes().splitlines()
               if orjson.loads(line)["id"] == f"traffic/alice/{rid}")
    # The large model answered: its cost is its own call's, without the small model's try before it.
    assert row["models"] == {"Meta-Llama-3.1-70B-Instruct": {"score": 1.0, "cost_usd": pytest.approx(own["large"])}}
    assert answer.choices[0].message.content


def test_a_tenant_posting_source_judge_never_replaces_the_gateways_own_label(gw: Gateway, tmp_path: Path) -> None:
    rid, _ = gw.ask("sk-alice", model="router/shadowed")
    honest = _wait_for(lambda: _judge_label(gw, rid))
    forged = gw.feedback("sk-alice", {"request_id": rid, "score": 0.5, "source": "judge"})
    assert forged.status_code == 200, forged.text
    assert forged.json()["replaced"] is False  # beside the gateway's label, not in its place
    assert forged.json()["source"] == "judge" and forged.json()["origin"] == "client"
    assert honest["origin"] == "gateway"
    again = gw.feedback("sk-alice", {"request_id": rid, "score": 0.5, "source": "judge"})
    assert again.json()["replaced"] is True  # still idempotent per (request, source)
    if gw.redis_url:
        fields = redis.Redis.from_url(gw.redis_url).hgetall(request_key("alice", rid))
        assert orjson.loads(fields[b"fb:gateway:judge"])["score"] == honest["score"]
        assert orjson.loads(fields[b"fb:judge"])["origin"] == "client"
    out = tmp_path / "traffic.jsonl"
    done = _export(gw, out, "--since", "1h")  # by default only the gateway's own labels count
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert rows[f"traffic/alice/{rid}"]["models"]["Meta-Llama-3.1-8B-Instruct"]["score"] == honest["score"]


def test_logs_export_takes_client_labels_only_from_the_origins_and_tenants_it_is_told(
        gw: Gateway, tmp_path: Path) -> None:
    rid, _ = gw.ask("sk-alice")
    assert gw.feedback("sk-alice", {"request_id": rid, "score": 0.75, "source": "eval"}).status_code == 200
    row_id = f"traffic/alice/{rid}"

    def exported(*args: str) -> dict[str, Any]:
        out = tmp_path / "traffic.jsonl"
        done = _export(gw, out, "--since", "1h", *args)
        assert done.returncode == 0, done.stderr
        return {r["id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}

    assert row_id not in exported()  # a client label alone: not by default, and the export says how to take it
    hint = _export(gw, tmp_path / "hint.jsonl", "--since", "1h").stdout
    assert "labelled by no origin taken" in hint and "--origin gateway,client" in hint
    assert row_id not in exported("--origin", "gateway,client:bob")
    assert exported("--origin", "gateway,client:alice")[row_id]["models"]["Meta-Llama-3.1-8B-Instruct"][
        "score"] == 0.75
    assert row_id not in exported("--origin", "client", "--tenant", "bob")
    bad = _export(gw, tmp_path / "x.jsonl", "--origin", "oracle")
    assert bad.returncode == 2 and "oracle" in bad.stderr


def test_logs_export_gives_a_reused_request_id_only_its_latest_request_s_labels(gw: Gateway, tmp_path: Path) -> None:
    rid = f"reused-export-{gw.kind}-{time.time_ns()}"
    gw.ask("sk-alice", model="router/shadowed", extra_headers={"x-request-id": rid})
    _wait_for(lambda: _judge_label(gw, rid))
    assert gw.feedback("sk-alice", {"request_id": rid, "score": 0.0, "source": "eval"}).status_code == 200
    colour = [{"role": "user", "content": "Name a colour of the rainbow, one word."}]
    gw.ask("sk-alice", messages=colour, extra_headers={"x-request-id": rid})
    _wait_for(lambda: len([x for x in gw.sink_lines() if x.get("kind") == "request" and x["request_id"] == rid]) == 2)

    def exported() -> dict[str, Any]:
        out = tmp_path / "traffic.jsonl"
        done = _export(gw, out, "--since", "1h", "--origin", "gateway,client")
        assert done.returncode == 0, done.stderr
        return {r["id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}

    # the earlier request's labels (its shadow label and its eval) are not the new request's: it has none
    assert f"traffic/alice/{rid}" not in exported()
    assert gw.feedback("sk-alice", {"request_id": rid, "score": 0.75, "source": "user"}).json()["replaced"] is False
    _wait_for(lambda: any(x.get("kind") == "feedback" and x["request_id"] == rid and x["score"] == 0.75
                          for x in gw.sink_lines()))
    row = exported()[f"traffic/alice/{rid}"]
    assert row["prompt"] == colour[0]["content"]
    assert set(row["models"]) == {"Meta-Llama-3.1-8B-Instruct"}  # no shadow reference: that was the other request
    assert row["models"]["Meta-Llama-3.1-8B-Instruct"]["score"] == 0.75


def test_logs_export_refuses_to_write_over_the_gateway_s_request_log(gw: Gateway) -> None:
    """From the store too: the gateway still appends to its request_log.path, and the export emptied it."""
    rid, _ = gw.ask("sk-alice")
    _record(gw, rid)
    before = gw.sink.read_bytes()
    done = _export(gw, gw.sink, "--since", "1h")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"switchyard logs export: --out {gw.sink} is the request log"), line
    assert gw.sink.read_bytes().startswith(before)


def test_logs_export_help_explains_itself() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "logs", "export", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0
    assert "log_prompts" in done.stdout and "--since" in done.stdout and "routing data" in done.stdout
    assert "--origin" in done.stdout and "forge" in done.stdout


def test_redis_request_log_is_a_capped_stream_with_expiring_keys(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = RedisStore(redis_server.url)
        stream = f"sy:test-requests:{time.time_ns()}"
        items = [(request_key("capped", f"r{i}-{stream}"), orjson.dumps({"i": i})) for i in range(1000)]
        for start in range(0, 1000, 250):
            await store.append_records(stream, items[start:start + 250], maxlen=100, ttl_s=60)
        kept = await store.records_after(stream, "0-0", 5000)
        assert 100 <= len(kept) < 400  # approximate MAXLEN trims whole nodes: about the cap, never unbounded
        assert orjson.loads(kept[-1][1]) == {"i": 999}
        assert await store.put_feedback(items[0][0], "fb:user", b"1") is False  # its key outlives the stream entry
        assert await store.put_feedback(request_key("capped", "never-logged"), "fb:user", b"1") is None
        await store.close()
        assert 0 < redis.Redis.from_url(redis_server.url).ttl(items[0][0]) <= 60

    asyncio.run(scenario())


@pytest.mark.parametrize("store", ["redis", "memory"])
def test_one_tenant_s_burst_leaves_another_tenant_s_record_answerable(
        simulator: Simulator, redis_server: RedisServer, tmp_path: Path, store: str) -> None:
    """The in-memory store kept every tenant's records in one pool of `max_records`: alice's burst
    evicted bob's record, and bob's feedback on it was a 404. Each tenant now has its own cap."""
    cap = 5
    url = f"redis://127.0.0.1:{redis_server.port}/9" if store == "redis" else None  # its stream capped apart
    if url:
        redis.Redis.from_url(url).flushdb()
    raw = _config(simulator, url, tmp_path / "requests.jsonl").model_dump(exclude_defaults=True)
    raw["request_log"]["max_records"] = cap
    app = create_app(parse_config(raw, "test config"), policies_dir=policies_folder(tmp_path, POLICIES))
    with running_gateway(app) as server:
        gw = Gateway(server.base_url, store, tmp_path / "requests.jsonl", tmp_path / "unused.yaml",
                     app.state.services, url)
        bobs, _ = gw.ask("sk-bob")
        alices = [gw.ask("sk-alice")[0] for _ in range(cap * 3)]
        resp = gw.feedback("sk-bob", {"request_id": bobs, "thumbs": "up"})
        assert resp.status_code == 200, resp.text
        assert gw.feedback("sk-alice", {"request_id": alices[-1], "score": 0.5}).status_code == 200
        if store == "memory":  # alice's own records are bounded: her oldest made room for her newest
            oldest = gw.feedback("sk-alice", {"request_id": alices[0], "score": 0.5})
            assert oldest.status_code == 404 and oldest.json()["error"]["code"] == "request_not_found"
    if url:
        redis.Redis.from_url(url).flushdb()


def test_feedback_counts_against_the_tenant_s_requests_in_flight(simulator: Simulator, tmp_path: Path) -> None:
    """A label for an unknown request waits about a second for a record still on its way before its 404;
    without a slot one key could have any number of them going at once, crowding out every tenant."""
    raw = _config(simulator, None, tmp_path / "requests.jsonl").model_dump(exclude_defaults=True)
    raw["tenants"][1]["max_concurrent_requests"] = 1
    app = create_app(parse_config(raw, "test config"), policies_dir=policies_folder(tmp_path, POLICIES))
    with running_gateway(app) as server:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10,
                                         headers={"authorization": "Bearer sk-bob"}) as client:
                return await asyncio.gather(*(client.post("/v1/feedback", json={"request_id": f"nope-{i}",
                                                                                 "thumbs": "up"})
                                              for i in range(2)))

        statuses = sorted(r.status_code for r in asyncio.run(burst()))
        assert statuses == [404, 429]
        assert app.state.services.inflight.counts == {}  # every slot given back
