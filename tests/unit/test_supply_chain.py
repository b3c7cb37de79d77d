"""The image's supply chain: a lock file with hashes that satisfies pyproject.toml, a Dockerfile
that installs only from it, before the source, on a base image pinned by digest."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.processes import ROOT

LOCK = ROOT / "requirements.lock"
DOCKERFILE = ROOT / "Dockerfile"


def _locked() -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes) from the lock's `name==version \\ --hash=...` entries."""
    out: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        head = re.match(r"([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)", block)
        if head:
            hashes = re.findall(r"--hash=sha256:(\w+)", block)
            out[canonicalize_name(head.group(1).split("[")[0])] = (head.group(2), hashes)
    return out


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def test_every_locked_package_is_pinned_with_a_hash() -> None:
    locked = _locked()
    assert len(locked) > 50
    assert all(len(h) == 64 for _, hashes in locked.values() for h in hashes)
    assert [name for name, (_, hashes) in locked.items() if not hashes] == []
    pins = [line for line in LOCK.read_text().splitlines() if line and not line.startswith((" ", "#"))]
    assert len(pins) == len(locked), "every requirement line is a name==version pin"


def test_the_lock_satisfies_every_runtime_and_build_requirement() -> None:
    project = _project()
    wanted = [Requirement(r) for r in project["dependencies"]]  # type: ignore[attr-defined]
    wanted += [Requirement(r) for r in project["optional-dependencies"]["build"]]  # type: ignore[index]
    locked = _locked()
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(locked[name][0], prereleases=True), f"{req} but the lock has {locked[name][0]}"


def test_litellm_excludes_the_compromised_releases_and_caps_the_major_version() -> None:
    dependencies: list[str] = _project()["dependencies"]  # type: ignore[assignment]
    spec = next(Requirement(r) for r in dependencies if r.startswith("litellm"))
    assert not spec.specifier.contains("1.82.7") and not spec.specifier.contains("1.82.8")
    assert not spec.specifier.contains("2.0.0")
    assert _locked()["litellm"][0] not in ("1.82.7", "1.82.8")


def test_the_test_extra_declares_the_openai_sdk_and_the_validators() -> None:
    test: list[str] = _project()["optional-dependencies"]["test"]  # type: ignore[index]
    extra = {canonicalize_name(Requirement(r).name) for r in test}
    assert {"openai", "schemathesis", "kubernetes-validate", "check-jsonschema"} <= extra


def test_the_dockerfile_installs_the_lock_with_hashes_before_copying_the_source() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert re.fullmatch(r"FROM python:3\.11-slim@sha256:[0-9a-f]{64}", lines[0])
    install = next(i for i, line in enumerate(lines) if "--require-hashes" in line)
    assert "-r requirements.lock" in lines[install] and "--no-deps" in lines[install]
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY")]
    assert [lines[i] for i in copies if i < install] == ["COPY requirements.lock ./"]
    project = next(line for line in lines if line.startswith("RUN pip install") and "requirements.lock" not in line)
    assert "--no-deps" in project, "the package itself adds no unlocked dependency"


def _docker_daemon() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not installed"
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    return None if info.returncode == 0 else "no Docker daemon answers (`docker info` fails)"


NO_DAEMON = _docker_daemon()


@pytest.mark.skipif(NO_DAEMON is not None, reason=f"the image build needs a Docker daemon: {NO_DAEMON}")
def test_the_image_builds_and_runs() -> None:
    docker = shutil.which("docker")
    assert docker is not None
    tag = "switchyard:test-build"
    built = subprocess.run([docker, "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    ran = subprocess.run([docker, "run", "--rm", tag, "switchyard", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0 and "serve" in ran.stdout
