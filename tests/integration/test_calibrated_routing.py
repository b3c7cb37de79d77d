"""Target policies on real traffic: replayed shared routing files through `POST /v1/route` meet their
strong share, the shipped `balanced` keeps every file between the extremes, replicas share one score
distribution through Redis, and `switchyard policy calibrate` reports before deploying."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.app import build_services, create_app
from gateway.config import embedded_config
from gateway.pipeline import CallContext, count_traffic, resolve_entry, route
from tests.integration.conftest import sim_config
from tests.support.processes import ROOT, GatewayServer, RedisServer, Simulator, running_gateway

DATA = ROOT.parent / "shared" / "data"
SHARED_FILES = ("arena_chat", "cruxeval_code", "llmrouter_mixed", "mmlu_pro", "theoremqa_stem")
REPLAYS = {"mmlu": ("mmlu_pro", "validation"), "mixed": ("llmrouter_mixed", None)}
SHARES = (0.1, 0.3, 0.7)
REPLAY_LENGTH = 600
WARM_UP = 200

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="the shared routing data is not beside the repository")


def _prompts(name: str, split: str | None, limit: int | None = None) -> list[str]:
    with (DATA / f"{name}.jsonl").open() as f:
        rows = [json.loads(line) for line in f]
    prompts = [r["prompt"] for r in rows if split is None or r["split"] == split]  # file order: sorted by topic
    return prompts[:limit] if limit else prompts


@pytest.fixture(scope="module")
def target_gateway(simulator: Simulator, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[GatewayServer]:
    folder = tmp_path_factory.mktemp("target-policies")
    shutil.copy(ROOT / "routing_policies" / "balanced.yaml", folder / "balanced.yaml")
    for tag in REPLAYS:
        for share in SHARES:
            (folder / f"share-{int(share * 100)}-{tag}.yaml").write_text(
                f"candidates:\n  - single: small\n  - single: large\ntarget:\n  strong_share: {share}\n")
    app = create_app(sim_config(simulator.url, redis_server.url), policies_dir=folder)
    with running_gateway(app) as gw:
        yield gw


def _route(client: httpx.Client, policy: str, prompt: str) -> dict[str, Any]:
    resp = client.post("/v1/route", json={"model": f"router/{policy}",
                                          "messages": [{"role": "user", "content": prompt}]})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


@pytest.mark.parametrize("tag", list(REPLAYS))
@pytest.mark.parametrize("share", SHARES)
def test_replayed_traffic_meets_the_strong_share_within_three_points_after_200(
        target_gateway: GatewayServer, tag: str, share: float) -> None:
    prompts = _prompts(*REPLAYS[tag], limit=REPLAY_LENGTH)
    assert len(prompts) >= 500
    policy = f"share-{int(share * 100)}-{tag}"
    with httpx.Client(base_url=target_gateway.base_url, timeout=10) as client:
        plans = [_route(client, policy, p)["plan"] for p in prompts]
    strong = [p == "single:large" for p in plans[WARM_UP:]]
    assert sum(strong) / len(strong) == pytest.approx(share, abs=0.03)


def test_route_shows_the_threshold_in_force_and_where_the_prompt_falls(target_gateway: GatewayServer) -> None:
    with httpx.Client(base_url=target_gateway.base_url, timeout=10) as client:
        explained = _route(client, "balanced", "What is the capital of France?")
    c = explained["calibration"]
    assert c["target"] == {"strong_share": 0.4}
    assert c["cheap"] == "single:small" and c["strong"] == "single:large"
    assert isinstance(c["threshold"], float) and isinstance(c["score"], float)
    assert 0.0 <= c["quantile"] <= 1.0 and 0.0 <= c["strong_share_in_force"] <= 1.0
    assert c["chose_strong"] == (c["score"] >= c["threshold"]) == (explained["plan"] == "single:large")
    assert any("quantile of recent traffic" in r for r in explained["reasons"])


def test_balanced_sends_between_15_and_85_percent_of_each_shared_files_prompts_to_large() -> None:
    """Each file's validation prompts as the traffic of a freshly started gateway, in file order."""
    svc = build_services(embedded_config("http://127.0.0.1:9/v1"))
    for name in SHARED_FILES:
        svc.calibrator.controllers.clear()  # a fresh start: the shipped sample's prior, no traffic yet
        tenant = svc.auth.identify(None)
        entry = resolve_entry(svc, "router/balanced", CallContext(), tenant)
        prompts = _prompts(name, "validation", limit=400)
        plans = []
        for p in prompts:
            r = route(svc, entry, {"model": "router/balanced", "messages": [{"role": "user", "content": p}]},
                      CallContext(), tenant.name)
            count_traffic(svc, entry, r, tenant.name)  # each one admitted traffic
            plans.append(r.plan.label)
        share = sum(p == "single:large" for p in plans) / len(plans)
        assert 0.15 <= share <= 0.85, f"{name}: {share:.0%} to large"


