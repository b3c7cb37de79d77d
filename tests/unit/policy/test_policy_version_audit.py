"""Policy versions without I/O beyond a temp folder: one audit entry per change, stored specs that read
back as the same version, the latest change winning, and the version in every request record."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from gateway.auth import Tenant
from gateway.config import embedded_config
from gateway.executor.result import CallRecord
from gateway.feedback import Completed, build_record
from gateway.keyed import Digests
from gateway.policy.loader import PolicySet, load_policy_file, spec_version
from gateway.policy.schema import PolicySpec
from gateway.policy.sources import shipped_policies_dir
from gateway.policy.versions import PolicyFollower, PolicyVersions, VersionEntry, log_entry, spec_json
from gateway.providers.base import Usage
from gateway.state import MemoryStore, policy_current_key

DEPLOYMENTS = embedded_config("http://127.0.0.1:9/v1").deployments
SMALL = "candidates:\n  - single: small\n"
LARGE = "candidates:\n  - single: large\n"


def _entry(version: str, source: str = "file reload", at: float = 1.0) -> VersionEntry:
    return VersionEntry("p", version, at, source, "host/1", "p.yaml", {"candidates": [{"single": "small"}]})


def test_replicas_loading_the_same_version_write_one_audit_entry() -> None:
    async def scenario() -> tuple[list[str], bytes | None]:
        store = MemoryStore()
        v = PolicyVersions(store)
        assert await v.record(_entry("aaa", "start-up"), change=False)
        assert not await v.record(_entry("aaa", "start-up"), change=False)  # a second replica
        assert await v.record(_entry("bbb"))
        assert not await v.record(_entry("bbb"))
        return [e.version for e in await v.history("p")], await store.get(policy_current_key("p"))

    versions, current = asyncio.run(scenario())
    assert versions == ["aaa", "bbb"]
    assert current is not None and VersionEntry.load(current).version == "bbb"


def test_a_start_up_load_never_moves_the_pointer_a_change_made() -> None:
    async def scenario() -> str:
        v = PolicyVersions(MemoryStore())
        await v.record(_entry("new"))
        await v.record(_entry("stale", "start-up", at=5.0), change=False)  # a replica restarted with an old file
        raw = await v.current_raw("p")
        assert raw is not None
        return VersionEntry.load(raw).version

    assert asyncio.run(scenario()) == "new"


def test_every_shipped_policy_reads_back_as_the_same_version_from_its_stored_spec() -> None:
    for path in sorted(shipped_policies_dir().glob("*.yaml")):
        try:
            bound = load_policy_file(path, DEPLOYMENTS)
        except Exception:  # shipped policies this config cannot bind are not served here
            continue
        assert spec_version(PolicySpec.model_validate(spec_json(bound.spec))) == bound.version, path.name


def _folder(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    path = folder / "p.yaml"
    path.write_text(text)
    later = time.time() + 2
    os.utime(path, (later, later))
    return folder


def test_a_newer_change_in_the_store_wins_over_the_local_version_and_an_older_one_does_not(tmp_path: Path) -> None:
    folder = _folder(tmp_path, SMALL)
    policies = PolicySet(folder, DEPLOYMENTS, default_policy="p")
    small = policies.policies["p"].version
    store = MemoryStore()
    follower = PolicyFollower(policies, PolicyVersions(store), shared=True)
    large_spec = PolicySpec.model_validate({"candidates": [{"single": "large"}]})

    async def scenario() -> None:
        await follower.publish()
        older = VersionEntry("p", spec_version(large_spec), policies.since["p"] - 10, "file reload", "other/2",
                             None, spec_json(large_spec))
        await store.set(policy_current_key("p"), older.dump())
        await follower.follow()
        assert policies.policies["p"].version == small  # a change older than ours does not win
        newer = replace(older, at=time.time() + 1)
        await store.set(policy_current_key("p"), newer.dump())
        await follower.follow()

    asyncio.run(scenario())
    assert policies.policies["p"].version == spec_version(large_spec)
    assert policies.policies["p"].plans[0].label == "single:large"


def test_a_file_rewritten_unchanged_does_not_take_back_a_version_followed_from_the_store(tmp_path: Path) -> None:
    """A replica following a rollback made elsewhere (its own folder still holds the version before) put its
    file's version back in force, and moved every replica to it, whenever the file was rewritten with the
    same content: a touch, a copy of the folder, a ConfigMap whose symlinks are swapped when another policy
    is edited. Only an edit of the file is a change."""
    folder = _folder(tmp_path, SMALL)
    policies = PolicySet(folder, DEPLOYMENTS, default_policy="p")
    store = MemoryStore()
    follower = PolicyFollower(policies, PolicyVersions(store), shared=True)
    large_spec = PolicySpec.model_validate({"candidates": [{"single": "large"}]})
    rolled_back = spec_version(large_spec)

    async def scenario() -> None:
        await follower.publish()
        rollback = VersionEntry("p", rolled_back, time.time() + 1, "cli rollback", "ops@host", None,
                                spec_json(large_spec))
        await store.set(policy_current_key("p"), rollback.dump())
        await follower.follow()
        assert policies.policies["p"].version == rolled_back
        _folder(tmp_path, SMALL)  # the same content, written again
        await follower.step()
        await follower.step()

    asyncio.run(scenario())
    assert policies.policies["p"].version == rolled_back
    current = asyncio.run(store.get(policy_current_key("p")))
    assert current is not None and VersionEntry.load(current).version == rolled_back
    _folder(tmp_path, "description: an edit\n" + SMALL)  # an edit is a change, and wins
    asyncio.run(follower.step())
    assert policies.policies["p"].plans[0].label == "single:small"


def test_a_file_edit_is_audited_once_with_its_spec_and_source(tmp_path: Path) -> None:
    folder = _folder(tmp_path, SMALL)
    policies = PolicySet(folder, DEPLOYMENTS, default_policy="p")
    store = MemoryStore()
    follower = PolicyFollower(policies, PolicyVersions(store), shared=False)

    async def scenario() -> list[VersionEntry]:
        await follower.publish()
        _folder(tmp_path, LARGE)
        await follower.step()
        await follower.step()  # nothing changed since: nothing more recorded
        return await follower.versions.history("p")

    entries = asyncio.run(scenario())
    assert [e.source for e in entries] == ["start-up", "file reload"]
    assert entries[-1].spec == {"candidates": [{"single": "large"}]}
    assert entries[-1].path == str(folder / "p.yaml")


def test_the_request_record_names_the_policy_version_that_decided() -> None:
    completed = Completed("r1", 1.0, Tenant("t"), "router/p", "p", "single:small", "small",
                          [{"role": "user", "content": "hi"}], None, (CallRecord("small", Usage(10, 5), 0.001, 0.1),),
                          10, "default", None, "0123456789ab")
    assert build_record(completed, Digests())["policy_version"] == "0123456789ab"


def test_a_version_put_in_force_is_a_log_line_with_an_event(caplog: pytest.LogCaptureFixture) -> None:
    # as every other structured line: an operator's query by `event` finds the versions put in force
    with caplog.at_level(logging.INFO, logger="switchyard.policy"):
        log_entry(_entry("aaa", "start-up"), "policy p version aaa in force (start-up)")
    (record,) = caplog.records
    assert (record.event, record.policy, record.policy_version, record.source) == (  # type: ignore[attr-defined]
        "policy_version", "p", "aaa", "start-up")


def test_a_rollback_to_a_prefix_of_two_versions_is_refused_naming_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two versions that begin with the same four digits: the rollback took the later one, which nobody named."""
    from gateway.policy import admin

    specs = [PolicySpec.model_validate({"description": d, "candidates": [{"single": "small"}]})
             for d in ("v176", "v470", "v0")]
    first, second, now = (spec_version(s) for s in specs)
    assert first[:4] == second[:4] == "28d7" and first != second
    store = MemoryStore()
    for at, (spec, version) in enumerate(zip(specs, (first, second, now), strict=True), 1):
        entry = VersionEntry("p", version, float(at), "file reload", "host/1", "p.yaml", spec_json(spec))
        asyncio.run(PolicyVersions(store).record(entry))

    async def with_versions(url: str, work: Callable[[PolicyVersions], Awaitable[object]]) -> object:
        return await work(PolicyVersions(store))

    monkeypatch.setattr(admin, "_with_versions", with_versions)
    monkeypatch.setenv("SWITCHYARD_REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.delenv("SWITCHYARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "routing_policies").mkdir()
    assert admin.rollback("p", "28d7", None, by="ops@test") == 1
    err = capsys.readouterr().err
    assert first in err and second in err and "more than one version" in err
    assert admin.rollback("p", "28d", None, by="ops@test") == 1  # too short to be a prefix: said so
    assert "needs 4 or more of its characters" in capsys.readouterr().err
    assert not (tmp_path / "routing_policies" / "p.yaml").exists()
    assert admin.rollback("p", first[:6], None, by="ops@test") == 0  # enough digits to name one
    written = yaml.safe_load((tmp_path / "routing_policies" / "p.yaml").read_text())
    assert written["description"] == "v176"


