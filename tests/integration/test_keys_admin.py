"""The keys admin API, budgets and rate limits over real HTTP, real Redis and the `openai` client:
keys created, changed, rotated and revoked at run time; `GET /v1/budget`; 429s that name the limit;
a deployment at its quota skipped for the next candidate; `switchyard keys` driving the same API."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_key
from gateway.keys import KeyCreate, KeyRegistry
from gateway.state import RedisStore
from tests.integration.conftest import sim_config
from tests.support.processes import ROOT, RedisServer, Simulator, free_port, running_gateway

ADMIN = "sk-admin-test"
VIEWER = "sk-viewer-test"  # reads the dashboard, nothing else
TENANT_KEY = "sk-acme-config"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(simulator: Simulator, redis_server: RedisServer, policies_dir: Path) -> Iterator[str]:
    tenants = [{"name": "acme", "api_key_sha256": hash_key(TENANT_KEY), "budget": {"usd": 5.0, "period": "day"}},
               {"name": "narrow", "api_key_sha256": hash_key("sk-narrow-config"), "policies": ["cost-saver"],
                "deployments": ["small"]}]
    app = create_app(sim_config(simulator.url, redis_server.url, tenants=tenants, admin_api_key_sha256=hash_key(ADMIN),
                                viewer_api_key_sha256=hash_key(VIEWER)), policies_dir=policies_dir)
    with running_gateway(app) as server:
        yield server.base_url


def _admin(url: str, method: str, path: str, key: str | None = ADMIN, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, url + path, headers=headers, timeout=10, **kw)


def _create(url: str, **spec: Any) -> dict[str, Any]:
    resp = _admin(url, "POST", "/admin/keys", json={"tenant": "acme", **spec})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _chat(url: str, key: str, content: str = "hi", **kw: Any) -> Any:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(model="small", messages=[{"role": "user", "content": content}],
                                          extra_headers={"x-switchyard-cache": "bypass"}, **kw)


@pytest.mark.parametrize(("key", "status", "error_type"), [
    (None, 401, "authentication_error"), ("sk-wrong", 401, "authentication_error"),
    (TENANT_KEY, 403, "permission_error"), (VIEWER, 403, "permission_error")])
def test_the_admin_api_needs_the_admin_key(gw: str, key: str | None, status: int, error_type: str) -> None:
    """An unknown key is a 401; a valid key without admin rights (a tenant's, the dashboard viewer's) a
    403 saying the admin key is needed. The viewer key was a 401 "invalid API key"."""
    for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("DELETE", "/admin/keys/0123456789ab")):
        resp = _admin(gw, method, path, key=key, json={"tenant": "acme"})
        assert resp.status_code == status, (method, path, resp.text)
        assert resp.json()["error"]["type"] == error_type
        if status == 403:
            assert resp.json()["error"]["code"] == "admin_key_required"
            assert "needs the admin key" in resp.json()["error"]["message"]


@pytest.mark.parametrize("key", [ADMIN, VIEWER])
def test_the_admin_and_viewer_keys_are_told_they_are_no_tenants_key_not_that_they_are_invalid(
        gw: str, key: str) -> None:
    """Both are valid keys that call no model: they were a 401 "invalid API key", which sent their holder
    looking for a typo in a key that works on /admin/keys or the dashboard."""
    client = openai.OpenAI(base_url=gw + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="auto", messages=HI)
    assert refused.value.code == "tenant_key_required"
    for path, body in (("/v1/route", {"model": "auto", "messages": HI}),
                       ("/v1/feedback", {"request_id": "req_x", "thumbs": "up"})):
        resp = _admin(gw, "POST", path, key=key, json=body)
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "tenant_key_required", resp.text
    assert _admin(gw, "GET", "/v1/budget", key=key).status_code == 403
    assert _admin(gw, "GET", "/v1/models", key="sk-wrong").status_code == 401


@pytest.mark.parametrize(("body", "param"), [
    ({"tenant": "acme", "colour": "red"}, "colour"),
    ({"tenant": "{acme}"}, "tenant"),
    ({"tenant": "acme", "policies": ["no-such-policy"]}, "policies[0]"),
    ({"tenant": "acme", "deployments": ["nowhere"]}, "deployments[0]"),
    ({"tenant": "acme", "budget": {"usd": 1, "period": "fortnight"}}, "budget"),
    ({"tenant": "acme", "budget": -5}, "budget.usd"),  # a plain number is a total, bounded as usd is
    ({"tenant": "acme", "budget": {"usd": -1}}, "budget.usd"),
    ({"tenant": "acme", "requests_per_minute": 0}, "requests_per_minute"),
    ({"tenant": "acme", "requests_per_minute": True}, "requests_per_minute"),  # was a key of 1 request a minute
    ({"tenant": "acme", "tokens_per_minute": True}, "tokens_per_minute"),
    ({"tenant": "acme", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),  # born expired: was a 201
    (["not", "an", "object"], None)])
def test_bad_bodies_are_400s_naming_the_field(gw: str, body: Any, param: str | None) -> None:
    resp = _admin(gw, "POST", "/admin/keys", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert (resp.json()["error"]["param"] or "").startswith(param)


@pytest.mark.parametrize("field", ["policies", "deployments"])
def test_an_unknown_name_is_cut_in_the_refusal_not_echoed_whole(gw: str, field: str) -> None:
    resp = _admin(gw, "POST", "/admin/keys", json={"tenant": "acme", field: ["x" * 3000]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == f"{field}[0]", resp.text
    assert "x" * 64 in resp.json()["error"]["message"] and "x" * 65 not in resp.json()["error"]["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"tenant": "acme", "policies": [5]}, "policies[0]"),
    ({"tenant": "acme", "metadata": {"team": ["a"]}}, "metadata.team"),
    ({"tenant": "acme", "budget": {"usd": 1, "period": "fortnight"}}, "budget.period")])
def test_a_bad_body_names_the_field_as_the_chat_api_does(gw: str, body: Any, param: str) -> None:
    """The param was pydantic's location as it came: `policies.0`, and `metadata.team.str` (the union member
    that failed), which names no field."""
    resp = _admin(gw, "POST", "/admin/keys", json=body)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
    assert resp.json()["error"]["message"].startswith(f"{param}: ")


def test_a_key_cannot_be_given_what_its_tenant_may_not_use(gw: str) -> None:
    """A key narrows its tenant: made for a policy or a pinnable deployment its tenant may not use, it was a
    201 for a key whose every request was a 403."""
    for body, param, says in [
            ({"tenant": "narrow", "policies": ["balanced"]}, "policies[0]",
             "tenant 'narrow' may not use 'balanced' (it may: cost-saver)"),
            ({"tenant": "narrow", "deployments": ["large"]}, "deployments[0]",
             "tenant 'narrow' may not pin 'large' (it may: small)")]:
        resp = _admin(gw, "POST", "/admin/keys", json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param and says in resp.json()["error"]["message"]
    made = _admin(gw, "POST", "/admin/keys", json={"tenant": "narrow", "policies": ["cost-saver"]})
    assert made.status_code == 201, made.text
    patched = _admin(gw, "PATCH", f"/admin/keys/{made.json()['id']}", json={"policies": ["quality-first"]})
    assert patched.status_code == 400 and patched.json()["error"]["param"] == "policies[0]", patched.text


def test_a_patch_with_a_negative_budget_is_refused_and_the_key_keeps_working(gw: str) -> None:
    created = _create(gw)
    resp = _admin(gw, "PATCH", f"/admin/keys/{created['id']}", json={"budget": -5})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "budget.usd"
    assert _chat(gw, created["key"]).choices
    assert httpx.get(gw + "/v1/budget", headers={"authorization": f"Bearer {created['key']}"}).status_code == 200


def test_a_patch_with_true_for_a_limit_is_refused_naming_it(gw: str) -> None:
    """JSON's true is no number: read as 1, a PATCH meant to switch a limit on held the key to one request
    (or one token) a minute, as a YAML `yes` in the config file once did."""
    created = _create(gw, requests_per_minute=50)
    resp = _admin(gw, "PATCH", f"/admin/keys/{created['id']}", json={"requests_per_minute": True})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "requests_per_minute"
    assert _admin(gw, "GET", f"/admin/keys/{created['id']}").json()["requests_per_minute"] == 50


def test_a_patch_with_null_clears_a_field_metadata_too(gw: str) -> None:
    created = _create(gw, name="ci", metadata={"team": "search"}, requests_per_minute=5)
    resp = _admin(gw, "PATCH", f"/admin/keys/{created['id']}",
                  json={"name": None, "metadata": None, "requests_per_minute": None})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["name"], resp.json()["metadata"], resp.json()["requests_per_minute"]) == (None, {}, None)


@pytest.mark.parametrize(("query", "param"), [("tenat=acme", "tenat"), ("tenant=acme&tenant=beta", "tenant")])
def test_a_listing_asked_for_what_it_cannot_filter_by_is_a_400(gw: str, query: str, param: str) -> None:
    """A misspelt filter listed every tenant's keys, and a tenant given twice listed the last one's: an
    operator revoking what such a list showed revoked other tenants' keys. /v1/spend refuses both too."""
    resp = _admin(gw, "GET", f"/admin/keys?{query}")
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert _admin(gw, "GET", "/admin/keys?tenant=acme").status_code == 200


