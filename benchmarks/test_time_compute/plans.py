"""The candidate plans ("arms") the benchmark compares, the deployment catalog, and router signals.

An arm knows how to ask the gateway's real estimator for q̂/ĉ (`gateway.policy.estimate`) and how
to replay itself on a recorded row. Votes are `BestOfN` plans; agreement cascades whose first step
is several *different* small models are not expressible as a `Cascade` plan yet (its agreement step
samples one deployment), so they use the estimator's `estimate_cascade`, which `Cascade` also uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from benchmarks.test_time_compute.data import Replay, Row, replay_cascade, replay_single, replay_vote
from gateway.config import DeploymentConfig
from gateway.plans import BestOfN, Single
from gateway.plans.cascade import estimate_cascade
from gateway.policy.estimate import Catalog, Estimate, estimate
from gateway.providers.pricing import prices_for
from gateway.router import Router
from gateway.signal import RouteSignal

LLAMA8 = "Meta-Llama-3.1-8B-Instruct"
LLAMA70 = "Meta-Llama-3.1-70B-Instruct"
MATHSTRAL = "mathstral-7B"
PHI3 = "Phi-3-mini-4k-instruct"
FLASH = "gemini-1.5-flash-002"
PRO = "gemini-1.5-pro-002"
SMALL = (
    LLAMA8,
    MATHSTRAL,
    PHI3,
    "Meta-Llama-3-8B",
    "gemma-7b",
    "Qwen1.5-7B-Chat",
    "Mistral-7B-Instruct-v0.2",
    "Yi-6B-Chat",
)
LARGE_TIERS = {
    LLAMA70,
    PRO,
    "Meta-Llama-3-70B",
    "Meta-Llama-3.1-70B",
    "Llama-2-70b-hf",
    "Qwen1.5-110B",
    "Qwen1.5-72B-Chat",
    "jamba-1.5-large",
    "Yi-34B",
    "Mixtral-8x7B-Instruct-v0.1",
    "Mixtral-8x7B-v0.1",
    "c4ai-command-r-v01",
}

# Member sets, best member first (ties go to the earliest member, so order matters).
VOTE_SETS: dict[str, tuple[str, ...]] = {
    "v3-math": (LLAMA8, MATHSTRAL, PHI3),
    "v3-llama": (LLAMA8, MATHSTRAL, "Meta-Llama-3-8B"),
    "v3-chat": (LLAMA8, "Qwen1.5-7B-Chat", "Mistral-7B-Instruct-v0.2"),
    "v5": (LLAMA8, MATHSTRAL, PHI3, "Meta-Llama-3-8B", "gemma-7b"),
    "v2": (LLAMA8, MATHSTRAL),
}
FLASH_SET = (FLASH, LLAMA8, MATHSTRAL)


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    kind: str  # "single" | "vote" | "cascade"
    members: tuple[str, ...]
    escalate_to: str | None = None
    threshold: float = 1.0

    @property
    def models(self) -> tuple[str, ...]:
        return self.members + ((self.escalate_to,) if self.escalate_to else ())

    def estimate(self, signal: RouteSignal, catalog: Catalog) -> Estimate:
        if self.kind == "single":
            return estimate(Single(self.members[0]), signal, catalog, {})
        if self.kind == "vote":
            return estimate(BestOfN(self.members), signal, catalog, {})
        assert self.escalate_to is not None
        return estimate_cascade([self.members, (self.escalate_to,)], self.threshold, signal, catalog, {})

    def replay(self, row: Row) -> Replay:
        if self.kind == "single":
            return replay_single(row, self.members[0])
        if self.kind == "vote":
            return replay_vote(row, self.members)
        assert self.escalate_to is not None
        return replay_cascade(row, self.members, self.escalate_to, self.threshold)


def singles(models: Iterable[str]) -> list[Arm]:
    return [Arm(m, "single", (m,)) for m in models]


def vote(name: str, members: tuple[str, ...]) -> Arm:
    return Arm(f"vote:{name}", "vote", members)


def cascade(name: str, members: tuple[str, ...], large: str, threshold: float) -> Arm:
    short = "70b" if large == LLAMA70 else "pro" if large == PRO else large
    return Arm(f"cascade:{name}>{short}@{threshold:g}", "cascade", members, large, threshold)


def ttc_arms(with_gemini: bool) -> list[Arm]:
    """Votes and agreement cascades. 0.6 = at least 2 of 3 (3 of 5); 1.0 = unanimous."""
    arms = [vote(n, m) for n, m in VOTE_SETS.items() if n != "v2"]
    arms += [cascade("v3-math", VOTE_SETS["v3-math"], LLAMA70, t) for t in (0.6, 1.0)]
    arms += [cascade("v5", VOTE_SETS["v5"], LLAMA70, t) for t in (0.6, 0.8, 1.0)]
    arms += [cascade("v2", VOTE_SETS["v2"], LLAMA70, 1.0)]
    if with_gemini:
        arms += [vote("v3-flash", FLASH_SET)]
        arms += [cascade("v3-flash", FLASH_SET, PRO, t) for t in (0.6, 1.0)]
        arms += [cascade("v3-math", VOTE_SETS["v3-math"], PRO, 1.0)]
    return arms


def build_catalog(models: Sequence[str], prices: dict[str, dict[str, float]], router: Router) -> Catalog:
    deployments = [
        DeploymentConfig(
            name=m,
            model=f"openai/{m}",
            tier="large" if m in LARGE_TIERS else "small",
            price=prices[m],
            router_profile=m,
            expected_output_tokens=max(1, round(router.expected_output_tokens(m) or 256)),
        )
        for m in models
    ]
    return Catalog({d.name: d for d in deployments}, prices_for(deployments))


def assess_rows(router: Router, rows: Sequence[Row], models: Sequence[str], desc: str) -> list[RouteSignal]:
    """One router assessment per prompt (cached by the caller), q̂ for every model of the catalog."""
    out = []
    for row in tqdm(rows, desc=desc, unit="prompt", leave=False):
        a = router.assess(row["prompt"])
        quality = {m: router.p_good(a, profile=m) for m in models}
        out.append(RouteSignal(a.difficulty, a.category, quality, int(row["prompt_tokens"]), a.features))
    return out
