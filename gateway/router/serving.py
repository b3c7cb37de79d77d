"""The router a replica serves: loaded with its version, checked, and swapped whole.

`ServingRouter.current` is one `RememberingRouter` (the router, its memory of recent assessments
and its version). A request reads `current` once and makes its whole decision with that object,
so a swap never mixes two routers (or one router's assessment with another's heads) in a request,
and the new router starts with an empty memory of its own. `ServingRouter.version` is where the
version being served is read (request records, spans, `/v1/route`).

Loading an artifact takes a fraction of a second of numpy work: callers on the event loop run
`load_*` in a thread and then `swap()` on the loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

from gateway.router.artifact import Artifact, ArtifactError
from gateway.router.consistency import check_artifact
from gateway.router.model import DEFAULT_ARTIFACT, Assessment, Router, load_router
from gateway.signal import RememberingRouter

# A short and a long prompt: a smoke test that the artifact loads, assesses and scores sensibly.
_SMOKE = ("What is the capital of France?",
          "Prove that the sum of the first n odd numbers is n^2, then write a Python function that checks it "
          "for n up to 1000 and explain its complexity.")


def configured_dir(router_artifact: str | None) -> Path:
    return Path(router_artifact) if router_artifact else DEFAULT_ARTIFACT


def smoke_check(router: Router, profiles: tuple[str, ...] = ()) -> None:
    """Raise ArtifactError unless the router assesses prompts and gives probabilities in [0, 1]."""
    for prompt in _SMOKE:
        try:
            a = router.assess(prompt)
            ps = [router.p_good(a, profile=p) for p in (*router.known_profiles(), *profiles)]
            ps.append(router.p_good(a, ability=0.0))
        except Exception as exc:  # any failure of a candidate router is a reason to refuse it
            raise ArtifactError(f"the router fails on a smoke prompt: {type(exc).__name__}: {exc}") from exc
        if not (0.0 <= a.difficulty <= 1.0) or not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in ps):
            raise ArtifactError("the router gives a difficulty or probability outside [0, 1] on a smoke prompt")


def load_checked(directory: str | Path) -> Router:
    """Load an artifact directory and refuse it (ArtifactError) unless it is one working router: it
    loads, its router.json and router.npz agree as a whole, and it answers the smoke prompts. What
    `router promote` runs, and what a replica runs before it swaps: a replica cannot tell how the
    bytes reached the store (an older CLI, a hand edit), so it trusts no earlier check."""
    router = load_router(directory)  # an ArtifactError that names what is wrong
    check_artifact(directory)  # what loads may still not be one router: refused before a smoke prompt
    smoke_check(router)
    return router


def load_artifact(artifact: Artifact) -> RememberingRouter:
    """Load an artifact held in memory (e.g. fetched from the store), checked, ready to swap in."""
    with tempfile.TemporaryDirectory(prefix="sy-router-") as tmp:
        router = load_checked(artifact.write(tmp))
    return RememberingRouter(router, version=artifact.version)


def load_dir(directory: str | Path | None) -> RememberingRouter:
    """Load an artifact directory (None: the shipped default), versioned by its content, and checked
    as a promoted one is (`load_checked`): the router a replica starts with is its config's, which no
    `router promote` looked at, and a broken one must stop the start-up, not be served."""
    root = configured_dir(str(directory) if directory is not None else None)
    artifact = Artifact.read(root)
    return RememberingRouter(load_checked(root), version=artifact.version)


def version_of_object(router: object) -> str:
    """A version for a router handed in as an object (embedding, tests): named by its metadata."""
    meta = getattr(router, "meta", None)
    if not meta:
        return "custom"
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()
    return f"custom@{digest[:12]}"


class ServingRouter:
    """The one mutable reference to the router being served; everything behind it is immutable."""

    __slots__ = ("configured", "configured_version", "current")

    def __init__(self, current: RememberingRouter, configured: Path | None = None) -> None:
        """`configured`: the directory `current` was loaded from, if any. With no version promoted
        the replica serves it; it is reloaded when needed rather than kept, so that a replica does
        not hold two routers in memory. Without it, `current` itself is the configured router."""
        self.current = current
        self.configured: RememberingRouter | Path = configured if configured is not None else current
        self.configured_version = current.version

    @property
    def version(self) -> str:
        return self.current.version

    @property
    def router(self) -> Router:
        return self.current.router

    def swap(self, new: RememberingRouter) -> RememberingRouter:
        """Serve `new` from now on; requests that already took `current` finish with the old one."""
        old, self.current = self.current, new
        return old

    def load_configured(self) -> RememberingRouter:
        """The configured router (blocking when it must be read from disk: call it in a thread)."""
        if isinstance(self.configured, RememberingRouter):
            return self.configured
        return load_dir(self.configured)

    def uncached(self) -> _Uncached:
        """The served router without its assessment memory, for bulk scoring (the calibration
        sample) that must not crowd live prompts out of that memory."""
        return _Uncached(self)

    # One-call conveniences (an `Assessor`), for code that makes a single synchronous call. A
    # decision that needs `assess` then `p_good` reads `current` once and uses that.
    def assess(self, text: str) -> Assessment:
        return self.current.assess(text)

    def p_good(self, a: Assessment, profile: str | None = None, ability: float | None = None) -> float:
        return self.current.p_good(a, profile, ability)


class _Uncached:
    """An `Assessor` over the raw router being served, looked up at each call."""

    __slots__ = ("serving",)

    def __init__(self, serving: ServingRouter) -> None:
        self.serving = serving

    def assess(self, text: str) -> Assessment:
        return self.serving.router.assess(text)

    def p_good(self, a: Assessment, profile: str | None = None, ability: float | None = None) -> float:
        return self.serving.router.p_good(a, profile, ability)