def test_a_store_that_lost_the_pointer_gets_back_the_version_in_force_not_a_restarted_replicas_file(
        tmp_path: Path) -> None:
    """A rollback followed by a replica whose own file still held the later version; then Redis restarted
    empty and another replica restarted with that file: its start-up set the pointer, as if it were the
    first replica, and the running replica followed it, undoing the rollback it served."""
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    elsewhere = PolicySet(_folder(tmp_path / "c", LARGE), DEPLOYMENTS, default_policy="p")  # follows nothing yet
    running = PolicySet(_folder(tmp_path / "a", LARGE), DEPLOYMENTS, default_policy="p")
    store = MemoryStore()
    follower = PolicyFollower(running, PolicyVersions(store), shared=True)
    small_spec = PolicySpec.model_validate({"candidates": [{"single": "small"}]})
    small = spec_version(small_spec)

    async def scenario() -> None:
        await follower.step()
        rollback = VersionEntry("p", small, time.time(), "cli rollback", "ops@host", None, spec_json(small_spec))
        await PolicyVersions(store).record(rollback)
        await follower.step()
        assert running.policies["p"].version == small
        follower.versions = emptied = PolicyVersions(MemoryStore())  # the store restarted empty
        await follower.step()
        restarted = PolicySet(_folder(tmp_path / "b", LARGE), DEPLOYMENTS, default_policy="p")
        await PolicyFollower(restarted, emptied, shared=True).step()
        await follower.step()
        assert running.policies["p"].version == small
        first = (await emptied.history("p"))[0]
        assert (first.version, first.source) == (small, "restored")
        # nor does the restored pointer move a replica that served another version: no one changed anything
        await PolicyFollower(elsewhere, emptied, shared=True).step()
        assert elsewhere.policies["p"].version != small

    asyncio.run(scenario())


