"""Read policy files, validate them, bind their names to the configured deployments, reload on change.

Validation errors name the file and the field:
`cost-saver.yaml: candidates[1].single 'huge' is not a deployment or tier (small, large)`.
Each bound policy carries a `version` (a hash of its validated content), so whatever was decided
under one version (cached answers) is never taken for a decision of another.
A file that turns bad while the gateway runs is reported and its last good version stays in force,
so a typo never drops traffic. A deleted file unloads its policy (or brings the shipped version of it
back), except the default policy's, which keeps its last good version with an error in the log.
Every version that comes into force is queued in `loaded` (with where it came from) for
`gateway.policy.versions` to audit and publish off the request path; `adopt` puts a spec read from
the shared store in force.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from pydantic import ValidationError

from gateway.config import DeploymentConfig, describe_validation_error, read_yaml
from gateway.errors import ConfigError
from gateway.plans import Plan, Shadow
from gateway.policy.schema import CandidateSpec, PolicySpec
from gateway.policy.sources import policy_files, policy_sources, same_name, two_files

log = logging.getLogger("switchyard.policy")


@dataclass(frozen=True, slots=True)
class BoundPolicy:
    name: str
    source: str
    spec: PolicySpec
    plans: tuple[Plan, ...]
    allowed: frozenset[str] | None  # constraints.allowed_deployments with tiers expanded
    version: str = ""  # content hash of the validated spec: an edited policy is a new version
    shadow: Shadow | None = None  # `shadow:` with its names bound to deployments


@dataclass(frozen=True, slots=True)
class Loaded:
    """A version that came into force from a file: what the audit records."""

    policy: BoundPolicy
    path: Path
    source: str  # "start-up" | "file reload" | "file deleted, shipped version back"
    at: float


@dataclass(frozen=True, slots=True)
class Unloaded:
    """A policy that went out of force with its deleted file: the audit records that too, or its
    history would show the last version as in force."""

    name: str
    path: Path
    at: float


def spec_version(spec: PolicySpec) -> str:
    """12 hex digits of the sha256 of the spec's canonical JSON: equal for equal policies, whatever
    the file's formatting or key order, and different after any edit that changes a value."""
    canonical = orjson.dumps(spec.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]


def parse_policy(path: Path) -> PolicySpec:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected a mapping at the top level")
    try:
        spec = PolicySpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path.name, exc)) from None
    if spec.name is not None and spec.name != path.stem:
        raise ConfigError(f"{path.name}: name: '{spec.name}' must match the file name '{path.stem}'")
    return spec


class _Names:
    """Resolves a name in a policy to deployments: a deployment name first, else every one of a tier."""

    def __init__(self, source: str, spec: PolicySpec, deployments: Sequence[DeploymentConfig]) -> None:
        self.source = source
        self.spec = spec
        self.by_name = {d.name: d for d in deployments}
        self.tiers: dict[str, list[str]] = {}
        # constraints.allowed_deployments, expanded: a fallback it leaves out is no fallback of this
        # policy (a single plan's fallbacks, and its hedge, are calls of the plan; None: all allowed)
        self.allowed: frozenset[str] | None = None
        for d in deployments:
            self.tiers.setdefault(d.tier, []).append(d.name)

    def resolve(self, name: str, where: str) -> list[str]:
        if name in self.by_name:
            return [name]
        if name in self.tiers:
            return self.tiers[name]
        known = ", ".join(sorted(set(self.by_name) | set(self.tiers)))
        raise ConfigError(f"{self.source}: {where} '{name}' is not a deployment or tier ({known})")

    def one(self, name: str, where: str) -> str:
        return self.resolve(name, where)[0]

    def check_fallbacks(self) -> None:
        """Every name in `fallbacks:`, keys included, is a deployment or tier: only the keys of the
        deployments a single plan calls were ever looked up, so a typo (`smal: [large]`) left that
        deployment without its fallback and the file passed every check."""
        for key, listed in self.spec.fallbacks.items():
            self.resolve(key, "fallbacks")
            for i, name in enumerate(listed):
                self.resolve(name, f"fallbacks.{key}[{i}]")

    def fallbacks(self, deployment: str) -> tuple[str, ...]:
        """The policy's `fallbacks:` for this deployment (else for its tier), bound, without itself."""
        fallbacks = self.spec.fallbacks
        tier = self.by_name[deployment].tier
        key = deployment if deployment in fallbacks else tier  # its own entry, even an empty one, over its tier's
        listed = fallbacks.get(key) or []
        out: list[str] = []
        for i, name in enumerate(listed):
            out += [d for d in self.resolve(name, f"fallbacks.{key}[{i}]") if d != deployment and d not in out]
        return tuple(out) if self.allowed is None else tuple(d for d in out if d in self.allowed)


