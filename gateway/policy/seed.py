"""The start-up prior of target policies, and scoring any traffic into a sketch.

`traffic_sample.jsonl.gz` (shipped in the package) holds a few hundred prompts drawn at random
from the train splits of the five shared routing files (`draw_sample`), plus everyday chat written
for it (greetings, thanks, short factual questions, small writing tasks) that the benchmark files
lack. At start-up the serving router assesses them once (in a thread, about half a second); each
target policy's prior is then its decisions on them, which costs a few milliseconds a policy.
"""

from __future__ import annotations

import gzip
import logging
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway.config import DeploymentConfig
from gateway.errors import ConstraintUnsatisfiable
from gateway.policy.calibration import Sketch
from gateway.policy.decide import decide
from gateway.policy.estimate import Catalog
from gateway.policy.loader import BoundPolicy
from gateway.providers.health import LiveView
from gateway.signal import Assessor, RouteSignal, assess

log = logging.getLogger("switchyard.calibration")

SAMPLE = Path(__file__).resolve().parent / "traffic_sample.jsonl.gz"
SHARED_FILES = ("arena_chat", "cruxeval_code", "llmrouter_mixed", "mmlu_pro", "theoremqa_stem")
_MAX_CHARS = 8000


def load_sample(path: Path = SAMPLE) -> list[str]:
    with gzip.open(path, "rb") as f:
        return [orjson.loads(line)["prompt"] for line in f if line.strip()]


def sketch_of(signals: Iterable[RouteSignal], policy: BoundPolicy, catalog: Catalog) -> Sketch:
    """The policy's decisions on these requests, as a sketch (no live state, no threshold)."""
    sketch = Sketch()
    for signal in signals:
        try:
            routing = decide(policy, signal, catalog, LiveView()).routing
        except ConstraintUnsatisfiable:
            continue
        if routing is not None:
            sketch.add(routing.score, routing.cheap.estimate.quality, routing.strong.estimate.quality,
                       routing.cheap.estimate.cost_usd, routing.strong.estimate.cost_usd)
    return sketch


class SeedSample:
    """The shipped sample, assessed once by the serving router (thread-safe, lazily)."""

    def __init__(self, router: Assessor, deployments: Sequence[DeploymentConfig], catalog: Catalog,
                 prompts: Sequence[str] | None = None) -> None:
        self._router = router
        self._deployments = list(deployments)
        self.catalog = catalog
        self._prompts = prompts
        self._signals: list[RouteSignal] | None = None
        self._lock = threading.Lock()

    def signals(self) -> list[RouteSignal]:
        with self._lock:
            if self._signals is None:
                try:
                    prompts = self._prompts if self._prompts is not None else load_sample()
                    self._signals = [assess(self._router, [{"role": "user", "content": p}], self._deployments)
                                     for p in prompts]
                except Exception as exc:  # a prior is a convenience: without one, live traffic calibrates alone
                    log.warning("the start-up traffic sample could not be scored (%s: %s); target policies "
                                "start without a prior (the cheapest plan until traffic arrives)",
                                type(exc).__name__, exc)
                    self._signals = []
            return self._signals

    def sketch_for(self, policy: BoundPolicy) -> Sketch:
        return sketch_of(self.signals(), policy, self.catalog)


def messages_of(row: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """A traffic line: OpenAI `messages` (a list of objects), or a `prompt` (the routing-data schema);
    None for anything else."""
    messages = row.get("messages")
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        return list(messages)
    if isinstance(row.get("prompt"), str):
        return [{"role": "user", "content": row["prompt"]}]
    return None


def draw_sample(data_dir: Path, everyday: Sequence[str], out: Path, per_file: int = 110, seed: int = 0) -> int:
    """Write the shipped sample: `per_file` random train prompts of each shared file, then `everyday`."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for name in SHARED_FILES:
        with (data_dir / f"{name}.jsonl").open("rb") as f:
            train = [r for r in map(orjson.loads, f) if r.get("split") == "train"]
        for r in rng.sample(train, min(per_file, len(train))):
            rows.append({"source": name, "prompt": r["prompt"][-_MAX_CHARS:]})
    rows += [{"source": "everyday", "prompt": p} for p in everyday]
    with gzip.open(out, "wb") as f:
        f.writelines(orjson.dumps(r) + b"\n" for r in rows)
    return len(rows)
