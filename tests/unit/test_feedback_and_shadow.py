"""Request records, feedback storage, shadow labels and the export's rows: pure logic, no network."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.auth import Authenticator, Tenant
from gateway.config import DeploymentConfig, RequestLogSettings
from gateway.errors import ConfigError, InputError, NotFound, UpstreamError
from gateway.executor.drain import Draining, drain
from gateway.executor.result import CallRecord
from gateway.feedback import Completed, Feedback, JsonlSink, RequestLog, build_record
from gateway.keyed import Digests
from gateway.ledger import Ledger, read_spend, spend_table, window
from gateway.logs_export import from_jsonl, model_names, parse_duration, to_row
from gateway.plans import Shadow
from gateway.policy import Catalog
from gateway.policy.loader import bind_policy
from gateway.policy.schema import PolicySpec
from gateway.providers.base import Completion, Usage
from gateway.providers.pricing import DeploymentPrice
from gateway.shadow import Job, ShadowEvaluator, agreement, parse_grade
from gateway.state import REQUESTS_STREAM, MemoryStore, request_key
from gateway.telemetry import Telemetry

DEPLOYMENTS = [
    DeploymentConfig(name="small", model="openai/s", tier="small", router_profile="Meta-Llama-3.1-8B-Instruct"),
    DeploymentConfig(name="large", model="openai/l", tier="large"),
]
SUM = [{"role": "user", "content": "What is 17 + 25?"}]


def _spec(**shadow: Any) -> PolicySpec:
    return PolicySpec.model_validate({"candidates": [{"single": "small"}], "shadow": shadow})


def test_shadow_policy_field_binds_names_like_other_policy_names() -> None:
    bound = bind_policy("p", "p.yaml", _spec(rate=0.05, against="large", judge="large"), DEPLOYMENTS)
    assert bound.shadow == Shadow(0.05, "large", "large")
    with pytest.raises(ConfigError, match=r"p.yaml: shadow.against 'huge' is not a deployment or tier"):
        bind_policy("p", "p.yaml", _spec(rate=0.05, against="huge"), DEPLOYMENTS)


@pytest.mark.parametrize("rate", [0, -0.1, 1.5])
def test_shadow_rate_must_be_a_share(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        _spec(rate=rate, against="large")


def test_short_answers_are_labelled_by_agreement_long_ones_are_not() -> None:
    assert agreement("The answer is 42.", "The answer is 42. Because 17 + 25 = 42.") == 1.0
    assert agreement("The answer is (B).", "Answer: C") == 0.0
    assert agreement("The answer is amber.", "The answer is basalt.") == 0.0
    assert agreement(" ".join(["word"] * 60), "The answer is 42.") is None


def test_judge_grade_is_read_as_a_share_of_ten() -> None:
    assert parse_grade("8") == 0.8
    assert parse_grade("Grade: 10/10") == 1.0
    assert parse_grade("42") == 1.0
    assert parse_grade("no idea") is None


def test_a_judge_echoing_the_scale_before_its_grade_is_read_by_its_grade() -> None:
    """The prompt ends "Grade (0-10):"; a judge that repeats it must not be read as grading 0."""
    assert parse_grade("Grade (0-10): 8") == 0.8
    assert parse_grade("On a 0 to 10 scale: 6") == 0.6
    assert parse_grade("0") == 0.0
    assert parse_grade("8 out of 10") == 0.8


def _completed(tenant: Tenant, rid: str = "r1") -> Completed:
    return Completed(rid, 1.0, tenant, "router/p", "p", "single:small", "small", SUM, None,
                     (CallRecord("small", Usage(10, 5), 0.001, 0.1),), 10, "default")


def test_record_keeps_only_a_keyed_digest_of_the_prompt_unless_the_tenant_logs_prompts() -> None:
    digests = Digests(b"a-secret-of-sixteen-or-more")
    hashed = build_record(_completed(Tenant("t")), digests)
    kept = build_record(_completed(Tenant("t", log_prompts=True)), digests)
    assert "prompt" not in hashed and hashed["prompt_hmac"] == digests.prompt("What is 17 + 25?")
    assert kept["prompt"] == "What is 17 + 25?" and "prompt_hmac" not in kept
    assert kept["cost_usd"] == 0.001 and kept["completion_tokens"] == 5


def test_request_log_drops_records_when_its_queue_is_full_never_waits() -> None:
    requests = RequestLog(MemoryStore(), RequestLogSettings(queue_size=2))
    for i in range(3):
        requests.add(_completed(Tenant("t"), f"r{i}"))
    assert requests.dropped == 1 and requests.stats()["queued"] == 2


def test_memory_store_feedback_needs_a_record_and_replaces_per_source() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        key = request_key("t", "r1")
        assert await store.put_feedback(key, "fb:user", b"1") is None
        await store.append_records(REQUESTS_STREAM, [(key, b'{"request_id":"r1"}')], maxlen=10, ttl_s=60)
        assert await store.put_feedback(key, "fb:user", b"1") is False
        assert await store.put_feedback(key, "fb:user", b"2") is True
        assert await store.put_feedback(request_key("other", "r1"), "fb:user", b"1") is None
        [entry] = await store.request_entries([key])
        assert entry == {"record": b'{"request_id":"r1"}', "fb:user": b"2"}

    asyncio.run(scenario())


def test_a_label_posted_to_another_replica_just_after_the_answer_finds_its_record() -> None:
    # Behind a load balancer the label reaches a replica other than the one that answered, whose writer
    # has the record queued for its linger: the label was a 404, and lost.
    async def scenario() -> tuple[bool, float]:
        store = MemoryStore()
        answered, other = RequestLog(store, RequestLogSettings()), RequestLog(store, RequestLogSettings())
        answered.start()
        answered.add(_completed(Tenant("t")))
        _, replaced = await other.put_feedback("t", Feedback("r1", "user", 1.0, "up"))
        started = asyncio.get_running_loop().time()
        with pytest.raises(NotFound):  # an unknown id is still not found, once the wait is over
            await other.put_feedback("t", Feedback("r2", "user", 1.0, "up"))
        await answered.close()
        return replaced, asyncio.get_running_loop().time() - started

    replaced, waited = asyncio.run(scenario())
    assert replaced is False and waited < 2.0


def test_memory_request_log_is_capped() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        items = [(request_key("t", f"r{i}"), b"{}") for i in range(5)]
        await store.append_records(REQUESTS_STREAM, items, maxlen=3, ttl_s=60)
        assert len(await store.records_after(REQUESTS_STREAM, "0-0", 100)) == 3
        assert await store.request_entries([items[0][0]]) == [None]

    asyncio.run(scenario())


def test_memory_request_log_is_capped_in_bytes_too() -> None:
    """Records of `log_prompts` tenants hold their prompts: 100,000 of them held gigabytes."""
    async def scenario() -> None:
        store = MemoryStore(max_record_bytes=1_000)
        big = [(request_key("t", f"r{i}"), b"x" * 300) for i in range(6)]
        await store.append_records(REQUESTS_STREAM, big, maxlen=100, ttl_s=60)
        assert len(await store.records_after(REQUESTS_STREAM, "0-0", 100)) == 3
        assert [e is not None for e in await store.request_entries([k for k, _ in big])] == [False] * 3 + [True] * 3
        await store.append_records(REQUESTS_STREAM, [(request_key("u", "r0"), b"y" * 300)], maxlen=100, ttl_s=60)
        # each tenant's records are capped apart: "u" takes no room from "t"
        assert [e is not None for e in await store.request_entries([k for k, _ in big])] == [False] * 3 + [True] * 3
        # a record written again under its key counts once
        for _ in range(5):
            await store.append_records(REQUESTS_STREAM, [big[5]], maxlen=100, ttl_s=60)
        assert await store.request_entries([big[3][0]]) != [None]

    asyncio.run(scenario())


def test_export_row_takes_the_most_trusted_label_and_names_models_as_the_router_knows_them() -> None:
    record = {"tenant": "t", "request_id": "r1", "deployment": "small", "prompt": "hi", "prompt_tokens": 3,
              "category": "chat", "cost_usd": 0.001}
    feedback = {"user": {"score": 0.0}, "eval": {"score": 1.0}, "judge": {"score": 0.2},
                "gateway:judge": {"score": 0.5, "against": "large"}}
    row = to_row(record, feedback, model_names(DEPLOYMENTS))
    assert row["models"] == {"Meta-Llama-3.1-8B-Instruct": {"score": 1.0, "cost_usd": 0.001},
                             "large": {"score": 1.0}}
    # the gateway's own judge outranks what a client calls "judge"
    row = to_row(record, {"judge": {"score": 0.2}, "gateway:judge": {"score": 0.5, "against": "large"}}, {})
    assert row["models"]["small"]["score"] == 0.5
    assert row["id"] == "traffic/t/r1" and row["category"] == "traffic/chat" and row["split"] in ("train", "validation")


def test_export_reads_a_request_log_the_gateway_is_still_writing(tmp_path: Path) -> None:
    # the gateway was mid-way through a line: the whole export stopped, "line 3 is not JSON"
    log = tmp_path / "requests.jsonl"
    log.write_bytes(b'{"kind":"request","tenant":"t","request_id":"r1","time":1.0,"deployment":"small","prompt":"q"}\n'
                    b'{"kind":"feedback","tenant":"t","request_id":"r1","source":"user","score":1.0}\n'
                    b'{"kind":"request","tenant":"t","request_id":"r2","ti')
    [(record, feedback)] = list(from_jsonl(log, 0.0))
    assert record["request_id"] == "r1" and feedback["user"]["score"] == 1.0
    log.write_bytes(b'{"kind":"request","tenant":"t","request_id":"r2","ti\n')  # an ended line is the file's own
    with pytest.raises(InputError, match="line 1 is not JSON"):
        list(from_jsonl(log, 0.0))


def test_durations() -> None:
    assert parse_duration("24h") == 86400 and parse_duration("30m") == 1800 and parse_duration("90") == 90
    with pytest.raises(ValueError):
        parse_duration("yesterday")
    assert parse_duration("5200w") == 5200 * 604800
    for absurd in ("9" * 400, "1" + "0" * 308 + "d", "36525.1d"):  # the first two are an infinite float
        with pytest.raises(ValueError, match="is over 100 years"):
            parse_duration(absurd)


class _Upstreams:
    """Answers as `against`; fails as the judge."""

    async def call(self, names: tuple[str, ...], body: dict[str, Any], parent: Any, *, deadline: Any,
                   role: str = "answer") -> tuple[Completion, CallRecord]:
        if role == "judge":
            raise UpstreamError("deployment 'large' failed: 500")
        text = " ".join(["reference"] * 80)
        done = Completion({"choices": [{"message": {"content": text}}]}, Usage(10, 80), 0.1)
        return done, CallRecord(names[0], done.usage, 0.002, 0.1, role)


def _job() -> Job:
    """Request r1 of tenant t, answered by `small`, shadowed by `large` and judged by it."""
    return Job(Shadow(1.0, "large", "large"), Tenant("t"), _completed(Tenant("t")), {"messages": SUM},
               " ".join(["cheap"] * 80), "small", 10, 5.0)


def _evaluator(upstreams: _Upstreams, store: MemoryStore) -> tuple[ShadowEvaluator, Ledger, RequestLog]:
    """A shadow evaluator on the test deployments, its ledger started."""
    prices = {d.name: DeploymentPrice(1e-7, 2e-7, "config") for d in DEPLOYMENTS}
    catalog = Catalog({d.name: d for d in DEPLOYMENTS}, prices)
    ledger = Ledger(store)
    ledger.start()
    requests = RequestLog(store, RequestLogSettings())
    shadow = ShadowEvaluator(upstreams, catalog, Authenticator([], store), ledger,  # type: ignore[arg-type]
                             requests, Telemetry())
    return shadow, ledger, requests


def test_a_failing_judge_leaves_the_request_unlabelled_and_bills_what_ran() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        shadow, ledger, requests = _evaluator(_Upstreams(), store)
        job = _job()
        assert await shadow.evaluate(job) is None
        assert shadow.counts["failed"] == 1
        await ledger.close()
        rows = spend_table(await read_spend(store, window(None, None)), ("plan_kind",))
        assert [(r["plan_kind"], r["requests"]) for r in rows] == [("shadow", 0)]  # billed, counted apart
        assert rows[0]["cost_usd"] == pytest.approx(0.002)
        with pytest.raises(NotFound):
            await requests.put_feedback("t", Feedback("r1", "judge", 1.0))

    asyncio.run(scenario())


class _Rambling(_Upstreams):
    """A judge that answers the question instead of grading it, quoting the tenant's answer."""

    async def call(self, names: Any, body: Any, span: Any, *, deadline: Any, role: str = "answer") -> Any:
        if role != "judge":
            return await super().call(names, body, span, deadline=deadline, role=role)
        done = Completion({"choices": [{"message": {"content": "Patient Jane Roe takes warfarin daily."}}]},
                          Usage(10, 8), 0.1)
        return done, CallRecord(names[0], done.usage, 0.002, 0.1, role)


