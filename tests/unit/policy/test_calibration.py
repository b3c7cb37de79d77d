"""Targets: validation, the score and its sketch, thresholds for each kind of target, the online controller,
and replicas merging their sketches through the store."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy import decide, load_policy_file
from gateway.policy.calibration import Quantiles, Sketch, expected, share_for
from gateway.policy.controller import SEED_WEIGHT, Controller
from gateway.policy.schema import Target
from gateway.policy.seed import SeedSample
from gateway.policy.sharing import Calibrator
from gateway.providers.health import LiveView
from gateway.signal import RouteSignal
from gateway.state import MemoryStore, StoreUnavailable
from tests.support.policy_lab import CATALOG, CONFIG, policy_from, signal

TWO_TIERS = "candidates:\n  - single: small\n  - single: large\n"


def _signals(n: int, seed: int = 0, shift: float = 0.0) -> list[RouteSignal]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = rng.uniform(0.3, 0.7)
        out.append(signal(q, min(1.0, q + max(0.0, rng.gauss(0.12 + shift, 0.06)))))
    return out


class _Seeds(SeedSample):
    """The start-up sample as given signals (no router)."""

    def __init__(self, signals: list[RouteSignal]) -> None:
        self._given = signals
        self.catalog = CATALOG

    def signals(self) -> list[RouteSignal]:
        return self._given


# -- validation ------------------------------------------------------------------------------------

def test_a_target_is_exactly_one_of_share_quality_or_spend(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(TWO_TIERS + "target: {strong_share: 0.3, quality: 0.9}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: target: Value error, give exactly one of strong_share, quality, "
                                          r"usd_per_1k_requests \(got strong_share, quality\)"):
        load_policy_file(path, CONFIG.deployments)
    path.write_text(TWO_TIERS + "target: {}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: target: Value error, give exactly one of"):
        load_policy_file(path, CONFIG.deployments)


def test_a_target_out_of_range_names_its_field(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(TWO_TIERS + "target: {strong_share: 1.5}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: target.strong_share: Input should be less than or equal to 1"):
        load_policy_file(path, CONFIG.deployments)
    path.write_text(TWO_TIERS + "target: {usd_per_1k_requests: 0}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: target.usd_per_1k_requests: Input should be greater than 0"):
        load_policy_file(path, CONFIG.deployments)


def test_a_policy_has_a_target_or_a_value_not_both(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(TWO_TIERS + "target: {strong_share: 0.3}\nobjective: {value_usd: 0.01}\n")
    with pytest.raises(ConfigError, match=r"give either target .* or objective.value_usd, not both"):
        load_policy_file(path, CONFIG.deployments)


# -- the sketch and thresholds -----------------------------------------------------------------------

def _uniform_sketch(n: int = 1000) -> Sketch:
    sketch = Sketch()
    for i in range(n):
        score = -0.2 + 0.6 * (i + 0.5) / n  # uniform on [-0.2, 0.4]
        sketch.add(score, 0.5, 0.5 + score, 0.001, 0.005)
    return sketch


def test_the_threshold_is_the_matching_quantile_of_the_sketch() -> None:
    q = Quantiles.of(_uniform_sketch())
    for share in (0.1, 0.3, 0.7):
        assert q.threshold(share) == pytest.approx(0.4 - 0.6 * share, abs=0.003)
        assert q.quantile(q.threshold(share)) == pytest.approx(1 - share, abs=0.002)
    assert q.threshold(0.0) == math.inf and q.threshold(1.0) == -math.inf


def test_a_strong_share_of_one_sends_everything_strong_before_any_traffic() -> None:
    """With an empty prior (every start-up prompt left one feasible plan) `strong_share: 1` sent a new
    tenant's first requests to the cheap plan, the opposite of its target."""
    empty = Quantiles.of(Sketch())
    assert empty.threshold(1.0) == -math.inf and empty.threshold(0.5) == math.inf
    assert Controller(Target(strong_share=1.0), Sketch()).cutoff().threshold == -math.inf


def test_a_quality_target_sends_the_least_traffic_strong_that_reaches_it() -> None:
    sketch = _uniform_sketch()
    share = share_for(Target(quality=0.95), sketch)
    e = expected(sketch, Quantiles.of(sketch).threshold(share))
    assert e.quality_share == pytest.approx(0.95, abs=0.002)
    # sending a little less strong would miss it
    less = expected(sketch, Quantiles.of(sketch).threshold(share - 0.02))
    assert less.quality_share < 0.95


