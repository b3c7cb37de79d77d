"""Keyed digests: what the gateway derives from a tenant's prompt or name, under one secret.

A plain sha256 of a short prompt ("yes", "What is my balance?", a phone number) is reversed by
hashing a dictionary of guesses, and so is a plain hash of a tenant's name. What the gateway keeps
or sends of either is therefore an HMAC-SHA256 under a secret:

- `prompt_hmac`, in the request record of a tenant without `log_prompts` (`gateway.feedback`):
  HMAC(secret, prompt). Equal prompts have equal digests on every replica; a reader of the request
  log (the `sy:requests` stream, the JSONL sink) who lacks the secret cannot test guesses against it.
- `cache_salt`, sent with every call of a deployment with `isolate_prefix_cache: true`
  (`gateway.executor.upstreams`): HMAC(secret, "cache_salt:" + tenant), one per tenant, computed
  once. A server that keys its prefix cache by it (vLLM) reuses cached prefixes within a tenant and
  never across tenants, whose time to first token would tell one tenant what another recently sent.

The secret is the value of the env var the config's `digest_secret_env` names, else one generated
once and kept in the store (`sy:secret`, written only if absent: replicas starting together all
read the first one's), so every replica digests alike, and a restarted one too while the store
keeps it. A replica that cannot read the store at start-up keeps trying in the background; until
then its records carry no digest (one under a secret of its own would match no other replica's)
and its salts are keyed by a secret of its own: still one per tenant and known to nobody, so
tenants stay apart; only the cache is not shared with the other replicas' calls for that while.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
from contextvars import ContextVar

from gateway.errors import ConfigError
from gateway.state import DIGEST_SECRET_KEY, Store, StoreUnavailable

log = logging.getLogger("switchyard.keyed")

MIN_SECRET_CHARS = 16
RETRY_S = 5.0
_SALT = b"cache_salt:"  # a salt is never the digest of a prompt, whatever the tenant is called

# The cache salt of the tenant whose calls are being made: set once per request (`gateway.pipeline`)
# and per shadow job, and found by every upstream call, however deep (as `executor.drain.late_bills`).
tenant_salt: ContextVar[str | None] = ContextVar("switchyard_tenant_salt", default=None)


def configured_secret(env: str | None) -> bytes | None:
    """The secret in the env var the config names (checked), or None when it names none."""
    if env is None:
        return None
    value = os.environ.get(env, "")
    if len(value) < MIN_SECRET_CHARS:
        why = "too short" if value else "unset or empty"
        raise ConfigError(f"digest_secret_env: the variable {env} is {why}: give it a secret of at least "
                          f"{MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)")
    return value.encode()


class Digests:
    """The secret and what it keys. `shared`: every replica digests under this secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.shared = secret is not None
        self._salts: dict[str, str] = {}
        self._warned = False
        self._keyed = self._keyed_by(secret or secrets.token_bytes(32))  # this replica's own, until the store's

    @staticmethod
    def _keyed_by(secret: bytes) -> hmac.HMAC:
        """The HMAC state after the key: each digest copies it (1.7 µs a prompt rather than 2.2)."""
        return hmac.new(secret, digestmod=hashlib.sha256)

    def _digest(self, data: bytes) -> str:
        keyed = self._keyed.copy()
        keyed.update(data)
        return keyed.hexdigest()

    def prompt(self, text: str) -> str | None:
        """The prompt's keyed digest; None while the shared secret is not known."""
        if not self.shared:
            return None
        return self._digest(text.encode())

    def cache_salt(self, tenant: str) -> str:
        """The tenant's salt: on the request path, so computed once per tenant (and secret)."""
        salt = self._salts.get(tenant)
        if salt is None:
            salt = self._salts[tenant] = self._digest(_SALT + tenant.encode())
        return salt

    async def load(self, store: Store) -> bool:
        """Read the store's secret, writing one first if it holds none; False if the store did not answer."""
        if self.shared:
            return True
        try:
            secret = await store.set_if_absent(DIGEST_SECRET_KEY, secrets.token_hex(32).encode())
        except StoreUnavailable as exc:
            if not self._warned:
                self._warned = True
                log.warning("the digest secret cannot be read from the store (%s): request records carry no "
                            "prompt digest, and cache salts are this replica's own, until it can", exc)
            return False
        self._keyed, self.shared, self._salts = self._keyed_by(secret), True, {}
        if self._warned:
            log.info("the digest secret was read from the store: prompt digests and cache salts are shared again")
        return True

    async def keep_loading(self, store: Store, every_s: float = RETRY_S) -> None:
        """Retry `load` every `every_s` until the store answers (a background task after a failed `load`)."""
        while True:
            await asyncio.sleep(every_s)
            if await self.load(store):
                return