@pytest.mark.parametrize("log_prompts", [False, True])
def test_a_judge_reply_without_a_grade_is_logged_as_text_only_for_a_tenant_that_logs_prompts(
        log_prompts: bool, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        shadow, ledger, _ = _evaluator(_Rambling(), MemoryStore())
        tenant = Tenant("t", log_prompts=log_prompts)
        assert await shadow.evaluate(replace(_job(), tenant=tenant, record=_completed(tenant))) is None
        await ledger.close()

    with caplog.at_level("INFO", logger="switchyard.shadow"):
        asyncio.run(scenario())
    [line] = [r.getMessage() for r in caplog.records if "gave no grade" in r.getMessage()]
    assert ("Jane Roe" in line) is log_prompts, line


class _Agreeing(_Upstreams):
    """The strong deployment gives the cheap answer's own number: an agreement label, no judge."""

    async def call(self, names: Any, body: Any, span: Any, *, deadline: Any, role: str = "answer") -> Any:
        done = Completion({"choices": [{"message": {"content": "The answer is 42."}}]}, Usage(10, 5), 0.1)
        return done, CallRecord(names[0], done.usage, 0.002, 0.1, role)


def test_a_shadow_label_lands_only_on_the_record_it_evaluated_not_a_later_one_reusing_its_id() -> None:
    # A tenant reused a shadowed request's id for another prompt before the label came in: the gateway's
    # own label (what `logs export` trusts over any client's) would have named the other prompt's record.
    async def scenario() -> tuple[Any, Any, Any]:
        store = MemoryStore()
        shadow, ledger, requests = _evaluator(_Agreeing(), store)
        requests.start()
        first, second = _completed(Tenant("t")), _completed(Tenant("t"))
        second.at = 2.0  # another request, another record, the same id
        job = replace(_job(), record=first, answer="The answer is 42.")
        requests.add(first)
        await requests.wait_written(request_key("t", "r1"))
        requests.add(second)
        await requests.wait_written(request_key("t", "r1"))
        stale = await shadow.evaluate(job)
        again = replace(job, record=second)
        fresh = await shadow.evaluate(again)
        entry = (await store.request_entries([request_key("t", "r1")]))[0]
        await requests.close()
        await ledger.close()
        return stale, fresh, entry

    stale, fresh, entry = asyncio.run(scenario())
    assert stale is None and fresh is not None and fresh.score == 1.0
    assert entry is not None and b'"time":2.0' in entry["record"] and len(entry) == 2  # the record, one label


class _DownStore(MemoryStore):
    async def append_records(self, stream: str, items: Any, maxlen: int, ttl_s: float) -> None:
        from gateway.state import StoreUnavailable

        raise StoreUnavailable("connection refused")


def test_request_log_writer_counts_records_the_store_refused_and_carries_on() -> None:
    async def scenario() -> None:
        requests = RequestLog(_DownStore(), RequestLogSettings())
        requests.start()
        requests.add(_completed(Tenant("t"), "r1"))
        requests.add(_completed(Tenant("t"), "r2"))
        await requests.wait_written(request_key("t", "r2"))
        assert requests.failed == 2 and requests.written == 0
        assert requests._writer is not None and not requests._writer.done()
        await requests.close()

    asyncio.run(scenario())


_READ_ON = Draining()


class _LateUpstreams(_Upstreams):
    """The strong call times out, and its answer arrives a moment after the gateway gave up on it."""

    async def call(self, names: tuple[str, ...], body: dict[str, Any], parent: Any, *, deadline: Any,
                   role: str = "answer") -> tuple[Completion, CallRecord]:
        answer: asyncio.Future[CallRecord] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, answer.set_result,
                                              CallRecord(names[0], Usage(10, 80), 0.003, 0.3, role))

        async def priced(rec: CallRecord) -> CallRecord:
            return rec

        drain(answer, priced, lambda: 0.004, into=_READ_ON)
        raise UpstreamError(f"deployment '{names[0]}' timed out")