def test_a_spend_target_sends_the_most_traffic_strong_within_it() -> None:
    sketch = _uniform_sketch()
    share = share_for(Target(usd_per_1k_requests=3.0), sketch)  # cheap $1, strong $5 per 1k: half strong
    assert share == pytest.approx(0.5, abs=0.002)
    e = expected(sketch, Quantiles.of(sketch).threshold(share))
    assert e.usd_per_1k_requests == pytest.approx(3.0, abs=0.01)
    assert share_for(Target(usd_per_1k_requests=0.5), sketch) == 0.0  # below always-cheap: nothing strong


def test_sketches_travel_as_hash_fields_and_merge_by_addition() -> None:
    a, b = _uniform_sketch(100), _uniform_sketch(300)
    merged = Sketch.from_fields(a.fields()) + Sketch.from_fields(b.fields())
    assert merged.weight == pytest.approx(400)
    assert (merged.sums == (a + b).sums).all()


# -- decisions under a target -------------------------------------------------------------------------

def _cutoff(policy, threshold_share: float, signals: list[RouteSignal]):
    from gateway.policy.seed import sketch_of

    controller = Controller(policy.spec.target, sketch_of(signals, policy, CATALOG))
    controller.share = threshold_share
    return controller.cutoff()


def test_under_a_target_a_prompt_below_the_threshold_takes_the_cheapest_plan(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.3}\n")
    cutoff = _cutoff(policy, 0.3, _signals(500))
    low = decide(policy, signal(0.5, 0.52), CATALOG, LiveView(), cutoff=cutoff)
    high = decide(policy, signal(0.3, 0.9), CATALOG, LiveView(), cutoff=cutoff)
    assert low.plan.label == "single:small" and high.plan.label == "single:large"
    assert low.routing is not None and low.routing.score == pytest.approx(0.02)
    explained = high.explain()["calibration"]
    assert explained["target"] == {"strong_share": 0.3} and explained["chose_strong"] is True
    assert explained["quantile"] > 0.99 and explained["threshold"] == pytest.approx(cutoff.threshold, abs=1e-6)


def test_the_strong_choice_is_the_best_predicted_costlier_plan(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, """
candidates:
  - single: small
  - single: large
  - best_of: {deployment: small, n: 5}
target: {strong_share: 0.5}
""")
    d = decide(policy, signal(0.4, 0.9), CATALOG, LiveView(), cutoff=_cutoff(policy, 0.5, _signals(300)))
    assert d.routing is not None
    assert d.routing.cheap.plan.label == "single:small" and d.routing.strong.plan.label == "single:large"
    assert d.plan.label == "single:large"
    # with the large tier removed by a constraint, the strong choice is the best remaining costlier plan
    d = decide(policy, signal(0.4, 0.9), CATALOG, LiveView(open_circuits=frozenset({"large"})),
               cutoff=_cutoff(policy, 0.5, _signals(300)))
    assert d.routing is not None and d.routing.strong.plan.label.startswith("best_of:5:small")


def test_policies_without_a_target_decide_by_value_as_before(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "objective: {value_usd: 0.002}\n")
    target = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 1.0}\n", name="t")
    cutoff = _cutoff(target, 1.0, _signals(100))
    d = decide(policy, signal(0.80, 0.82), CATALOG, LiveView(), cutoff=cutoff)
    assert d.plan.label == "single:small" and d.routing is None and "calibration" not in d.explain()
    assert "highest utility" in d.reasons[0]


# -- the online controller ---------------------------------------------------------------------------

def _replay(controller: Controller, policy, signals: list[RouteSignal]) -> list[bool]:
    chose = []
    for s in signals:
        d = decide(policy, s, CATALOG, LiveView(), cutoff=controller.cutoff())
        assert d.routing is not None
        controller.observe(d.routing)
        chose.append(d.routing.chose_strong)
    return chose


