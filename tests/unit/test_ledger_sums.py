"""The spend ledger's arithmetic and its writer, on the in-memory store: what counts where, the savings
against the dearest candidate, and spend that cannot be written is counted and logged, never lost silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from gateway.admission_store import Settlement
from gateway.auth import Reservation, Tenant
from gateway.errors import GatewayError
from gateway.executor import Deadline, run
from gateway.executor.result import CallRecord
from gateway.feedback import Completed, build_record
from gateway.keyed import Digests
from gateway.ledger import (
    HOUR_S,
    LAST_TIME_S,
    Ledger,
    Spent,
    own_counterfactual,
    parse_group_by,
    parse_time,
    read_spend,
    spend_table,
    window,
)
from gateway.plans import BestOfN, Cascade, Single
from gateway.policy import Candidate, Decision, Estimate
from gateway.providers.base import ProviderFailure, Usage
from gateway.signal import RouteSignal
from gateway.state import MemoryStore, StoreUnavailable, spend_key
from tests.support.fake_backend import answer, deployment, fake_upstreams

AT = 1_800_000_000.0  # a fixed hour: 2027-01-15T08:00Z
SIGNAL = RouteSignal(0.5, "general", {"small": 0.6, "large": 0.9}, 12, {})
SMALL, LARGE, CASCADE = Single("small"), Single("large"), Cascade(("small", "large"))
DECISION = Decision("balanced", CASCADE, (
    Candidate(SMALL, Estimate(0.6, 0.001, 100), 0.0),
    Candidate(CASCADE, Estimate(0.85, 0.004, 300), 0.0),
    Candidate(LARGE, Estimate(0.9, 0.010, 400), 0.0)), SIGNAL)


def _call(deployment: str, cost: float, prompt: int = 10, completion: int = 20, role: str = "answer") -> CallRecord:
    return CallRecord(deployment, Usage(prompt, completion), cost, 0.1, role)


def _table(store: MemoryStore, group_by: Sequence[str]) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        return spend_table(await read_spend(store, window(AT - HOUR_S, AT + 2 * HOUR_S)), group_by)
    return asyncio.run(read())


def _written(spent: Sequence[Spent], store: MemoryStore | None = None) -> MemoryStore:
    store = store or MemoryStore()
    asyncio.run(Ledger(store).write(spent))
    return store


def test_every_call_counts_under_its_deployment_and_the_request_under_the_one_that_answered() -> None:
    escalated = Spent(AT, "t", "balanced", "cascade:small>large:escalated", "large",
                      (_call("small", 0.001, role="sample"), _call("large", 0.005, role="escalation")), DECISION)
    rows = _table(_written([escalated]), ("deployment", "plan_kind"))
    by = {r["deployment"]: r for r in rows}
    assert by["small"]["cost_usd"] == pytest.approx(0.001) and by["small"]["requests"] == 0
    assert by["large"]["cost_usd"] == pytest.approx(0.005) and by["large"]["requests"] == 1
    assert {r["plan_kind"] for r in rows} == {"cascade"}
    assert sum(r["prompt_tokens"] for r in rows) == 20 and sum(r["completion_tokens"] for r in rows) == 40


def test_savings_compare_a_routed_request_with_its_policys_dearest_candidate() -> None:
    spent = Spent(AT, "t", "balanced", "cascade:small>large:accepted", "small", (_call("small", 0.001),), DECISION)
    [row] = _table(_written([spent]), ("policy",))
    assert row["counterfactual_usd"] == pytest.approx(0.010)  # always the large model, as predicted
    assert row["savings_usd"] == pytest.approx(0.009)
    assert row["predicted_quality_chosen"] == 0.85 and row["predicted_quality_counterfactual"] == 0.9


def test_a_request_that_took_the_dearest_candidate_saved_nothing() -> None:
    """Its counterfactual is what it cost, not that candidate's predicted cost: an answer of the large model
    that came in under its prediction showed savings against always taking the large model."""
    chose_large = Decision("balanced", LARGE, DECISION.candidates, SIGNAL)
    spent = Spent(AT, "t", "balanced", "single:large", "large", (_call("large", 0.006),), chose_large)
    [row] = _table(_written([spent]), ("policy",))
    assert row["counterfactual_usd"] == row["cost_usd"] == pytest.approx(0.006) and row["savings_usd"] == 0
    assert row["predicted_quality_chosen"] == row["predicted_quality_counterfactual"] == 0.9
    # a stream of it read on after its client left: written with no call billed yet, then the call read on
    left = Spent(AT, "t", "balanced", "single:large", "large", (), chose_large)
    read_on = Spent(AT, "t", "balanced", "single:large", "large", (_call("large", 0.006, role="read_on"),),
                    requests=0, own_counterfactual=own_counterfactual(chose_large))
    [row] = _table(_written([left, read_on]), ("policy",))
    assert row["counterfactual_usd"] == row["cost_usd"] == pytest.approx(0.006) and row["savings_usd"] == 0
    assert not own_counterfactual(DECISION) and own_counterfactual(None)


def test_a_pinned_request_is_its_own_counterfactual() -> None:
    spent = Spent(AT, "t", None, "single:large", "large", (_call("large", 0.003),))
    [row] = _table(_written([spent]), ("policy", "plan_kind"))
    assert row["policy"] is None and row["plan_kind"] == "single"
    assert row["counterfactual_usd"] == row["cost_usd"] == pytest.approx(0.003) and row["savings_usd"] == 0
    assert row["predicted_quality_chosen"] is None


def test_a_pinned_stream_read_on_after_its_client_left_is_still_its_own_counterfactual() -> None:
    """Its request is written as its client leaves, with no call billed yet, and the call read on to its end
    is billed apart (no request of its own): the counterfactual was 0 and the savings minus the cost."""
    left = Spent(AT, "t", None, "single:large", "large", ())
    read_on = Spent(AT, "t", None, "single:large", "large", (_call("large", 0.003, role="read_on"),), requests=0)
    [row] = _table(_written([left, read_on]), ("policy", "deployment"))
    assert row["requests"] == 1 and row["counterfactual_usd"] == row["cost_usd"] == pytest.approx(0.003)
    assert row["savings_usd"] == 0
    routed = Spent(AT, "t", "balanced", "single:small", "small", (_call("small", 0.001, role="late"),), requests=0)
    [row] = _table(_written([routed]), ("policy",))  # a routed request's counterfactual is its decision's alone
    assert row["counterfactual_usd"] == 0


def test_cache_hits_are_requests_costing_nothing_and_shadow_work_is_cost_without_a_request() -> None:
    hit = Spent(AT, "t", "balanced", "cache", "small", ())
    shadow = Spent(AT, "t", "balanced", "shadow", "", (_call("large", 0.004, role="shadow"),), requests=0)
    rows = {r["plan_kind"]: r for r in _table(_written([hit, shadow]), ("plan_kind",))}
    assert (rows["cache"]["requests"], rows["cache"]["cost_usd"]) == (1, 0.0)
    assert (rows["shadow"]["requests"], rows["shadow"]["cost_usd"]) == (0, pytest.approx(0.004))


def test_spend_is_bucketed_by_hour_and_tenant() -> None:
    store = _written([Spent(AT, "a", "p", "single:small", "small", (_call("small", 0.001),)),
                      Spent(AT + HOUR_S - 1, "b", "p", "single:small", "small", (_call("small", 0.002),)),
                      Spent(AT + HOUR_S, "a", "p", "single:small", "small", (_call("small", 0.004),))])
    rows = _table(store, ("tenant", "hour"))
    assert [(r["tenant"], r["hour"], r["cost_usd"]) for r in rows] == [
        ("a", "2027-01-15T08:00:00Z", 0.001), ("a", "2027-01-15T09:00:00Z", 0.004),
        ("b", "2027-01-15T08:00:00Z", 0.002)]
    asyncio.run(_only_b(store))


async def _only_b(store: MemoryStore) -> None:
    rows = spend_table(await read_spend(store, window(AT - HOUR_S, AT + 2 * HOUR_S), ["b"]), ("tenant",))
    assert [r["tenant"] for r in rows] == ["b"]


def test_the_request_record_carries_the_savings() -> None:
    record = build_record(Completed("r1", AT, Tenant("t"), "router/balanced", "balanced", "cascade:small>large",
                                    "small", [{"role": "user", "content": "hi"}], SIGNAL, (_call("small", 0.001),),
                                    12, "v1", DECISION), Digests())
    assert record["counterfactual_usd"] == 0.010
    assert (record["predicted_quality_chosen"], record["predicted_quality_counterfactual"]) == (0.85, 0.9)


def test_the_budget_counter_is_settled_exactly_as_before() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        ledger = Ledger(store)
        await ledger.record(Spent(AT, "t", None, "single:small", "small", (_call("small", 0.002),)),
                            Reservation(store, "t"))
        await ledger.record(Spent(AT, "t", None, "cache", "small", ()), Reservation(store, "t"))
        assert await store.get_float(spend_key("t")) == pytest.approx(0.002)
    asyncio.run(scenario())


def test_a_full_ledger_queue_drops_bills_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Ledger:
        ledger = Ledger(MemoryStore(), queue_size=1)  # no writer started: the queue stays full
        for _ in range(3):
            ledger.add(Spent(AT, "t", None, "single:small", "small", (_call("small", 0.5),)))
        return ledger

    with caplog.at_level(logging.WARNING, "switchyard.ledger"):
        ledger = asyncio.run(scenario())
    assert ledger.stats()["dropped"] == 2 and ledger.stats()["lost_usd"] == pytest.approx(1.0)
    assert "ledger queue full" in caplog.text


class _DownStore(MemoryStore):
    async def add_to_hashes(self, sums: Mapping[str, Mapping[str, float]], ttl_s: float,
                            index: tuple[str, Sequence[str]] | None = None) -> None:
        raise StoreUnavailable("connection refused")


def test_spend_the_store_cannot_take_is_counted_and_logged_not_lost_silently(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Ledger:
        ledger = Ledger(_DownStore())
        ledger.start()
        await ledger.record(Spent(AT, "t", None, "single:small", "small", (_call("small", 0.25),)))
        await ledger.close()
        return ledger

    with caplog.at_level(logging.WARNING, "switchyard.ledger"):
        ledger = asyncio.run(scenario())
    assert ledger.stats()["failed"] == 1 and ledger.stats()["lost_usd"] == pytest.approx(0.25)
    assert "not stored" in caplog.text and "0.25" in caplog.text


def test_the_writer_sums_a_batch_into_one_store_call_per_flush() -> None:
    calls: list[int] = []

    class Counting(MemoryStore):
        async def add_to_hashes(self, sums: Mapping[str, Mapping[str, float]], ttl_s: float,
                                index: tuple[str, Sequence[str]] | None = None) -> None:
            calls.append(len(sums))
            await super().add_to_hashes(sums, ttl_s, index)

    async def scenario() -> MemoryStore:
        store = Counting()
        ledger = Ledger(store)
        for _ in range(50):
            ledger.add(Spent(AT, "t", "p", "single:small", "small", (_call("small", 0.001),)))
        ledger.start()
        await ledger.close()
        return store

    store = asyncio.run(scenario())
    assert calls == [1]  # fifty bills, one hash, one round trip
    assert _table(store, ("tenant",))[0]["requests"] == 50


@pytest.mark.parametrize("text", ["colour", "tenant,colour", ","])
def test_unknown_groupings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="group by"):
        parse_group_by(text)


@pytest.mark.parametrize("text", ["x" * 3000, ",".join(f"colour{i}" for i in range(600)), "," * 3000],
                         ids=["one-long-name", "many-names", "only-commas"])
def test_a_refused_grouping_is_named_in_a_few_words_not_echoed_whole(text: str) -> None:
    with pytest.raises(ValueError, match="group by") as refused:
        parse_group_by(text)
    assert len(str(refused.value)) < 300


def test_times_are_unix_seconds_or_iso_and_windows_default_to_a_day() -> None:
    assert parse_group_by(None) == ("tenant",) and parse_group_by("hour, tenant") == ("hour", "tenant")
    assert parse_time("1800000000") == AT == parse_time("2027-01-15T08:00:00Z") == parse_time("2027-01-15T08:00:00")
    assert parse_time("9999-12-31T23:59:59Z") == LAST_TIME_S and parse_time("0") == 0.0
    assert parse_time("2027-01-15t08:00:00z") == AT  # RFC 3339's lower-case separator and zone
    for bad in ("inf", "nan", "-5", "last tuesday", "1e12", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"):
        with pytest.raises(ValueError):
            parse_time(bad)
    w = window(None, None, now=AT)
    assert (w.start, w.end) == (AT - 24 * HOUR_S, AT) and len(w.hours) == 24
    with pytest.raises(ValueError):
        window(AT, AT)


BODY = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}


def _failing_on(name: str) -> Any:
    def handler(d: Any, body: dict[str, Any]) -> Any:
        if d.name == name:
            return ProviderFailure("500", status=500, retryable=False)
        return answer(*["The answer is 42."] * int(body.get("n") or 1), model=d.name)  # a choice for each of `n`
    return handler


def test_a_cascade_whose_escalation_fails_still_bills_its_first_step() -> None:
    up, _ = fake_upstreams(_failing_on("large"), deployment("small"), deployment("large", max_retries=0))
    plan = Cascade(("small", "large"), confidence="agreement", threshold=1.1, samples=2)  # always escalates
    with pytest.raises(GatewayError) as failed:
        asyncio.run(run(up, plan, BODY, None, Deadline.after(10)))
    assert [c.deployment for c in failed.value.billed] == ["small"]
    assert failed.value.billed[0].cost_usd > 0


def test_best_of_answers_from_and_bills_the_samples_that_answered_when_another_fails() -> None:
    up, _ = fake_upstreams(_failing_on("broken"), deployment("small"), deployment("other"),
                           deployment("broken", max_retries=0))
    result = asyncio.run(run(up, BestOfN(("small", "broken", "other")), BODY, None, Deadline.after(10)))
    assert sorted(c.deployment for c in result.calls) == ["other", "small"]
    assert result.evidence["samples"] == 2


def test_best_of_fails_when_fewer_samples_answer_than_the_clients_choices() -> None:
    """The client's `n` choices are picked from the samples: with one of three failed, n=3 got two choices
    and a 200. The plan fails, billing the samples that answered; n=2 is still answered from them."""
    up, _ = fake_upstreams(_failing_on("broken"), deployment("small"), deployment("other"),
                           deployment("broken", max_retries=0))
    plan = BestOfN(("small", "broken", "other"))
    with pytest.raises(GatewayError) as failed:
        asyncio.run(run(up, plan, {**BODY, "n": 3}, None, Deadline.after(10)))
    assert failed.value.status == 502 and sorted(c.deployment for c in failed.value.billed) == ["other", "small"]
    result = asyncio.run(run(up, plan, {**BODY, "n": 2}, None, Deadline.after(10)))
    assert len(result.body["choices"]) == 2


def test_best_of_fails_when_no_sample_answers() -> None:
    up, _ = fake_upstreams(_failing_on("broken"), deployment("broken", max_retries=0))
    with pytest.raises(GatewayError) as failed:
        asyncio.run(run(up, BestOfN(("broken", "broken")), BODY, None, Deadline.after(10)))
    assert failed.value.status == 502 and failed.value.billed == ()


def test_a_cascade_whose_first_step_fails_escalates_to_the_next() -> None:
    up, _ = fake_upstreams(_failing_on("small"), deployment("small", max_retries=0), deployment("large"))
    plan = Cascade(("small", "large"), confidence="logprob", threshold=0.5)
    result = asyncio.run(run(up, plan, BODY, None, Deadline.after(10)))
    assert result.deployment == "large" and result.plan_label == "cascade:small>large:escalated"
    assert result.evidence["cascade"][0]["escalated"] == "step failed"
    assert [c.deployment for c in result.calls] == ["large"]


def test_the_admin_key_is_one_sha256_from_the_config_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from gateway.auth import Authenticator
    from gateway.config import ENV_ADMIN_KEY_SHA256, embedded_config
    from gateway.errors import ConfigError

    digest = hashlib.sha256(b"sk-admin").hexdigest()
    monkeypatch.setenv(ENV_ADMIN_KEY_SHA256, digest.upper())
    config = embedded_config("http://127.0.0.1:9/v1")
    assert config.admin_api_key_sha256 == digest
    auth = Authenticator([], MemoryStore(), admin_sha256=config.admin_api_key_sha256)
    assert auth.is_admin("Bearer sk-admin") and not auth.is_admin("Bearer sk-other") and not auth.is_admin(None)
    monkeypatch.setenv(ENV_ADMIN_KEY_SHA256, "not-a-digest")
    with pytest.raises(ConfigError, match=ENV_ADMIN_KEY_SHA256):
        embedded_config("http://127.0.0.1:9/v1")


def test_every_upstream_call_is_counted_once_under_its_deployment() -> None:
    store = _written([Spent(AT, "t", "p", "cascade:small>large:escalated", "large",
                            (_call("small", 0.001), _call("small", 0.001), _call("large", 0.004)))])
    calls = {r["deployment"]: r["calls"] for r in _table(store, ("deployment",))}
    assert calls == {"small": 2, "large": 1}


def test_spend_written_while_the_store_is_down_is_held_and_written_when_it_is_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.ledger.RETRY_S", 0.05)

    class Flaky(MemoryStore):
        down = True

        async def add_to_hashes(self, sums: Mapping[str, Mapping[str, float]], ttl_s: float,
                                index: tuple[str, Sequence[str]] | None = None) -> None:
            if self.down:
                raise StoreUnavailable("connection refused")
            await super().add_to_hashes(sums, ttl_s, index)

    async def scenario() -> tuple[Flaky, Ledger]:
        store = Flaky()
        ledger = Ledger(store, linger_s=0.01)
        ledger.start()
        for _ in range(3):
            await ledger.record(Spent(AT, "t", None, "single:small", "small", (_call("small", 0.25),)))
        await asyncio.sleep(0.1)
        assert ledger.stats()["held"] == 3 and ledger.stats()["written"] == 0
        store.down = False  # back: the next retry writes what was held, with no new bill needed
        await asyncio.sleep(0.2)
        await ledger.close()
        return store, ledger

    store, ledger = asyncio.run(scenario())
    assert ledger.stats() | {"queued": 0} == {"written": 3, "dropped": 0, "failed": 0, "lost_usd": 0.0,
                                              "queued": 0, "held": 0, "unsettled_usd": 0.0}
    (row,) = _table(store, ("tenant",))
    assert (row["requests"], row["calls"], row["cost_usd"]) == (3, 3, pytest.approx(0.75))


def test_budget_spend_the_store_could_not_take_is_added_when_it_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.ledger.RETRY_S", 0.05)

    class Flaky(MemoryStore):
        down = True

        async def settle_admission(self, s: Settlement) -> None:  # a bill with no reservation settles too
            if self.down:
                raise StoreUnavailable("connection refused")
            await super().settle_admission(s)

    async def scenario() -> float:
        store = Flaky()
        ledger = Ledger(store, linger_s=0.01)
        ledger.start()
        for _ in range(2):
            await ledger.record(Spent(AT, "t", None, "single:small", "small", (_call("small", 0.25),)))
        assert ledger.stats()["unsettled_usd"] == pytest.approx(0.5)
        store.down = False
        await asyncio.sleep(0.2)
        await ledger.close()
        return await store.incr_float(spend_key("t"), 0.0)

    assert asyncio.run(scenario()) == pytest.approx(0.5)


def test_a_reservation_the_store_could_not_settle_is_settled_when_it_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.ledger.RETRY_S", 0.05)

    class Flaky(MemoryStore):
        down = True

        async def settle_admission(self, s: Any) -> None:
            if self.down:
                raise StoreUnavailable("connection refused")
            await super().settle_admission(s)

    async def scenario() -> float:
        store = Flaky()
        ledger = Ledger(store, linger_s=0.01)
        ledger.start()
        await ledger.record(Spent(AT, "t", None, "single:small", "small", (_call("small", 0.25),)),
                            reservation=Reservation(store, "t"))
        assert ledger.stats()["unsettled_usd"] == pytest.approx(0.25)
        store.down = False
        await asyncio.sleep(0.2)
        await ledger.close()
        return await store.incr_float(spend_key("t"), 0.0)

    assert asyncio.run(scenario()) == pytest.approx(0.25)
