"""A target policy's threshold is its tenant's own: one tenant's traffic cannot move where another
tenant's requests go (and what they are billed), across replicas sharing one Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from tests.integration.conftest import sim_config
from tests.support.processes import ROOT, GatewayServer, RedisServer, Simulator, running_gateway

DATA = ROOT.parent / "shared" / "data" / "llmrouter_mixed.jsonl"
SHARE = 0.3
TENANTS = [{"name": name, "api_key_sha256": hash_key(f"sk-{name}")} for name in ("flooder", "victim")]

pytestmark = pytest.mark.skipif(not DATA.is_file(), reason="the shared routing data is not beside the repository")


@pytest.fixture(scope="module")
def gateway(simulator: Simulator, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[GatewayServer]:
    folder = tmp_path_factory.mktemp("share-policy")
    (folder / "share.yaml").write_text(
        f"candidates:\n  - single: small\n  - single: large\ntarget:\n  strong_share: {SHARE}\n")
    app = create_app(sim_config(simulator.url, redis_server.url, tenants=TENANTS), policies_dir=folder,
                     calibrate_s=0.2)
    with running_gateway(app) as gw:
        yield gw


def _plan(client: httpx.Client, key: str, prompt: str) -> str:
    resp = client.post("/v1/route", headers={"authorization": f"Bearer {key}"},
                       json={"model": "router/share", "messages": [{"role": "user", "content": prompt}]})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["plan"])


def test_a_flood_of_easy_prompts_does_not_send_another_tenants_requests_to_the_large_model(
        gateway: GatewayServer) -> None:
    with DATA.open() as f:
        prompts = [json.loads(line)["prompt"] for line in f][:300]
    victim, flood = [], []
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        for i, prompt in enumerate(prompts):
            # Three greetings for each of the victim's prompts. Pooled with everyone's traffic they were
            # most of what the policy's 30% was taken from: its threshold fell below all of the
            # victim's ordinary prompts, which then all went to the large model, billed to the victim
            # (measured before: 95% of them after the first 100).
            flood += [_plan(client, "sk-flooder", f"hi {3 * i + j}") for j in range(3)]
            victim.append(_plan(client, "sk-victim", prompt))
    share = victim[100:].count("single:large") / len(victim[100:])
    assert share == pytest.approx(SHARE, abs=0.05), f"{share:.0%} of the victim's requests went to large"
    # and the target holds on the flooder's own traffic too
    assert flood[200:].count("single:large") / len(flood[200:]) == pytest.approx(SHARE, abs=0.05)