def test_a_rollback_to_the_version_a_replica_started_with_is_audited_with_its_author() -> None:
    """A replica restarted with an older file appends its start-up (the pointer stays); a rollback to that
    version then moved the pointer but wrote no entry, so the history showed no rollback and no author."""
    async def scenario() -> list[tuple[str, str, str]]:
        v = PolicyVersions(MemoryStore())
        await v.record(_entry("old", "start-up"), change=False)
        await v.record(_entry("new"))
        await v.record(_entry("old", "start-up", at=5.0), change=False)  # a replica restarted with the old file
        await v.record(replace(_entry("old", "cli rollback", at=6.0), by="ops@host"))
        raw = await v.current_raw("p")
        assert raw is not None and VersionEntry.load(raw).source == "cli rollback"
        return [(e.version, e.source, e.by) for e in await v.history("p")]

    assert asyncio.run(scenario())[-2:] == [("old", "start-up", "host/1"), ("old", "cli rollback", "ops@host")]


def test_a_rollback_to_a_configured_folder_that_is_not_there_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """It said to set policies_dir, which the config did set (to a folder of another host)."""
    from gateway.policy import admin

    missing = tmp_path / "elsewhere"
    config = tmp_path / "gw.yaml"
    config.write_text(f"redis_url: redis://127.0.0.1:9/0\npolicies_dir: {missing}\n"
                      "deployments:\n  - {name: small, model: openai/m, api_base: 'http://127.0.0.1:9/v1'}\n")
    monkeypatch.delenv("SWITCHYARD_POLICIES_DIR", raising=False)
    assert admin.rollback("p", "28d7", str(config)) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "set policies_dir" not in err