@pytest.mark.parametrize("share", [0.1, 0.3, 0.7])
def test_the_realised_share_converges_on_drifting_traffic(tmp_path: Path, share: float) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + f"target: {{strong_share: {share}}}\n")
    from gateway.policy.seed import sketch_of

    controller = Controller(policy.spec.target, sketch_of(_signals(300, seed=1), policy, CATALOG))
    # traffic unlike the sample, and drifting: easy topics first, then ever harder ones
    traffic = [s for k in range(4) for s in _signals(200, seed=10 + k, shift=0.05 * k - 0.08)]
    chose = _replay(controller, policy, traffic)
    realised = sum(chose[200:]) / len(chose[200:])
    assert realised == pytest.approx(share, abs=0.03)


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_the_share_recovers_within_100_requests_after_traffic_shifts_domain(tmp_path: Path, share: float) -> None:
    """600 prompts with much to gain from the strong plan, then prompts with little: the window is still
    mostly the first kind, so the quantile sends none of the new ones strong. The correction was capped at
    +0.5, short of where the new traffic sits in the window: at s = 0.1 it sent 0-2% strong for 400 requests."""
    policy = policy_from(tmp_path, TWO_TIERS + f"target: {{strong_share: {share}}}\n")
    from gateway.policy.seed import sketch_of

    controller = Controller(policy.spec.target, sketch_of(_signals(300, seed=1), policy, CATALOG))
    chose = _replay(controller, policy, _signals(600, seed=3, shift=0.10) + _signals(600, seed=4, shift=-0.15))
    after_shift = chose[700:]
    assert sum(after_shift) / len(after_shift) == pytest.approx(share, abs=0.03)


def _chosen(d) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Predicted quality and cost of the chosen plan, and the strong choice's quality."""
    r = d.routing
    chosen = r.strong if r.chose_strong else r.cheap
    return chosen.estimate.quality, chosen.estimate.cost_usd, r.strong.estimate.quality


@pytest.mark.parametrize("quality", [0.9, 0.95])
def test_a_quality_target_is_met_on_live_traffic(tmp_path: Path, quality: float) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + f"target: {{quality: {quality}}}\n")
    from gateway.policy.seed import sketch_of

    controller = Controller(policy.spec.target, sketch_of(_signals(300, seed=1), policy, CATALOG))
    got = []
    for s in _signals(1000, seed=7, shift=0.05):
        d = decide(policy, s, CATALOG, LiveView(), cutoff=controller.cutoff())
        controller.observe(d.routing)
        got.append(_chosen(d))
    late = got[200:]
    assert sum(q for q, _, _ in late) / sum(strong for _, _, strong in late) == pytest.approx(quality, abs=0.01)


def test_a_spend_target_is_met_on_live_traffic(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "target: {usd_per_1k_requests: 0.12}\n")
    from gateway.policy.seed import sketch_of

    controller = Controller(policy.spec.target, sketch_of(_signals(300, seed=1), policy, CATALOG))
    got = []
    for s in _signals(1000, seed=8):
        d = decide(policy, s, CATALOG, LiveView(), cutoff=controller.cutoff())
        controller.observe(d.routing)
        got.append(_chosen(d))
    late = got[200:]
    assert 1000 * sum(c for _, c, _ in late) / len(late) == pytest.approx(0.12, rel=0.05)


def test_live_traffic_outweighs_the_start_up_sample_within_200_requests(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.5}\n")
    from gateway.policy.seed import sketch_of

    controller = Controller(policy.spec.target, sketch_of(_signals(600, seed=2, shift=0.2), policy, CATALOG))
    assert controller.live == 0 and controller.seed.weight == pytest.approx(SEED_WEIGHT)
    _replay(controller, policy, _signals(200, seed=3))
    controller.refresh()
    assert controller.live == 200 and controller.live / (controller.live + SEED_WEIGHT) > 0.9


# -- replicas ----------------------------------------------------------------------------------------

async def test_replicas_merge_their_observations_through_the_store(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.3}\n")
    store = MemoryStore()
    seeds = _Seeds(_signals(100))
    a = Calibrator(store, seeds, lambda: [policy])
    b = Calibrator(store, seeds, lambda: [policy])
    a.prepare()
    b.prepare()
    for s in _signals(300, seed=5, shift=0.2):
        d = decide(policy, s, CATALOG, LiveView(), cutoff=a.cutoff(policy, "t"))
        assert d.routing is not None
        a.observe(policy, "t", d.routing)
    await a.sync(now=1000.0)
    assert b.cutoff(policy, "t").observations == 0  # the tenant's first request on b: b starts its controller
    await b.sync(now=1000.0)
    before = b.cutoff(policy, "t")
    assert before.observations == pytest.approx(300)  # b sees a's traffic: merged, not b's alone
    await a.sync(now=1001.0)
    await b.sync(now=1001.0)
    assert b.cutoff(policy, "t").observations == pytest.approx(300)  # pushed once, counted once
    assert a.cutoff(policy, "t").threshold == pytest.approx(before.threshold, abs=0.01)