def test_replicas_share_one_score_distribution_through_redis(simulator: Simulator, redis_server: RedisServer,
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "shared-share.yaml").write_text(
        "candidates:\n  - single: small\n  - single: large\ntarget:\n  strong_share: 0.3\n")
    config = sim_config(simulator.url, redis_server.url)
    a = create_app(config, policies_dir=folder, calibrate_s=0.2)
    b = create_app(config, policies_dir=folder, calibrate_s=0.2)
    prompts = _prompts("theoremqa_stem", None, limit=120)
    with running_gateway(a) as gw_a, running_gateway(b) as gw_b, \
            httpx.Client(base_url=gw_a.base_url, timeout=10) as ca, \
            httpx.Client(base_url=gw_b.base_url, timeout=10) as cb:
        for p in prompts[:80]:
            _route(ca, "shared-share", p)
        for p in prompts[80:]:
            _route(cb, "shared-share", p)
        deadline = time.monotonic() + 5
        seen: tuple[float, float] = (0.0, 0.0)
        while time.monotonic() < deadline:
            seen = (_route(ca, "shared-share", "hi")["calibration"]["recent_requests"],
                    _route(cb, "shared-share", "hi")["calibration"]["recent_requests"])
            if min(seen) >= len(prompts):
                break
            time.sleep(0.2)
        assert min(seen) >= len(prompts), seen  # each replica counts the other's traffic, merged
    import redis

    client = redis.Redis.from_url(redis_server.url)
    keys = client.keys("sy:calib:{*}:shared-share:*")
    assert keys and all(0 < client.ttl(k) <= 31 * 60 for k in keys)  # per-minute sums that expire
    client.close()


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _calibrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "calibrate", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)


def test_policy_calibrate_prints_the_threshold_share_quality_and_cost(tmp_path: Path) -> None:
    traffic = tmp_path / "traffic.jsonl"
    with traffic.open("w") as f:
        for p in _prompts("theoremqa_stem", "train", limit=150):
            f.write(json.dumps({"prompt": p}) + "\n")
        for p in ("hi", "Say hi."):
            f.write(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n")
    out = _calibrate("balanced", "--traffic", str(traffic), "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["prompts"] == 152 and result["target"] == {"strong_share": 0.4}
    assert result["strong_share"] == pytest.approx(0.4, abs=0.01)
    assert result["always_cheap"]["quality"] <= result["quality"] <= result["always_strong"]["quality"]
    cheap, strong = result["always_cheap"]["usd_per_1k_requests"], result["always_strong"]["usd_per_1k_requests"]
    assert cheap < result["usd_per_1k_requests"] < strong
    text = _calibrate("balanced", "--traffic", str(traffic), "--quiet").stdout
    assert "threshold" in text and "expected share to strong" in text and "cost per 1k requests" in text


def test_policy_calibrate_refuses_fewer_than_50_prompts(tmp_path: Path) -> None:
    traffic = tmp_path / "few.jsonl"
    traffic.write_text("".join(json.dumps({"prompt": f"question {i}?"}) + "\n" for i in range(49)))
    out = _calibrate("balanced", "--traffic", str(traffic))
    assert out.returncode != 0
    assert "49 prompts" in out.stderr and "at least 50" in out.stderr


def test_policy_calibrate_help_explains_itself() -> None:
    out = _calibrate("--help")
    assert out.returncode == 0 and "--traffic" in out.stdout and "strong" in out.stdout