def test_a_rollback_whose_file_cannot_be_written_says_it_is_in_force_all_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The change was recorded (every replica followed it) before the file was written; a read-only folder
    (a ConfigMap's) then ended the command with `[Errno 30] Read-only file system` and exit 1, as though
    nothing had been rolled back."""
    from gateway.policy import admin

    specs = [PolicySpec.model_validate({"description": d, "candidates": [{"single": "small"}]}) for d in ("a", "b")]
    store = MemoryStore()
    for at, spec in enumerate(specs, 1):
        entry = VersionEntry("p", spec_version(spec), float(at), "file reload", "host/1", "p.yaml", spec_json(spec))
        asyncio.run(PolicyVersions(store).record(entry))

    async def with_versions(url: str, work: Callable[[PolicyVersions], Awaitable[object]]) -> object:
        return await work(PolicyVersions(store))

    def read_only(path: Path, text: str) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(admin, "_with_versions", with_versions)
    monkeypatch.setattr(admin, "write_atomically", read_only)
    monkeypatch.setenv("SWITCHYARD_REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.delenv("SWITCHYARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "routing_policies").mkdir()
    first = spec_version(specs[0])
    assert admin.rollback("p", first, None, by="ops@test") == 0
    out, err = capsys.readouterr()
    assert f"version {first} in force" in out and "every replica" in out
    assert "could not be written (Read-only file system)" in err
    raw = asyncio.run(store.get(policy_current_key("p")))
    assert raw is not None and VersionEntry.load(raw).version == first


def test_a_replica_starting_from_a_file_a_rollback_replaced_serves_the_rolled_back_version(tmp_path: Path) -> None:
    """A rollback into a folder it cannot write (a read-only ConfigMap) leaves the replicas' files on the
    version rolled back from: a replica started afterwards (a rolling restart, a scale-up) served that file's
    version beside the running replicas serving the rolled-back one."""
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    running = PolicySet(_folder(tmp_path / "a", LARGE), DEPLOYMENTS, default_policy="p")
    store = MemoryStore()
    small_spec = PolicySpec.model_validate({"candidates": [{"single": "small"}]})
    small = spec_version(small_spec)

    async def scenario() -> None:
        await PolicyFollower(running, PolicyVersions(store), shared=True).step()
        await asyncio.sleep(0.01)
        rollback = VersionEntry("p", small, time.time(), "cli rollback", "ops@host", None, spec_json(small_spec))
        await PolicyVersions(store).record(rollback)
        await asyncio.sleep(0.01)
        started = PolicySet(_folder(tmp_path / "b", LARGE), DEPLOYMENTS, default_policy="p")
        await PolicyFollower(started, PolicyVersions(store), shared=True).step()
        assert started.policies["p"].version == small
        # a file whose version was never in force before the change is an edit deployed since: it is served
        medium = "candidates:\n  - single: small\n  - single: large\n"
        edited = PolicySet(_folder(tmp_path / "c", medium), DEPLOYMENTS, default_policy="p")
        await PolicyFollower(edited, PolicyVersions(store), shared=True).step()
        assert edited.policies["p"].version not in (small, running.policies["p"].version)

    asyncio.run(scenario())