def _bind_candidate(c: CandidateSpec, i: int, names: _Names) -> list[Plan]:
    kind, spec = c.kind()
    return kind.bind(spec, f"candidates[{i}]", names)


def bind_policy(name: str, source: str, spec: PolicySpec,
                deployments: Sequence[DeploymentConfig]) -> BoundPolicy:
    names = _Names(source, spec, deployments)
    names.check_fallbacks()
    allowed = None
    if spec.constraints.allowed_deployments is not None:
        allowed = names.allowed = frozenset(d for i, a in enumerate(spec.constraints.allowed_deployments)
                                            for d in names.resolve(a, f"constraints.allowed_deployments[{i}]"))
    plans: list[Plan] = []
    for i, candidate in enumerate(spec.candidates):
        plans += [p for p in _bind_candidate(candidate, i, names) if p not in plans]
    if allowed is not None and all(any(d not in allowed for d in p.deployments) for p in plans):
        # every request would be a 422: a mistake, refused like a name that is not a deployment
        listed = ", ".join(sorted(allowed))
        calls = ", ".join(f"{p.label} calls {', '.join(d for d in p.deployments if d not in allowed)}" for p in plans)
        raise ConfigError(f"{source}: constraints.allowed_deployments ({listed}) leaves no candidate: {calls}")
    shadow = None
    if spec.shadow is not None:
        s = spec.shadow
        shadow = Shadow(s.rate, names.one(s.against, "shadow.against"),
                        names.one(s.judge, "shadow.judge") if s.judge else None)
    return BoundPolicy(name, source, spec, tuple(plans), allowed, spec_version(spec), shadow)


def load_policy_file(path: Path, deployments: Sequence[DeploymentConfig]) -> BoundPolicy:
    return bind_policy(path.stem, path.name, parse_policy(path), deployments)


Stamp = tuple[int, int, int]


