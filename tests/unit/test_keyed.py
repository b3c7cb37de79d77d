"""Keyed digests (`gateway.keyed`) and the cache salt a deployment with `isolate_prefix_cache` is sent:
the secret, where it comes from and how it is shared, and what each upstream call carries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import pytest

from gateway.auth import Authenticator, Tenant
from gateway.config import DeploymentConfig, RequestLogSettings, parse_config
from gateway.errors import ConfigError
from gateway.executor import Deadline
from gateway.executor.upstreams import salted
from gateway.feedback import Completed, RequestLog
from gateway.keyed import Digests, configured_secret, tenant_salt
from gateway.ledger import Ledger
from gateway.plans import Shadow
from gateway.policy import Catalog
from gateway.shadow import Job, ShadowEvaluator
from gateway.state import DIGEST_SECRET_KEY, MemoryStore, StoreUnavailable
from gateway.telemetry import Telemetry
from tests.support.fake_backend import answer, deployment, fake_upstreams

SECRET = b"0123456789abcdef-secret"


def test_a_prompt_digest_is_its_hmac_under_the_secret_not_its_sha256() -> None:
    digests = Digests(SECRET)
    assert digests.prompt("yes") == hmac.new(SECRET, b"yes", hashlib.sha256).hexdigest()
    assert digests.prompt("yes") != hashlib.sha256(b"yes").hexdigest()
    assert Digests(b"another-secret-of-16+").prompt("yes") != digests.prompt("yes")


def test_a_replica_without_the_shared_secret_keeps_no_digest_but_still_salts_per_tenant() -> None:
    own = Digests()
    assert not own.shared and own.prompt("yes") is None
    assert own.cache_salt("alice") != own.cache_salt("bob")
    assert own.cache_salt("alice") != Digests().cache_salt("alice")  # a secret of its own, known to nobody


def test_a_tenants_salt_is_stable_keyed_and_never_a_prompts_digest() -> None:
    digests = Digests(SECRET)
    salt = digests.cache_salt("alice")
    assert salt == digests.cache_salt("alice") == Digests(SECRET).cache_salt("alice")
    assert salt != Digests(b"another-secret-of-16+").cache_salt("alice")
    assert salt not in (digests.prompt("alice"), hashlib.sha256(b"alice").hexdigest())


def test_replicas_on_one_store_share_the_secret_the_first_one_wrote() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        one, two = Digests(), Digests()
        before = one.cache_salt("alice")
        assert await one.load(store) and await two.load(store)
        assert one.shared and one.prompt("yes") == two.prompt("yes") is not None
        assert one.cache_salt("alice") == two.cache_salt("alice") != before  # the salts follow the secret
        stored = await store.get(DIGEST_SECRET_KEY)
        assert stored is not None and one.prompt("yes") == hmac.new(stored, b"yes", hashlib.sha256).hexdigest()
        configured = Digests(SECRET)
        assert await configured.load(store) and configured.prompt("yes") == Digests(SECRET).prompt("yes")
    asyncio.run(scenario())


class _DownThenUp(MemoryStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def set_if_absent(self, key: str, value: bytes) -> bytes:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection refused")
        return await super().set_if_absent(key, value)


def test_a_store_down_at_start_up_is_retried_until_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        store, digests = _DownThenUp(failures=3), Digests()
        assert not await digests.load(store)
        await asyncio.wait_for(digests.keep_loading(store, every_s=0.01), 5)
        assert digests.shared and digests.prompt("yes") is not None and store.failures == 0
    asyncio.run(scenario())
    assert sum("digest secret cannot be read" in r.message for r in caplog.records) == 1  # warned once


def test_the_configured_secret_is_read_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configured_secret(None) is None
    monkeypatch.setenv("SY_SECRET", "s" * 16)
    assert configured_secret("SY_SECRET") == b"s" * 16
    monkeypatch.setenv("SY_SECRET", "s" * 15)
    with pytest.raises(ConfigError, match="SY_SECRET is too short"):
        configured_secret("SY_SECRET")
    monkeypatch.delenv("SY_SECRET")
    with pytest.raises(ConfigError, match="SY_SECRET is unset or empty"):
        configured_secret("SY_SECRET")


def test_isolate_prefix_cache_is_validated_and_off_by_default() -> None:
    base = {"name": "d", "model": "openai/m", "api_base": "http://vllm:8000/v1"}
    assert DeploymentConfig.model_validate(base).isolate_prefix_cache is False
    assert DeploymentConfig.model_validate({**base, "isolate_prefix_cache": True}).isolate_prefix_cache is True
    with pytest.raises(ConfigError, match=r"deployments\[0\].isolate_prefix_cache: Input should be a valid boolean"):
        parse_config({"deployments": [{**base, "isolate_prefix_cache": "maybe"}]}, "gateway.yaml")
    hosted = {"name": "d", "model": "openai/gpt-4o-mini", "isolate_prefix_cache": True}
    with pytest.raises(ConfigError, match=r"deployments\[0\]: .*isolate_prefix_cache needs the api_base"):
        parse_config({"deployments": [hosted]}, "gateway.yaml")
    with pytest.raises(ConfigError, match="digest_secret_env: String should have at least 1 character"):
        parse_config({"deployments": [base], "digest_secret_env": ""}, "gateway.yaml")


def test_a_client_salt_partitions_inside_the_tenants_salt() -> None:
    assert salted({"model": "m"}, "a" * 64)["cache_salt"] == "a" * 64
    assert salted({"cache_salt": "user-7"}, "a" * 64)["cache_salt"] == "a" * 64 + ".user-7"
    # Outside a tenant's request: a salt of its own, shared with no other call.
    assert salted({}, None)["cache_salt"] != salted({}, None)["cache_salt"]


def test_only_isolating_deployments_are_sent_the_salt_set_for_the_request() -> None:
    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        up, backend = fake_upstreams(lambda d, b: answer(), deployment("vllm", isolate_prefix_cache=True),
                                     deployment("hosted"))
        tenant_salt.set("f" * 64)
        for name in ("vllm", "hosted"):
            await up.call((name,), {"messages": [{"role": "user", "content": "hi"}]}, None, deadline=Deadline.after(5))
            live = await up.open_stream((name,), {"messages": [{"role": "user", "content": "hi"}], "stream": True},
                                        None, deadline=Deadline.after(5))
            await up.end_stream(live)
        return backend.calls
    calls = asyncio.run(scenario())
    assert [(name, body.get("cache_salt")) for name, body in calls] == [
        ("vllm", "f" * 64), ("vllm", "f" * 64), ("hosted", None), ("hosted", None)]


def test_a_shadow_call_carries_the_salt_of_the_tenant_it_shadows() -> None:
    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        store = MemoryStore()
        up, backend = fake_upstreams(lambda d, b: answer("The answer is 42."), deployment("small"),
                                     deployment("large", isolate_prefix_cache=True))
        ledger = Ledger(store)
        ledger.start()
        requests = RequestLog(store, RequestLogSettings(), digests=Digests(SECRET))
        shadow = ShadowEvaluator(up, Catalog(dict(up.deployments), dict(up.prices)), Authenticator([], store),
                                 ledger, requests, Telemetry())
        tenant_salt.set("the salt of whichever request came before")
        asked, answer_text = {"messages": [{"role": "user", "content": "hi"}]}, "The answer is 42."
        record = Completed("r1", 1.0, Tenant("t"), "router/p", "p", "single:small", "small", asked["messages"], None,
                           (), 10, "default")
        await shadow.evaluate(Job(Shadow(1.0, "large"), Tenant("t"), record, asked, answer_text, "small", 10, 5.0))
        await ledger.close()
        return backend.calls
    assert [(name, body.get("cache_salt")) for name, body in asyncio.run(scenario())] == [
        ("large", Digests(SECRET).cache_salt("t"))]