def test_a_store_outage_tells_callers_other_than_the_admin_nothing_of_where_the_store_is(
        simulator: Simulator, policies_dir: Path) -> None:
    """Redis's own words ('Error 111 connecting to 127.0.0.1:<port>. Connection refused.') were sent in the
    503 to anyone who sent a key shaped like an admin-made one, a guess included, and to tenants on
    /v1/budget, /v1/spend and /v1/feedback: where the store is, and what it said, are the operator's."""
    port = free_port()
    tenants = [{"name": "acme", "api_key_sha256": hash_key(TENANT_KEY), "budget": {"usd": 5.0, "period": "day"}}]
    app = create_app(sim_config(simulator.url, f"redis://127.0.0.1:{port}/0", tenants=tenants,
                                admin_api_key_sha256=hash_key(ADMIN)), policies_dir=policies_dir)
    with running_gateway(app) as server:
        app.state.services.cache.store.breaker.cooldown_s = 0  # every call reaches for the store again
        for key, method, path, body in (("sk-sy-0123456789ab-guess", "GET", "/v1/models", None),
                                        (TENANT_KEY, "GET", "/v1/budget", None),
                                        (TENANT_KEY, "GET", "/v1/spend", None),
                                        (TENANT_KEY, "POST", "/v1/feedback", {"request_id": "r", "thumbs": "up"})):
            deadline = time.monotonic() + 5
            resp = _admin(server.base_url, method, path, key=key, json=body)
            while "marked down" in resp.text and time.monotonic() < deadline:  # the next to reach for it, then
                time.sleep(0.05)
                resp = _admin(server.base_url, method, path, key=key, json=body)
            assert resp.status_code == 503, (path, resp.text)
            assert resp.json()["error"]["code"] == "store_unavailable"
            assert str(port) not in resp.text and "connecting" not in resp.text, (path, resp.text)


