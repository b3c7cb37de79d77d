"""Router versions: what names an artifact, how a replica swaps routers, and what rollback undoes."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from gateway.config import embedded_config
from gateway.router.admin import validate
from gateway.router.artifact import Artifact, ArtifactError
from gateway.router.model import DEFAULT_ARTIFACT
from gateway.router.registry import CONFIGURED, RegistryError, RouterRegistry, serving_stack
from gateway.router.serving import ServingRouter, load_artifact, load_dir
from gateway.router.sync import RouterSync
from gateway.signal import assess
from gateway.state import MemoryStore, StoreUnavailable, router_artifact_key
from tests.support.routers import MISMATCHES, copy_default, mismatched, variant
from tests.unit.test_signal import DEPLOYMENTS

PROMPT = [{"role": "user", "content": "Prove that sqrt(2) is irrational, then generalise to sqrt(p)."}]


@pytest.fixture(scope="module")
def variant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return variant(tmp_path_factory.mktemp("routers") / "fewer-neighbours")


def test_a_router_version_is_its_name_and_content_hash(tmp_path: Path, variant_dir: Path) -> None:
    shipped = Artifact.read(DEFAULT_ARTIFACT)
    copy = Artifact.read(copy_default(tmp_path / "elsewhere"))
    assert shipped.version == f"default@{shipped.digest[:12]}"
    assert copy.digest == shipped.digest and copy.version == f"elsewhere@{shipped.digest[:12]}"
    assert Artifact.read(variant_dir).digest != shipped.digest
    assert load_dir(None).version == shipped.version
    with pytest.raises(ArtifactError, match="not a router artifact"):
        Artifact.read(tmp_path)


def test_a_stored_artifact_comes_back_only_with_its_own_hash(variant_dir: Path) -> None:
    artifact = Artifact.read(variant_dir)
    assert artifact.pack() == artifact.pack()  # same files, same bytes: stored once
    back = Artifact.unpack(artifact.pack(), artifact.name, artifact.digest)
    assert back == artifact
    with pytest.raises(ArtifactError, match="does not match its hash"):
        Artifact.unpack(artifact.pack(), artifact.name, "0" * 64)
    with pytest.raises(ArtifactError, match="unreadable"):
        Artifact.unpack(b"not a zip", artifact.name, artifact.digest)


def test_a_request_keeps_the_router_it_started_with_when_another_is_swapped_in(variant_dir: Path) -> None:
    serving = ServingRouter(load_dir(None), configured=DEFAULT_ARTIFACT)
    taken = serving.current  # what a request in flight holds
    before = assess(taken, PROMPT, DEPLOYMENTS)
    new = load_artifact(Artifact.read(variant_dir))
    old = serving.swap(new)
    assert old is taken and serving.current is new
    assert serving.version == new.version == Artifact.read(variant_dir).version != taken.version
    # the request in flight finishes on its router, with its memory; the new router has its own
    assert assess(taken, PROMPT, DEPLOYMENTS) == before and taken.hits == 1
    after = assess(serving.current, PROMPT, DEPLOYMENTS)
    assert new.hits == 0
    assert after.quality != before.quality  # the variant predicts differently, deterministically


async def test_rollback_undoes_the_last_change_down_to_the_configured_router(variant_dir: Path) -> None:
    registry = RouterRegistry(MemoryStore())
    a = Artifact.read(variant_dir)
    b = Artifact.read(copy_default(variant_dir.parent / "copy"))
    with pytest.raises(RegistryError, match="nothing to roll back"):
        await registry.rollback("ops")
    assert (await registry.promote(a, "ops")) is not None
    assert await registry.promote(a, "ops") is None  # already served: no new history entry
    await registry.promote(b, "ops")
    assert (await registry.current()).version == b.version  # type: ignore[union-attr]
    assert (await registry.rollback("ops")).version == a.version
    assert (await registry.rollback("ops")).version == CONFIGURED
    back = await registry.rollback("ops", to=b.digest[:8])  # a named version: pushes, like a promotion
    assert back.version == b.version and back.explicit
    assert (await registry.rollback("ops")).version == CONFIGURED  # undoes that
    with pytest.raises(RegistryError, match="no promoted router matches 'nope'"):
        await registry.rollback("ops", to="nope")
    with pytest.raises(RegistryError, match=f"'{b.digest[:4]}' .*; a hash prefix needs 6 or more characters$"):
        await registry.rollback("ops", to=b.digest[:4])
    stack = serving_stack(await registry.history())
    assert stack == [None]
    assert [e.action for e in await registry.history()] == ["promote", "promote", "rollback", "rollback",
                                                            "rollback", "rollback"]


async def test_a_replica_follows_promotions_and_rollbacks(variant_dir: Path) -> None:
    store = MemoryStore()
    registry = RouterRegistry(store)
    serving = ServingRouter(load_dir(None), configured=DEFAULT_ARTIFACT)
    configured = serving.version
    sync = RouterSync(serving, registry, interval_s=0.01)
    assert not await sync.check()  # nothing promoted: stays on its configured router
    entry = await registry.promote(Artifact.read(variant_dir), "ops")
    assert entry is not None
    assert await sync.check() and serving.version == entry.version
    assert not await sync.check()  # the pointer did not change: nothing loaded
    await registry.rollback("ops")
    assert await sync.check() and serving.version == configured


async def test_a_store_that_lost_the_promoted_router_gets_it_back_from_the_replicas_serving_it(
        variant_dir: Path) -> None:
    serving = ServingRouter(load_dir(None), configured=DEFAULT_ARTIFACT)
    configured = serving.version
    sync = RouterSync(serving, RouterRegistry(MemoryStore()))
    entry = await sync.registry.promote(Artifact.read(variant_dir), "ops")
    assert entry is not None
    assert await sync.check() and serving.version == entry.version
    # Redis restarted empty: no pointer, no artifact, no history. No operator rolled anything back (a
    # rollback writes a pointer naming the configured router), so the replica keeps what it serves...
    emptied = RouterRegistry(MemoryStore())
    sync.registry = emptied
    assert not await sync.check()
    assert serving.version == entry.version
    # ...and puts it back, so that a replica starting now serves it too, and a rollback still undoes it
    restored = await emptied.current()
    assert restored is not None and restored.version == entry.version and restored.action == "restored"
    started = ServingRouter(load_dir(None), configured=DEFAULT_ARTIFACT)
    assert await RouterSync(started, emptied).check() and started.version == entry.version
    assert not await sync.check()  # its own restoration is no change
    await emptied.rollback("ops")
    assert await sync.check() and serving.version == configured


async def test_a_replica_keeps_its_router_when_a_promoted_one_cannot_be_loaded(
        variant_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    registry = RouterRegistry(store)
    serving = ServingRouter(load_dir(None), configured=DEFAULT_ARTIFACT)
    before = serving.version
    entry = await registry.promote(Artifact.read(variant_dir), "ops")
    assert entry is not None and entry.digest is not None
    await store.set(router_artifact_key(entry.digest), b"damaged")
    sync = RouterSync(serving, registry)
    with caplog.at_level(logging.ERROR, logger="switchyard.router"):
        assert not await sync.check()
    assert serving.version == before
    assert "cannot be served" in caplog.text and entry.version in caplog.text


@pytest.mark.parametrize("damage", ["truncated npz", "hash_spec of another version"])
async def test_a_replica_refuses_an_intact_blob_that_is_not_a_loadable_router_once(
        variant_dir: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    """Bytes that match their hash but do not load (a truncated npz, a router.json written by another
    release) are a refusal logged once, not an exception every poll."""
    files = dict(Artifact.read(variant_dir).files)
    if damage == "truncated npz":
        files["router.npz"] = files["router.npz"][:len(files["router.npz"]) // 2]
    else:
        meta = json.loads(files["router.json"])
        meta["hash_spec"]["salt"] = 7
        files["router.json"] = json.dumps(meta).encode()
    store = MemoryStore()
    registry = RouterRegistry(store)
    entry = await registry.promote(Artifact.of("damaged", files), "ops")
    assert entry is not None
    serving = ServingRouter(load_dir(None), configured=DEFAULT_ARTIFACT)
    before = serving.version
    sync = RouterSync(serving, registry)
    with caplog.at_level(logging.ERROR, logger="switchyard.router"):
        assert not await sync.check()
        assert not await sync.check()  # the same pointer is not tried again
    assert serving.version == before
    rejected = [r for r in caplog.records if getattr(r, "event", None) == "router_rejected"]
    assert len(rejected) == 1 and entry.version in rejected[0].getMessage()
    assert "not a loadable router" in rejected[0].getMessage()


@pytest.mark.parametrize("damage", MISMATCHES)
def test_the_configured_router_gets_the_whole_artifact_check_a_promoted_one_gets(
        variant_dir: Path, tmp_path: Path, damage: str) -> None:
    """A replica's start-up router is its config's `router_artifact`, which no `router promote` looked at:
    one whose meta and arrays disagree is refused there (naming the directory), never served."""
    bad = tmp_path / "configured"
    Artifact.read(variant_dir).write(bad)
    mismatched(bad, damage)
    with pytest.raises(ArtifactError, match=f"^{re.escape(str(bad))}: "):
        load_dir(bad)


@pytest.mark.parametrize("damage", MISMATCHES)
async def test_a_replica_refuses_a_stored_artifact_whose_meta_and_arrays_disagree(
        variant_dir: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    """An artifact put in the store by another path than `router promote` (an older CLI, a hand
    edit) gets the same whole-artifact check there: the replica keeps serving what it had, says so
    once, and loads the next consistent promotion."""
    bad = tmp_path / "bad"
    Artifact.read(variant_dir).write(bad)
    mismatched(bad, damage)
    store = MemoryStore()
    registry = RouterRegistry(store)
    serving = ServingRouter(load_dir(None), configured=DEFAULT_ARTIFACT)
    before, taken = serving.version, serving.current
    entry = await registry.promote(Artifact.read(bad), "hand")  # what the registry stores, unchecked
    assert entry is not None
    sync = RouterSync(serving, registry)
    with caplog.at_level(logging.ERROR, logger="switchyard.router"):
        assert not await sync.check()
        assert not await sync.check()  # the same pointer is not tried again
    assert serving.version == before and serving.current is taken
    rejected = [r for r in caplog.records if getattr(r, "event", None) == "router_rejected"]
    assert len(rejected) == 1 and entry.version in rejected[0].getMessage(), caplog.text
    assert rejected[0].serving == before  # type: ignore[attr-defined]
    good = await registry.promote(Artifact.read(variant_dir), "ops")
    assert good is not None
    assert await sync.check() and serving.version == good.version


class _DownStore(MemoryStore):
    async def get(self, key: str) -> bytes | None:
        raise StoreUnavailable("connection refused")


async def test_a_replica_keeps_its_router_while_the_store_is_down() -> None:
    serving = ServingRouter(load_dir(None), configured=DEFAULT_ARTIFACT)
    before = serving.version
    assert not await RouterSync(serving, RouterRegistry(_DownStore())).check()
    assert serving.version == before


def test_promoting_warns_only_of_profiles_the_router_knows_under_no_spelling() -> None:
    config = embedded_config("http://127.0.0.1:9")
    deps = [d.model_copy(update={"router_profile": p}) for d, p in
            zip(config.deployments, ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-4-behemoth"), strict=False)]
    _, _, warnings = validate(DEFAULT_ARTIFACT, config.model_copy(update={"deployments": deps}))
    assert len(warnings) == 1 and "'llama-4-behemoth' is unknown to this router" in warnings[0]


def test_promoting_warns_of_a_deployment_without_a_profile_whose_name_the_router_learned() -> None:
    # `logs export` names rows by a deployment's name when it has no router_profile: a router trained on them
    # knows that name, and the deployment went on being scored by the pool mean, without a word
    config = embedded_config("http://127.0.0.1:9")
    deps = [config.deployments[0].model_copy(update={"name": "Mistral-7B-Instruct-v0.2", "router_profile": None}),
            config.deployments[1].model_copy(update={"router_profile": None})]
    _, _, warnings = validate(DEFAULT_ARTIFACT, config.model_copy(update={"deployments": deps}))
    assert warnings == ["deployment 'Mistral-7B-Instruct-v0.2' has no router_profile, so what this router learned "
                        "as 'Mistral-7B-Instruct-v0.2' is not used: it will be scored by the pool mean; set "
                        "router_profile: Mistral-7B-Instruct-v0.2 to use it"]
