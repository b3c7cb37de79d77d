"""Does a `strong_share` target hold on real traffic, in file order and when traffic changes domain?

    python -m benchmarks.target_tracking [--data-dir DIR] [--prompts N] [--out FILE]

Each shared routing file's prompts are scored by the shipped router against the demo's two
deployments and replayed, in file order (sorted by topic: traffic that drifts), through a policy of
`candidates: [small, large]` with `target: {strong_share: s}` for s = 0.1, 0.3 and 0.7. The online
controller (`gateway.policy.controller`) starts from the shipped start-up sample, as a gateway does,
and sees no store (one replica). Reported:
- in file order: the realised share after the first 200 requests (the acceptance rule);
- a change of domain: the first 600 prompts of one file, then 400 of another, for every ordered pair
  of files with at least 1,000 prompts; the realised share of the last 300 of the new file's, with
  the correction capped at ±0.5 (as shipped before) and uncapped (as now).
Writes `target_tracking.md` to the results folder and prints it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.progress import count, phase
from benchmarks.routing_quality.files import DEFAULT_DATA, FILES, RESULTS
from benchmarks.routing_quality.run import require_data
from gateway.config import embedded_config
from gateway.policy import BoundPolicy, Catalog, decide, load_policy_file
from gateway.policy import controller as control
from gateway.policy.calibration import Cutoff
from gateway.policy.seed import SeedSample, sketch_of
from gateway.providers.health import LiveView
from gateway.providers.pricing import prices_for
from gateway.router import load_router
from gateway.signal import RouteSignal, assess

SHARES = (0.1, 0.3, 0.7)
WARM_UP = 200
BEFORE, AFTER, JUDGED = 600, 400, 300  # a change of domain: prompts of the first file, of the second, judged


@contextmanager
def capped(cap: float | None) -> Iterator[None]:
    """The controller with its correction capped at ±cap (None: as it is)."""
    if cap is None:
        yield
        return
    plain = control.Controller.cutoff

    def cutoff(self: control.Controller) -> Cutoff:
        debt = self.debt
        self.debt = max(-cap * control.PAYBACK, min(cap * control.PAYBACK, debt))
        try:
            return plain(self)
        finally:
            self.debt = debt
    control.Controller.cutoff = cutoff  # type: ignore[method-assign]
    try:
        yield
    finally:
        control.Controller.cutoff = plain  # type: ignore[method-assign]


def replay(policy: BoundPolicy, catalog: Catalog, seed: list[RouteSignal], traffic: list[RouteSignal]) -> list[bool]:
    controller = control.Controller(policy.spec.target, sketch_of(seed, policy, catalog))  # type: ignore[arg-type]
    chose = []
    for s in traffic:
        d = decide(policy, s, catalog, LiveView(), cutoff=controller.cutoff())
        assert d.routing is not None  # both candidates are always feasible here
        controller.observe(d.routing)
        chose.append(d.routing.chose_strong)
    return chose


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.target_tracking", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                    help="folder with the five shared files, default %(default)s")
    ap.add_argument("--prompts", type=count, default=900, help="prompts read from each file (default 900)")
    ap.add_argument("--out", type=Path, default=RESULTS / "target_tracking.md")
    args = ap.parse_args(argv)
    require_data(ap.prog, args.data_dir)
    paths = {f: args.data_dir / f"{f}.jsonl" for f in FILES}
    deployments = embedded_config("http://127.0.0.1:9/v1").deployments
    catalog = Catalog({d.name: d for d in deployments}, prices_for(deployments))
    router = load_router()
    phase("scoring the start-up sample and each file's prompts with the shipped router")
    seed = SeedSample(router, deployments, catalog).signals()
    signals: dict[str, list[RouteSignal]] = {}
    for f, path in paths.items():
        with path.open(encoding="utf-8") as rows:
            prompts = [json.loads(line)["prompt"] for line in itertools.islice(rows, args.prompts)]
        signals[f] = [assess(router, [{"role": "user", "content": p}], deployments) for p in prompts]
    folder = Path(tempfile.mkdtemp())
    lines = ["# Strong-share targets on replayed traffic", "",
             f"`python -m benchmarks.target_tracking` — the first {args.prompts} prompts of each shared file, "
             "scored by the shipped router against the demo's `small` and `large`, replayed in file order "
             "(sorted by topic) through `candidates: [small, large]` with `target: {strong_share: s}`; the "
             "controller starts from the shipped start-up sample and sees no store (one replica).", "",
             f"## In file order: realised share after the first {WARM_UP} requests", "",
             "| s | " + " | ".join(FILES) + " | worst miss |", "|---:|" + "---:|" * (len(FILES) + 1)]
    policies = {}
    for s in SHARES:
        path = folder / f"share-{int(s * 100)}.yaml"
        path.write_text(f"candidates:\n  - single: small\n  - single: large\ntarget:\n  strong_share: {s}\n")
        policies[s] = load_policy_file(path, deployments)
    phase("replaying each file in its order")
    for s, policy in policies.items():
        got = []
        for f in FILES:
            chose = replay(policy, catalog, seed, signals[f])[WARM_UP:]
            got.append(sum(chose) / len(chose))
        worst = max(abs(g - s) for g in got)
        lines.append(f"| {s} | " + " | ".join(f"{g:.3f}" for g in got) + f" | {worst * 100:.1f} points |")
    pairs = [(a, b) for a, b in itertools.permutations(FILES, 2)
             if len(signals[a]) >= BEFORE and len(signals[b]) >= AFTER]
    lines += ["", f"## A change of domain: {BEFORE} prompts of one file, then {AFTER} of another", "",
              f"Every ordered pair of files with enough prompts ({len(pairs)} pairs); the realised share of the last "
              f"{JUDGED} prompts of the second file. Capped: the share in force corrected by at most ±0.5 (as shipped "
              "before); uncapped: by as much as the shortfall asks (as now).", "",
              "| s | correction | min | max | mean miss | worst miss |", "|---:|---|---:|---:|---:|---:|"]
    phase(f"replaying {len(pairs)} changes of domain at {len(SHARES)} targets, capped and uncapped")
    for s, policy in policies.items():
        for label, cap in (("capped ±0.5", 0.5), ("uncapped", None)):
            with capped(cap):
                shares = np.array([np.mean(replay(policy, catalog, seed, signals[a][:BEFORE] + signals[b][:AFTER])
                                           [-JUDGED:]) for a, b in pairs])
            miss = np.abs(shares - s)
            lines.append(f"| {s} | {label} | {shares.min():.3f} | {shares.max():.3f} | "
                         f"{miss.mean() * 100:.1f} points | {miss.max() * 100:.1f} points |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