def test_a_shadow_call_that_answers_after_its_timeout_is_billed_as_the_tenants_shadow_spend() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        shadow, ledger, _ = _evaluator(_LateUpstreams(), store)
        job = _job()
        assert await shadow.evaluate(job) is None
        await asyncio.sleep(0.2)  # the late answer lands after 10 ms
        assert len(_READ_ON) == 0  # nothing left being read
        await ledger.close()
        rows = spend_table(await read_spend(store, window(None, None)), ("tenant", "plan_kind"))
        assert [(r["tenant"], r["plan_kind"], r["calls"], r["requests"]) for r in rows] == [("t", "shadow", 1, 0)]
        assert rows[0]["cost_usd"] == pytest.approx(0.003)

    asyncio.run(scenario())


def test_a_shadow_call_is_held_at_the_tier_and_search_its_request_asks_for() -> None:
    """The strong call is sent the request's `service_tier`: its hold is at priority (twice a config
    price), not the standard rates. A web search no price covers is skipped on a budget, not held at $0."""
    async def scenario() -> None:
        shadow, ledger, _ = _evaluator(_Upstreams(), MemoryStore())
        plain = _job()
        priority = replace(plain, request={"messages": SUM, "service_tier": "priority", "max_tokens": 50})
        standard = replace(plain, request={"messages": SUM, "max_tokens": 50})
        strong = (10 * 1e-7 + 50 * 2e-7)
        assert shadow._worst_case(priority) == pytest.approx(shadow._worst_case(standard) + strong)  # type: ignore[operator]
        searching = replace(plain, tenant=Tenant("t", budget_usd=1.0), request={"messages": SUM,
                                                                                "web_search_options": {}})
        assert await shadow.evaluate(searching) is None
        assert shadow.counts["skipped_budget"] == 1
        await ledger.close()

    asyncio.run(scenario())