async def test_observations_are_kept_through_a_store_outage(tmp_path: Path) -> None:
    class _Down(MemoryStore):
        async def add_to_hashes(self, sums, ttl_s, index=None):  # type: ignore[no-untyped-def]
            raise StoreUnavailable("down")

    policy = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.3}\n")
    calibrator = Calibrator(_Down(), _Seeds(_signals(100)), lambda: [policy])
    calibrator.prepare()
    for s in _signals(50):
        d = decide(policy, s, CATALOG, LiveView(), cutoff=calibrator.cutoff(policy, "t"))
        assert d.routing is not None
        calibrator.observe(policy, "t", d.routing)
    await calibrator.sync()
    controller = calibrator.controllers[("p", policy.version, "t")]
    controller.refresh()
    assert controller.live == pytest.approx(50) and controller.pending.weight > 0


def test_an_edited_policy_gets_its_own_calibration(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.3}\n")
    current = [policy]
    calibrator = Calibrator(MemoryStore(), _Seeds(_signals(100)), lambda: current)
    calibrator.prepare()
    edited = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.6}\n")
    current[:] = [edited]
    assert calibrator.cutoff(edited, "t").share == pytest.approx(0.6, abs=0.01)
    calibrator.prepare()
    assert list(calibrator.controllers) == [("p", edited.version, "t")]


# -- the shipped policies ----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def serving_router():  # type: ignore[no-untyped-def]
    from gateway.router import load_router

    return load_router()


def test_greetings_and_one_line_questions_go_to_small_under_balanced(serving_router) -> None:  # type: ignore[no-untyped-def]
    from gateway.explain import decide_prompt

    balanced = load_policy_file(ROOT / "routing_policies" / "balanced.yaml", CONFIG.deployments)
    assert balanced.spec.target is not None and balanced.spec.target.strong_share == 0.4
    seeds = SeedSample(serving_router, CONFIG.deployments, CATALOG)
    for prompt in ("hi", "Say hi.", "What is the capital of France?"):
        d = decide_prompt(prompt, serving_router, balanced, CONFIG, CATALOG, seeds)
        assert d.plan.label == "single:small", (prompt, d.explain()["calibration"])


def test_every_shipped_golden_example_holds() -> None:
    from gateway.explain import check_policies

    assert check_policies(ROOT / "routing_policies", None) == []


# -- tenants ---------------------------------------------------------------------------------------

def test_one_tenants_traffic_does_not_move_another_tenants_threshold(tmp_path: Path) -> None:
    """A flood of easy prompts from one tenant (all routed cheap) once lowered the policy's threshold and
    raised the share in force for every tenant, so that the others' ordinary prompts went to the
    dearer plan, billed to them. Each tenant is calibrated on its own traffic."""
    policy = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.3}\n")
    calibrator = Calibrator(MemoryStore(), _Seeds(_signals(200, seed=1)), lambda: [policy])
    calibrator.prepare()
    before = calibrator.cutoff(policy, "victim")
    for s in _signals(600, seed=4, shift=-0.15):  # gains far below anything the sample holds
        d = decide(policy, s, CATALOG, LiveView(), cutoff=calibrator.cutoff(policy, "flooder"))
        assert d.routing is not None
        calibrator.observe(policy, "flooder", d.routing)
    after = calibrator.cutoff(policy, "victim")
    assert (after.threshold, after.share, after.observations) == (before.threshold, before.share, 0)
    flooder = calibrator.cutoff(policy, "flooder")
    assert flooder.observations > 500 and flooder.threshold < before.threshold  # (counted every 64)


