"""RouteSignal: what the router says about one request, computed on the event loop without network."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import DeploymentConfig
from gateway.messages import routing_counts
from gateway.router import Assessment, Router


@dataclass(frozen=True, slots=True)
class RouteSignal:
    difficulty: float
    category: str
    quality: Mapping[str, float]  # predicted P(good answer) per deployment
    prompt_tokens: int            # counted by gateway.messages: cost prediction, caps, reservations
    features: Mapping[str, float]
    audio_tokens: int = 0         # of prompt_tokens, the audio parts' (priced at the audio rate)


class Assessor(Protocol):
    def assess(self, text: str) -> Assessment: ...
    def p_good(self, a: Assessment, profile: str | None = None, ability: float | None = None) -> float: ...


_KEYED_AS_IS = 256  # characters: 4,096 such texts of emoji hold at most 4 MB


class RememberingRouter:
    """The router with a bounded memory of recent prompts' assessments.

    Assessing is the largest per-request cost of routing (hashing n-grams, the neighbour
    search); a prompt seen recently (templates, retries, evaluation sets) is routed for the cost
    of a dict lookup. Assessments are pure functions of the text, so remembering them is exact.
    The memory belongs to one router: a new router (`gateway.router.serving`) comes with its own.
    `version` names the artifact it was loaded from (`gateway.router.artifact`).

    Each tenant's prompts are remembered for that tenant alone (`recall` keys on the tenant too): a
    remembered prompt is routed milliseconds sooner, so a shared memory would tell one tenant, by
    timing alone, whether another had just sent a given prompt.

    The memory is keyed by a digest of a long text, not the text: routed text runs to 12,000 characters
    (`messages.MAX_ROUTER_CHARS`), so 4,096 remembered prompts of emoji held 216 MB per worker that
    any caller could fill; by digest they hold 19 MB whatever was sent (measured with tracemalloc).
    """

    def __init__(self, router: Router, size: int = 4096, version: str = "unversioned") -> None:
        self.router = router
        self.version = version
        self.size = size
        self.hits = 0
        # (tenant, digest) -> assessment, least recently used first (a dict keeps insertion order)
        self._kept: dict[tuple[str, str | bytes], Assessment] = {}
        self.p_good = router.p_good

    def recall(self, tenant: str, text: str) -> Assessment:
        """`tenant`'s assessment of `text`, from memory when this worker assessed it lately."""
        # A short text is its own key (a digest would cost more than the lookup it keys); a text never equals
        # a digest (str and bytes), so the two kinds of key cannot collide.
        key = (tenant, text if len(text) <= _KEYED_AS_IS else
               hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest())
        kept = self._kept.pop(key, None)
        if kept is not None:
            self.hits += 1
        else:
            kept = self.router.assess(text)
            if len(self._kept) >= self.size:
                del self._kept[next(iter(self._kept))]
        self._kept[key] = kept
        return kept

    def assess(self, text: str) -> Assessment:
        """An `Assessor` for prompts of no tenant (the command line, tests)."""
        return self.recall("", text)

    def of(self, tenant: str) -> TenantAssessor:
        """An `Assessor` whose memory is `tenant`'s own."""
        return TenantAssessor(self, tenant)


@dataclass(slots=True)
class TenantAssessor:
    """One tenant's view of a `RememberingRouter` (built per request: not frozen, which costs more)."""

    remembering: RememberingRouter
    tenant: str

    def assess(self, text: str) -> Assessment:
        return self.remembering.recall(self.tenant, text)

    def p_good(self, a: Assessment, profile: str | None = None, ability: float | None = None) -> float:
        return self.remembering.p_good(a, profile, ability)


def assess(router: Assessor, messages: Sequence[Mapping[str, Any]],
           deployments: Sequence[DeploymentConfig]) -> RouteSignal:
    text, prompt_tokens, audio = routing_counts(messages)
    a: Assessment = router.assess(text)
    quality = {d.name: router.p_good(a, profile=d.router_profile, ability=d.ability) for d in deployments}
    return RouteSignal(a.difficulty, a.category, quality, prompt_tokens, a.features, audio)