def test_unknown_key_ids_are_404s(gw: str) -> None:
    for method, path in (("GET", "/admin/keys/0123456789ab"), ("PATCH", "/admin/keys/0123456789ab"),
                         ("DELETE", "/admin/keys/nope"), ("POST", "/admin/keys/0123456789ab/rotate")):
        resp = _admin(gw, method, path, json={})
        assert resp.status_code == 404, (method, resp.text)
        assert resp.json()["error"]["code"] == "key_not_found"


def test_a_key_is_created_listed_used_rotated_and_revoked(gw: str) -> None:
    created = _create(gw, name="ci", metadata={"team": "search"})
    key = created["key"]
    assert key.startswith("sk-sy-") and created["status"] == "active"
    assert _chat(gw, key).choices[0].message.content
    listed = _admin(gw, "GET", "/admin/keys").json()["data"]
    mine = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in mine and "sha256" not in mine and key not in str(listed)
    assert key.startswith(mine["prefix"]) and hash_key(key).startswith(mine["sha256_prefix"])
    assert mine["metadata"] == {"team": "search"}

    rotated = _admin(gw, "POST", f"/admin/keys/{created['id']}/rotate").json()
    time.sleep(0.6)  # past every replica's cache
    with pytest.raises(openai.AuthenticationError):
        _chat(gw, key)
    assert _chat(gw, rotated["key"]).choices

    revoked = _admin(gw, "DELETE", f"/admin/keys/{created['id']}").json()
    assert revoked["status"] == "revoked"
    time.sleep(0.6)
    with pytest.raises(openai.AuthenticationError) as info:
        _chat(gw, rotated["key"])
    assert info.value.code == "key_revoked"


def test_a_key_made_for_one_policy_may_call_the_auto_it_is_listed(gw: str) -> None:
    """`auto` is listed for a key held to one policy; it meant the gateway's default policy, which the key
    may not use, so calling what it was offered was a 403. It is the key's one policy."""
    key = _create(gw, name="one-policy", policies=["cost-saver"])["key"]
    client = openai.OpenAI(base_url=gw + "/v1", api_key=key, max_retries=0)
    assert {m.id for m in client.models.list()} == {"auto", "router/cost-saver"}
    assert client.chat.completions.create(model="auto", messages=HI).choices[0].message.content
    explained = httpx.post(gw + "/v1/route", headers={"authorization": f"Bearer {key}"}, json={"messages": HI},
                           timeout=10).json()
    assert explained["policy"] == "cost-saver"
    # two policies, neither a default: `auto` means neither without a header, so it is not listed
    two = _create(gw, name="two-policies", policies=["cost-saver", "quality-first"])["key"]
    listed = {m.id for m in openai.OpenAI(base_url=gw + "/v1", api_key=two, max_retries=0).models.list()}
    assert listed == {"router/cost-saver", "router/quality-first"}