async def test_tenants_sync_in_one_round_trip_each_way_and_quiet_ones_are_dropped(tmp_path: Path) -> None:
    class _Counting(MemoryStore):
        calls: list[str] = []

        async def add_to_hashes(self, sums, ttl_s, index=None):  # type: ignore[no-untyped-def]
            self.calls.append("add")
            await super().add_to_hashes(sums, ttl_s, index)

        async def read_hashes(self, keys):  # type: ignore[no-untyped-def]
            self.calls.append("read")
            return await super().read_hashes(keys)

    policy = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.3}\n")
    store = _Counting()
    calibrator = Calibrator(store, _Seeds(_signals(100)), lambda: [policy], bucket_s=60, window_buckets=3)
    calibrator.prepare()
    for tenant in ("a", "b", "c"):
        for s in _signals(20, seed=ord(tenant)):
            d = decide(policy, s, CATALOG, LiveView(), cutoff=calibrator.cutoff(policy, tenant))
            assert d.routing is not None
            calibrator.observe(policy, tenant, d.routing)
    await calibrator.sync(now=6000.0)
    assert store.calls == ["add", "read"]
    assert {t: calibrator.cutoff(policy, t).observations for t in "abc"} == {"a": 20, "b": 20, "c": 20}
    store.calls.clear()
    await calibrator.sync(now=6001.0)  # nothing new: nothing pushed, one read
    assert store.calls == ["read"] and len(calibrator.controllers) == 3
    await calibrator.sync(now=6000.0 + 60 * 2)  # the window still holds the first minute
    assert len(calibrator.controllers) == 3
    await calibrator.sync(now=6000.0 + 60 * 3)  # a whole window without traffic: forgotten
    assert calibrator.controllers == {}
    assert calibrator.cutoff(policy, "a").observations == 0  # back to the start-up sample


def test_a_policys_tenants_share_one_copy_of_the_start_up_prior(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, TWO_TIERS + "target: {strong_share: 0.3}\n")
    calibrator = Calibrator(MemoryStore(), _Seeds(_signals(100)), lambda: [policy])
    calibrator.prepare()
    a, b = (calibrator.cutoff(policy, t) for t in "ab")
    assert a == b  # the same start
    ca, cb = (calibrator.controllers[("p", policy.version, t)] for t in "ab")
    assert ca.seed is cb.seed and ca.seed.weight == pytest.approx(SEED_WEIGHT)


def test_calibrate_says_which_prompts_its_figures_are_of() -> None:
    """Prompts whose constraints leave one plan never meet the threshold: the figures are of the others. The
    text said "on 200 prompts ... expected share to strong 50.0%" for 138 prompts with a choice, which read as
    100 of the 200 sent strong when 69 were."""
    from gateway.explain import render_calibration

    result = {"policy": "capped", "target": {"strong_share": 0.5}, "prompts": 200, "decided": 138,
              "threshold": 0.163, "strong_share": 0.5, "quality": 0.584, "quality_share_of_always_strong": 0.915,
              "usd_per_1k_requests": 1.2, "always_cheap": {"quality": 0.468, "usd_per_1k_requests": 0.12},
              "always_strong": {"quality": 0.638, "usd_per_1k_requests": 2.26}}
    header = render_calibration(result).splitlines()[0]
    assert header == ("policy capped, target strong_share: 0.5, on 200 prompts; the figures are of the 138 that "
                      "leave it a choice between plans (the other 62 have one feasible plan or none)")
    assert render_calibration({**result, "decided": 200}).splitlines()[0] == \
        "policy capped, target strong_share: 0.5, on 200 prompts"


@pytest.mark.parametrize("messages", [[], [{"role": "user"}], [{"role": "user", "content": None}],
                                      [{"role": "user", "content": 5}], [{"role": "user", "content": [1, 2]}],
                                      [{"role": "captain", "content": "hi"}]])
def test_a_traffic_line_the_gateway_would_refuse_is_refused_naming_the_line(
        tmp_path: Path, messages: list[object]) -> None:
    """`{"messages": []}` and messages without content were counted as prompts: sixty of them passed the
    50-prompt minimum and `policy calibrate` printed a threshold drawn from requests the gateway answers
    with a 400 and never routes."""
    from gateway.explain import read_traffic

    traffic = tmp_path / "t.jsonl"
    good = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) for i in range(3)]
    traffic.write_text("\n".join([*good, json.dumps({"messages": messages})]) + "\n")
    with pytest.raises(ConfigError, match=r"t.jsonl: line 4: not a request the gateway routes: messages"):
        read_traffic(traffic)
    traffic.write_text("\n".join([*good, json.dumps({"prompt": "hi"})]) + "\n")
    assert len(read_traffic(traffic)) == 4