def stamp(path: Path) -> Stamp:
    """What tells a policy file changed: its modification time, size and inode. The time alone missed a
    file rewritten within one tick of the file system's clock (a truncate-and-write read in between)."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size, st.st_ino


class PolicySet:
    """The policies in force. Reads are a dict lookup; a reload swaps the whole mapping at once.

    `folder` is the user's folder (watched for edits), `shipped` the policies that come with the
    package, overridden by name (see `gateway.policy.sources`). Shipped policies this config cannot
    bind are skipped with one warning; a bad file of the user's is fatal at start-up.
    """

    def __init__(self, folder: Path | None, deployments: Sequence[DeploymentConfig], *,
                 shipped: Path | None = None, default_policy: str | None = None,
                 kept: Sequence[str] = ()) -> None:
        self.folder = folder
        self.shipped = shipped
        self.default_policy = default_policy  # never unloaded: requests without a policy need it
        # never unloaded either: the default policy and the tenants' own defaults (`kept`), which their
        # `auto` and pinned calls use
        self.kept = {default_policy, *kept} - {None}
        self._deployments = list(deployments)
        self._mtimes: dict[Path, Stamp] = {}  # each file's `stamp` when last read
        # each file's version when last put in force: a file rewritten with the same content (touched, copied
        # over, a ConfigMap's symlinks swapped for an edit of another file) is no edit, and must not take back
        # a version this replica follows from the store (a rollback made elsewhere)
        self._read: dict[Path, str] = {}
        self.policies: dict[str, BoundPolicy] = {}
        self.since: dict[str, float] = {}  # policy → when its version in force came into force (unix time)
        self.loaded: list[Loaded | Unloaded] = []  # drained by the version follower, on the event loop
        self.skipped: dict[str, str] = {}  # shipped policy → why this config cannot bind it
        errors = []
        for name, source in policy_sources(folder, shipped).items():
            try:
                self._load(source.path, "start-up")
            except ConfigError as exc:
                if source.shipped:
                    self.skipped[name] = str(exc)
                else:
                    errors.append(str(exc))
        if errors:
            raise ConfigError("\n".join(errors))
        if self.skipped:
            log.warning("shipped policies skipped, they name deployments or tiers this config lacks: %s",
                        ", ".join(sorted(self.skipped)))
        if not self.policies:
            raise ConfigError("\n".join([f"{folder or shipped}: no usable policy files (*.yaml)",
                                         *self.skipped.values()]))

    def _load(self, path: Path, source: str = "file reload", *, if_edited: bool = False) -> bool:
        """Put the file's policy in force; with `if_edited`, only when its content changed since it was
        last put in force (False: the same version, nothing done)."""
        mtime = stamp(path)
        bound = load_policy_file(path, self._deployments)
        self._mtimes[path] = mtime
        if if_edited and self._read.get(path) == bound.version:
            return False
        self._read[path] = bound.version
        self.policies = {**self.policies, bound.name: bound}
        now = time.time()
        self.since[bound.name] = now
        self.loaded.append(Loaded(bound, path, source, now))
        return True

    def adopt(self, name: str, spec: PolicySpec, at: float) -> BoundPolicy:
        """Put a spec in force that another replica (or the CLI) published; ConfigError when this
        replica's deployments cannot bind it."""
        bound = bind_policy(name, f"{name} (shared store)", spec, self._deployments)
        self.policies = {**self.policies, name: bound}
        self.since[name] = at
        return bound

    def get(self, name: str) -> BoundPolicy | None:
        return self.policies.get(name)

    def reload_changed(self) -> list[str]:
        """Reload files whose mtime moved or that were deleted; return what changed.

        Bad files keep their last good version.
        """
        changed = []
        present = set(policy_files(self.folder)) if self.folder is not None and self.folder.is_dir() else set()
        twice = same_name(sorted(present))
        for path in sorted(present):
            # A refusal is noted at the file's time from before it was read, never a later one: a file
            # written in place and finished while its half-written version was being refused is read again.
            seen: Stamp = (0, 0, 0)
            try:
                seen = stamp(path)
                if self._mtimes.get(path) == seen:
                    continue
                if path.stem in twice:  # which one is in force must not depend on which was read last
                    self._mtimes[path] = seen
                    raise ConfigError(two_files(path.stem, twice[path.stem]))
                if not self._load(path, if_edited=True):
                    continue
                changed.append(path.stem)
                log.info("policy %s reloaded from %s", path.stem, path.name, extra={
                    "event": "policy_reload", "policy": path.stem, "file": path.name,
                    "version": self.policies[path.stem].version})
            except (ConfigError, OSError) as exc:
                self._mtimes[path] = seen
                log.error("policy file rejected, keeping the last good version:\n%s", exc, extra={
                    "event": "policy_rejected", "policy": path.stem, "file": path.name, "error": str(exc)})
        for path in sorted(p for p in self._mtimes if p.parent == self.folder and p not in present):
            del self._mtimes[path]
            self._read.pop(path, None)
            left = [p for p in present if p.stem == path.stem]
            if left:  # another file of the name is left: it is read (again) on the next pass, not forgotten
                for other in left:
                    self._mtimes.pop(other, None)
                    self._read.pop(other, None)
            elif self._forget(path):
                changed.append(path.stem)
        return changed

    def _forget(self, path: Path) -> bool:
        """A deleted file: the shipped version takes over, else the policy goes (never the default)."""
        name = path.stem
        shipped = next((p for p in policy_files(self.shipped) if p.stem == name), None) \
            if self.shipped is not None and self.shipped.is_dir() else None
        if shipped is not None and shipped != path:
            try:
                self._load(shipped, "file deleted, shipped version back")
                log.info("policy %s: %s was deleted, the shipped version is in force again", name, path,
                         extra={"event": "policy_reload", "policy": name, "file": str(shipped),
                                "version": self.policies[name].version})
                return True
            except ConfigError as exc:
                log.debug("shipped policy %s does not bind: %s", name, exc)
        if name in self.kept:
            log.error("policy file %s was deleted, but %s is a default policy: keeping its last good version",
                      path, name, extra={"event": "policy_rejected", "policy": name, "file": path.name,
                                         "error": "deleted, but it is a default policy"})
            return False
        self.policies = {k: v for k, v in self.policies.items() if k != name}
        self.loaded.append(Unloaded(name, path, time.time()))
        log.info("policy %s unloaded: %s was deleted", name, path,
                 extra={"event": "policy_unloaded", "policy": name, "file": path.name})
        return True
