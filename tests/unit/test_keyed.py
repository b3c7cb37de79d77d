"""Keyed digests (`gateway.keyed`): the secret, where it comes from and how it is shared."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.keyed import Digests, configured_secret
from gateway.state import DIGEST_SECRET_KEY, MemoryStore, StoreUnavailable

SECRET = b"0123456789abcdef-secret"


def test_a_prompt_digest_is_its_hmac_under_the_secret_not_its_sha256() -> None:
    digests = Digests(SECRET)
    assert digests.prompt("yes") == hmac.new(SECRET, b"yes", hashlib.sha256).hexdigest()
    assert digests.prompt("yes") != hashlib.sha256(b"yes").hexdigest()
    assert Digests(b"another-secret-of-16+").prompt("yes") != digests.prompt("yes")


def test_a_replica_without_the_shared_secret_keeps_no_digest() -> None:
    own = Digests()
    assert not own.shared and own.prompt("yes") is None


def test_replicas_on_one_store_share_the_secret_the_first_one_wrote() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        one, two = Digests(), Digests()
        assert await one.load(store) and await two.load(store)
        assert one.shared and one.prompt("yes") == two.prompt("yes") is not None
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
    with pytest.raises(ConfigError, match="digest_secret_env: String should have at least 1 character"):
        parse_config({"deployments": [{"name": "d", "model": "openai/m"}], "digest_secret_env": ""}, "gateway.yaml")
    monkeypatch.delenv("SY_SECRET")
    with pytest.raises(ConfigError, match="SY_SECRET is unset or empty"):
        configured_secret("SY_SECRET")