def test_a_shadow_call_is_held_with_its_request_s_audio_prompt_at_the_audio_rate() -> None:
    """The strong call is sent the request's audio: its hold has the clip's 960 tokens at the audio rate;
    where no audio rate is known, a budgeted tenant's shadow is skipped, not held at the text rate."""
    clip = {"type": "input_audio", "input_audio": {"data": "SUQz" * 10_000, "format": "mp3"}}  # 960 tokens
    heard = [{"role": "user", "content": [{"type": "text", "text": "What is said?"}, clip]}]

    async def scenario() -> None:
        shadow, ledger, _ = _evaluator(_Upstreams(), MemoryStore())
        plain = replace(_job(), request={"messages": SUM, "max_tokens": 50})
        audio = replace(plain, request={"messages": heard, "max_tokens": 50})
        unpriced = replace(audio, tenant=Tenant("t", budget_usd=1.0))
        assert await shadow.evaluate(unpriced) is None
        assert shadow.counts["skipped_budget"] == 1
        prices = {n: replace(p, audio_input_per_token=4e-6) for n, p in shadow.catalog.prices.items()}
        shadow.catalog = Catalog(shadow.catalog.deployments, prices)
        assert shadow._worst_case(audio) == pytest.approx(shadow._worst_case(plain) + 960 * (4e-6 - 1e-7))  # type: ignore[operator]
        await ledger.close()

    asyncio.run(scenario())