def test_a_patch_takes_effect_without_a_restart(gw: str) -> None:
    created = _create(gw)
    _chat(gw, created["key"])
    patched = _admin(gw, "PATCH", f"/admin/keys/{created['id']}", json={"requests_per_minute": 1})
    assert patched.status_code == 200 and patched.json()["requests_per_minute"] == 1
    time.sleep(0.6)
    _chat(gw, created["key"])
    with pytest.raises(openai.RateLimitError) as info:
        _chat(gw, created["key"])
    assert info.value.code == "rate_limit_exceeded" and "requests_per_minute" in info.value.message
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


def test_explaining_a_route_counts_against_requests_per_minute(gw: str) -> None:
    """POST /v1/route calls no model, but it is a request: past the limit it is refused, so a caller
    cannot feed a target policy's calibration (shared by every tenant) without end."""
    key = _create(gw, requests_per_minute=2)["key"]
    codes = [httpx.post(gw + "/v1/route", headers={"authorization": f"Bearer {key}"}, timeout=10,
                        json={"model": "router/balanced", "messages": HI}).status_code for _ in range(2)]
    refused = httpx.post(gw + "/v1/route", headers={"authorization": f"Bearer {key}"}, timeout=10,
                         json={"model": "router/balanced", "messages": HI})
    assert codes == [200, 200] and refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "requests_per_minute" in refused.json()["error"]["message"]
    with pytest.raises(openai.RateLimitError):  # and the explained ones counted for chat as well
        _chat(gw, key)


def test_tokens_per_minute_refuses_with_the_limit_named_and_retry_after(gw: str) -> None:
    key = _create(gw, tokens_per_minute=100)["key"]
    _chat(gw, key, max_tokens=40)  # reserves prompt + 40, settles to the real count
    refused = httpx.post(gw + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=10,
                         json={"model": "small", "messages": HI, "max_tokens": 90})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "tokens_per_minute" in refused.json()["error"]["message"]
    assert refused.headers["x-switchyard-limit"] == "tokens_per_minute"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_budget_shows_limit_spent_reserved_remaining_and_reset(gw: str) -> None:
    key = _create(gw, budget={"usd": 0.5, "period": "month"}, requests_per_minute=50)["key"]
    raw = openai.OpenAI(base_url=gw + "/v1", api_key=key, max_retries=0).chat.completions.with_raw_response.create(
        model="small", messages=HI, extra_headers={"x-switchyard-cache": "bypass"})
    cost = float(raw.headers["x-switchyard-cost-usd"])
    body = httpx.get(gw + "/v1/budget", headers={"authorization": f"Bearer {key}"}, timeout=10).json()
    assert body["tenant"] == "acme" and body["key_id"] == key[6:18]
    tenant_row, key_row = body["budgets"]
    assert tenant_row["scope"] == "tenant" and tenant_row["period"] == "day" and tenant_row["limit_usd"] == 5.0
    assert tenant_row["resets_at"].endswith("T00:00:00Z")
    assert key_row == {"scope": "key", "period": "month", "limit_usd": 0.5, "spent_usd": pytest.approx(cost),
                       "reserved_usd": 0.0, "remaining_usd": pytest.approx(0.5 - cost),
                       "resets_at": key_row["resets_at"]}
    assert key_row["resets_at"].endswith("-01T00:00:00Z")
    assert body["rate_limits"] == [{"scope": "key", "limit": "requests_per_minute", "value": 50, "used": 1,
                                    "remaining": 49}]
    # counted whole, written as integers: a strictly typed client decodes them into ints
    assert all(type(row[f]) is int for row in body["rate_limits"] for f in ("value", "used", "remaining"))