def test_a_shadow_judge_is_held_for_a_cheap_answer_longer_than_the_strong_one_may_be() -> None:
    """The judge reads the strong answer and the cheap one the client got, each as long as its own
    deployment lets it be: a cheap deployment with the larger `max_output_tokens` writes the longer one."""
    wordy = [DEPLOYMENTS[0].model_copy(update={"max_output_tokens": 8192}),
             DEPLOYMENTS[1].model_copy(update={"max_output_tokens": 1024})]

    async def scenario() -> None:
        shadow, ledger, _ = _evaluator(_Upstreams(), MemoryStore())
        shadow.catalog = Catalog({d.name: d for d in wordy}, shadow.catalog.prices)
        job = _job()  # no max_tokens: small's answer may be 8192 tokens, large's 1024
        strong = 10 * 1e-7 + 1024 * 2e-7
        judge_prompt = 10 + 1024 + 8192  # the request, both answers (and the judge's own framing on top)
        held = shadow._worst_case(job)
        assert held is not None and held >= strong + judge_prompt * 1e-7
        await ledger.close()

    asyncio.run(scenario())


def test_a_shadow_holds_every_attempt_its_deadline_allows_as_a_request_does() -> None:
    """An attempt given up on at its timeout is still read and billed if it answers late, while the next
    one runs: a shadow of a deployment that times out and retries may be billed for each. It held one
    call's worth, and a slow `against` overran a short budget."""
    retrying = [DEPLOYMENTS[0], DEPLOYMENTS[1].model_copy(update={"timeout_s": 1.0, "max_retries": 2})]

    async def scenario() -> None:
        shadow, ledger, _ = _evaluator(_Upstreams(), MemoryStore())
        once = shadow._worst_case(replace(_job(), shadow=Shadow(1.0, "large")))
        shadow.catalog = Catalog({d.name: d for d in retrying}, shadow.catalog.prices)
        job = replace(_job(), shadow=Shadow(1.0, "large"))  # a 5 s deadline: three attempts of 1 s fit
        assert once is not None and shadow._worst_case(job) == pytest.approx(3 * once)
        await ledger.close()

    asyncio.run(scenario())


def test_the_request_log_file_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    """It holds prompt digests and the prompts of log_prompts tenants: made under a umask of 022, it was
    readable by every user of the host."""
    old = os.umask(0o022)
    try:
        JsonlSink(tmp_path / "logs" / "requests.jsonl").write([b'{"prompt": "secret"}'])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "logs" / "requests.jsonl").stat().st_mode) == 0o600