def test_switchyard_keys_drives_the_same_api(gw: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SWITCHYARD_ADMIN_KEY": ADMIN}
    cli = [sys.executable, "-m", "gateway.cli", "keys"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args, "--url", gw], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=60)

    made = run("create", "--tenant", "acme", "--budget", "2", "--period", "week", "--metadata", "owner=ops")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["budget"] == {"usd": 2.0, "period": "week"} and created["metadata"] == {"owner": "ops"}
    listed = run("list", "--tenant", "acme")
    assert created["id"] in listed.stdout and created["key"] not in listed.stdout
    assert run("rotate", created["id"]).returncode == 0
    assert json.loads(run("revoke", created["id"]).stdout)["status"] == "revoked"
    # An id is one path segment: it cannot walk the admin key over to another route (DELETE /v1/models: 405)
    escaped = run("revoke", "../../v1/models")
    assert escaped.returncode == 1 and escaped.stderr.startswith("switchyard keys: HTTP 404 ") and \
        escaped.stderr.count("\n") == 1 and "not_found" in escaped.stderr, escaped.stderr
    bad = subprocess.run([*cli, "list", "--url", gw, "--admin-key", "sk-wrong"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "authentication_error" in bad.stderr


@pytest.fixture(scope="module")
def quota_gw(simulator: Simulator, redis_server: RedisServer, policies_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("quota-policies")
    for f in policies_dir.glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    config = sim_config(simulator.url, redis_server.url)
    tag = uuid.uuid4().hex[:6]  # a fresh deployment name: its windows start empty in the shared Redis
    small = config.deployments[0].model_copy(update={"name": f"small-{tag}", "requests_per_minute": 2})
    deployments = [small, *config.deployments[1:]]
    (folder / "small-first.yaml").write_text(
        f"description: small, then large\ncandidates:\n  - single: {small.name}\nfallbacks:\n"
        f"  {small.name}: [large]\n")
    app = create_app(config.model_copy(update={"deployments": deployments}), policies_dir=folder)
    with running_gateway(app) as server:
        yield server.base_url + "|" + small.name


def test_a_deployment_at_its_quota_is_skipped_for_the_next_candidate_then_429(quota_gw: str) -> None:
    url, small = quota_gw.split("|")
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    served = []
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="router/small-first", messages=[{"role": "user", "content": f"question {i}"}],
            extra_headers={"x-switchyard-cache": "bypass"})
        served.append(raw.headers["x-switchyard-model"])
    assert served == [small, small, "large"]  # the third would overrun small's quota: its fallback answers
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=small, messages=HI, extra_headers={"x-switchyard-cache": "bypass"})
    assert info.value.code == "rate_limit_exceeded"
    assert f"'{small}' is at its requests_per_minute limit" in info.value.message
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


def test_the_admin_api_is_off_without_an_admin_key(quota_gw: str) -> None:
    url = quota_gw.split("|")[0]
    resp = _admin(url, "GET", "/admin/keys", key="anything")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "admin_api_disabled"


async def test_listing_the_keys_reads_every_record_in_one_round_trip(redis_server: RedisServer) -> None:
    """`GET /admin/keys` read each record with its own round trip: 500 keys took ~500 of them."""
    class Counting(RedisStore):
        trips = 0

        async def _guarded(self, call: Any) -> Any:
            self.trips += 1
            return await super()._guarded(call)

    store = Counting(redis_server.url, timeout_s=5)
    registry = KeyRegistry(store)
    try:
        made = [(await registry.create(KeyCreate(tenant="acme", metadata={"n": str(i)})))[0] for i in range(40)]
        store.trips = 0
        listed = await registry.list()
        assert store.trips == 2  # the index, then every record
        by_id = {r.id: r for r in listed}
        assert [by_id[r.id].metadata for r in made] == [{"n": str(i)} for i in range(40)]
    finally:
        await store.close()


def test_a_revoke_racing_patches_and_rotations_stays_revoked(gw: str) -> None:
    """PATCH and rotate wrote back the record they had read: a DELETE landing in between answered
    `revoked` and was then undone, so the key (or the rotated one) went on working."""
    async def rounds() -> list[tuple[str, list[str]]]:
        out = []
        async with httpx.AsyncClient(base_url=gw, headers={"authorization": f"Bearer {ADMIN}"}, timeout=10) as c:
            for i in range(15):
                made = (await c.post("/admin/keys", json={"tenant": "acme"})).json()
                path = f"/admin/keys/{made['id']}"
                answers = await asyncio.gather(c.patch(path, json={"name": f"a{i}"}), c.delete(path),
                                               c.post(path + "/rotate"), c.patch(path, json={"metadata": {"n": i}}))
                assert all(a.status_code in (200, 400) for a in answers), [a.text for a in answers]
                keys = [made["key"], *(a.json()["key"] for a in answers if "key" in a.json())]
                out.append(((await c.get(path)).json()["status"], keys))
        return out
    for status, keys in asyncio.run(rounds()):
        assert status == "revoked"
        for key in keys:
            assert httpx.get(gw + "/v1/budget", headers={"authorization": f"Bearer {key}"}).status_code == 401
