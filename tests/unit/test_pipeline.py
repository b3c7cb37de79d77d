"""The request path (`gateway.pipeline`) end to end in one process: the real services of
`build_services` over the in-memory store, with the fake backend at the provider seam (no sockets)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.api.app import build_services
from gateway.auth import hash_key
from gateway.config import DeploymentConfig, parse_config
from gateway.errors import AuthenticationFailed, BudgetExceeded, PermissionDenied, UpstreamError
from gateway.handoff import Handoff
from gateway.ledger import CACHE
from gateway.messages import count_text, definition_tokens, request_bound
from gateway.pipeline import Answer, CallContext, LiveAnswer, Services, handle, resolve_entry, route
from gateway.policy import Overrides
from gateway.providers.base import ProviderFailure
from gateway.state import holds_key, spend_key
from tests.support.fake_backend import Delay, FakeBackend, Stream, answer, chunk

KEY, LIMITED, BROKE = "sk-team", "sk-limited", "sk-broke"
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
ASK: dict[str, Any] = {"model": "router/cheap", "temperature": 0,
                       "messages": [{"role": "user", "content": "Name a prime number."}]}


def _services(tmp_path: Path, handler: Any, *, request_log: bool = False) -> tuple[Services, FakeBackend]:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "cheap.yaml").write_text("candidates:\n  - single: small\nfallbacks:\n  small: [large]\n")
    (folder / "other.yaml").write_text("candidates:\n  - single: large\n")  # the only one `limited` may use
    (folder / "shadowed.yaml").write_text("candidates:\n  - single: small\nshadow: {rate: 1.0, against: large}\n")
    raw = {
        "deployments": [{"name": n, "model": f"openai/{n}", "api_base": "http://upstream.invalid/v1", "tier": n,
                         "price": PRICE, "max_retries": 0} for n in ("small", "large")],
        "default_policy": "cheap",
        "tenants": [{"name": "team", "api_key_sha256": hash_key(KEY)},
                    {"name": "limited", "api_key_sha256": hash_key(LIMITED), "policies": ["other"],
                     "deployments": []},
                    {"name": "broke", "api_key_sha256": hash_key(BROKE), "budget_usd": 0.0}],
        "request_log": {"enabled": request_log},
    }
    svc = build_services(parse_config(raw, "gw.yaml"), policies_dir=folder)
    backend = FakeBackend(handler)
    svc.upstreams.backends = {name: backend for name in svc.upstreams.backends}
    return svc, backend


def _ok(d: DeploymentConfig, body: dict[str, Any]) -> Any:
    return answer("7", model=d.name)


def _ask(svc: Services, request: dict[str, Any] = ASK, key: str | None = KEY) -> Answer | LiveAnswer:
    return asyncio.run(handle(svc, dict(request), CallContext(authorization=f"Bearer {key}" if key else None)))


async def _spent(svc: Services, tenant: str) -> float:
    return await svc.auth.store.get_float(spend_key(tenant))


def test_an_answer_is_routed_billed_and_labelled(tmp_path: Path) -> None:
    svc, backend = _services(tmp_path, _ok)
    out = _ask(svc)
    assert isinstance(out, Answer)
    assert (out.plan, out.deployment, out.cache) == ("single:small", "small", "miss")
    assert out.decision is not None and out.decision.policy == "cheap"
    expected = 10 * 1e-6 + 5 * 2e-6  # the fake's usage at the configured prices
    assert out.cost_usd == pytest.approx(expected)
    assert asyncio.run(_spent(svc, "team")) == pytest.approx(expected)
    assert backend.called("small") == 1


def test_a_repeated_deterministic_request_is_served_from_the_cache_for_nothing(tmp_path: Path) -> None:
    svc, backend = _services(tmp_path, _ok)
    first, again = _ask(svc), _ask(svc)
    assert isinstance(first, Answer) and isinstance(again, Answer)
    assert (again.cache, again.cost_usd, again.body["choices"]) == ("hit", 0.0, first.body["choices"])
    assert backend.called("small") == 1
    assert asyncio.run(_spent(svc, "team")) == pytest.approx(first.cost_usd)
    kinds = [spent.plan for spent in _queued(svc)]
    assert kinds == ["single:small", CACHE]


def _queued(svc: Services) -> list[Any]:
    return list(svc.ledger._bills.items)


def test_a_sampled_request_is_not_cached(tmp_path: Path) -> None:
    svc, backend = _services(tmp_path, _ok)
    sampled = {**ASK, "temperature": 0.7}
    assert [_ask(svc, sampled).cache, _ask(svc, sampled).cache] == ["bypass", "bypass"]
    assert backend.called("small") == 2


def test_no_key_or_a_wrong_key_is_refused_before_any_call(tmp_path: Path) -> None:
    svc, backend = _services(tmp_path, _ok)
    with pytest.raises(AuthenticationFailed):
        _ask(svc, key=None)
    with pytest.raises(AuthenticationFailed):
        _ask(svc, key="sk-nobody")
    assert backend.calls == []


def test_a_tenant_may_use_only_its_policies_and_deployments(tmp_path: Path) -> None:
    svc, backend = _services(tmp_path, _ok)
    with pytest.raises(PermissionDenied):
        _ask(svc, key=LIMITED)
    with pytest.raises(PermissionDenied):
        _ask(svc, {**ASK, "model": "large"}, key=LIMITED)
    assert backend.calls == []


def test_a_tenant_over_its_budget_is_refused_before_any_call(tmp_path: Path) -> None:
    svc, backend = _services(tmp_path, _ok)
    with pytest.raises(BudgetExceeded):
        _ask(svc, key=BROKE)
    assert backend.calls == []


def test_a_pinned_deployment_is_called_as_asked_without_a_decision(tmp_path: Path) -> None:
    svc, backend = _services(tmp_path, _ok)
    out = _ask(svc, {**ASK, "model": "large"})
    assert (out.plan, out.deployment, out.decision) == ("single:large", "large", None)
    assert (backend.called("small"), backend.called("large")) == (0, 1)


def test_a_pinned_calls_log_line_names_no_policy_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It named the default policy's version, which did not decide it (its span and record name none)."""
    svc, _ = _services(tmp_path, _ok)
    with caplog.at_level(logging.INFO, logger="switchyard.request"):
        _ask(svc, {**ASK, "model": "large"})
        _ask(svc)
    pinned, routed = [r for r in caplog.records if r.name == "switchyard.request"]
    assert (pinned.policy, pinned.policy_version) == ("pinned", "")  # type: ignore[attr-defined]
    assert (routed.policy, routed.policy_version) == ("cheap", svc.policies.get("cheap").version)  # type: ignore[attr-defined,union-attr]


def test_a_failing_deployment_falls_back_and_the_label_says_so(tmp_path: Path) -> None:
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        return ProviderFailure("down", status=503, retryable=False) if d.name == "small" else answer(model=d.name)
    svc, _ = _services(tmp_path, handler)
    out = _ask(svc)
    assert (out.plan, out.deployment) == ("single:small>fallback:large", "large")


def test_a_request_nothing_answers_costs_nothing_and_is_not_cached(tmp_path: Path) -> None:
    svc, backend = _services(tmp_path, lambda d, b: ProviderFailure("down", status=503, retryable=False))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            _ask(svc)
    assert backend.called("small") == 2  # nothing was cached
    assert asyncio.run(_spent(svc, "team")) == 0.0


def test_a_live_stream_is_billed_once_when_it_ends_and_then_cached(tmp_path: Path) -> None:
    svc, _ = _services(tmp_path, lambda d, b: Stream([chunk("7", finish="stop"), chunk(usage=(12, 3))]))

    async def consume() -> tuple[LiveAnswer, list[dict[str, Any]]]:
        out = await handle(svc, {**ASK, "stream": True}, CallContext(authorization=f"Bearer {KEY}"))
        assert isinstance(out, LiveAnswer)
        chunks = [c async for c in out.stream]
        await out.settle()  # the HTTP layer's background task runs it again: it settles once
        return out, chunks
    out, chunks = asyncio.run(consume())
    assert (out.plan, out.deployment) == ("single:small", "small")
    assert chunks[-1]["switchyard"]["cost_usd"] == pytest.approx(12e-6 + 3 * 2e-6)
    assert asyncio.run(_spent(svc, "team")) == pytest.approx(12e-6 + 3 * 2e-6)
    assert [s.plan for s in _queued(svc)] == ["single:small"]
    cached = _ask(svc)
    assert isinstance(cached, Answer) and cached.cache == "hit"
    assert cached.body["choices"][0]["message"]["content"] == "7"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_stream_left_during_its_reasoning_is_billed_for_the_reasoning_it_streamed(
        tmp_path: Path, field: str) -> None:
    """vLLM's reasoning parsers (and DeepSeek, OpenRouter) stream a model's thinking as `reasoning_content`
    or `reasoning` deltas, billed as completion tokens. A client that leaves before the usage chunk is
    billed on what was counted, and that must count the thinking, not only the answer's `content`."""
    thought = "Let me think about which numbers are prime, one at a time. " * 60
    reasoning = [{"object": "chat.completion.chunk", "model": "fake",
                  "choices": [{"index": 0, "delta": {field: thought[i:i + 200]}, "finish_reason": None}]}
                 for i in range(0, len(thought), 200)]
    ending = [chunk("7"), chunk(finish="stop"), chunk(usage=(12, 900))]
    svc, _ = _services(tmp_path, lambda d, b: Stream([*reasoning, *ending]))

    async def leave_after_the_answer_starts() -> None:
        out = await handle(svc, {**ASK, "stream": True}, CallContext(authorization=f"Bearer {KEY}"))
        assert isinstance(out, LiveAnswer)
        async for c in out.stream:
            if any((ch.get("delta") or {}).get("content") for ch in c.get("choices") or ()):
                break  # the client leaves: no usage chunk will be read
        await out.settle()
    asyncio.run(leave_after_the_answer_starts())
    streamed = count_text(thought)
    assert asyncio.run(_spent(svc, "team")) >= streamed * 2e-6  # $2 per million output tokens


def test_a_hedged_answer_read_longer_than_its_hold_lasts_keeps_its_budget_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hedged plan's legs stream even for a whole answer, and a stream may run past any bound known in
    advance (each chunk only comes within its deployment's timeout_s): while the winner is read, the
    request's hold is renewed, as a relayed stream's is, so the budget it will spend is not lent out."""
    monkeypatch.setattr("gateway.pipeline.HOLD_MARGIN_S", 0.1)  # holds of 0.1 s + the plan's timeouts
    monkeypatch.setattr("gateway.admission.RENEW_EVERY_S", 0.05)
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "hedged.yaml").write_text("candidates:\n  - single: small\nfallbacks:\n  small: [large]\n"
                                        "hedge_after_ms: 50\ncache: {enabled: false}\n")
    raw = {"deployments": [{"name": n, "model": f"openai/{n}", "api_base": "http://upstream.invalid/v1", "tier": n,
                            "price": PRICE, "max_retries": 0, "timeout_s": 0.2} for n in ("small", "large")],
           "default_policy": "hedged", "request_log": {"enabled": False},
           "tenants": [{"name": "team", "api_key_sha256": hash_key(KEY), "budget_usd": 1.0}]}
    svc = build_services(parse_config(raw, "gw.yaml"), policies_dir=folder)
    slow = Stream([chunk(f"word{i} ") for i in range(12)] + [chunk(finish="stop"), chunk(usage=(12, 24))],
                  pause_s=0.08)  # ~1 s to read; the hold lasts 0.2 + 0.2 + 0.1 s
    svc.upstreams.backends = {name: FakeBackend(lambda d, b: slow) for name in svc.upstreams.backends}

    async def scenario() -> tuple[float, Answer | LiveAnswer]:
        answering = asyncio.create_task(handle(svc, {**ASK, "model": "router/hedged"},
                                               CallContext(authorization=f"Bearer {KEY}")))
        await asyncio.sleep(0.8)  # past the hold's first time to live, the answer still being read
        held = (await svc.auth.store.budget_state(spend_key("team"), holds_key("team")))[1]
        return held, await answering
    held, out = asyncio.run(scenario())
    assert isinstance(out, Answer) and out.plan == "single:small"
    assert held > 0, "the hold lapsed while the answer was still being read"


def test_a_stream_cut_short_is_billed_on_counted_tokens_and_not_cached(tmp_path: Path) -> None:
    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        return Stream([chunk("seven is a prime")], fail=ProviderFailure("reset")) if body.get("stream") else answer()
    svc, backend = _services(tmp_path, handler)

    async def consume() -> None:
        out = await handle(svc, {**ASK, "stream": True}, CallContext(authorization=f"Bearer {KEY}"))
        assert isinstance(out, LiveAnswer)
        with pytest.raises(Exception, match="failed mid-stream"):
            async for _ in out.stream:
                pass
    asyncio.run(consume())
    assert asyncio.run(_spent(svc, "team")) > 0
    assert _ask(svc).cache == "miss"
    assert backend.called("small") == 2


def test_a_hedged_streams_record_bills_the_losing_leg_the_ledger_bills(tmp_path: Path) -> None:
    """A hedged stream's losing leg that showed its first token is billed with the request (the ledger);
    the request's record sums the same calls, so its cost and tokens are the ledger's."""
    from gateway.feedback import Completed, build_record

    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "hedged.yaml").write_text("candidates:\n  - single: small\nfallbacks:\n  small: [large]\n"
                                        "hedge_after_ms: 50\ncache: {enabled: false}\n")
    raw = {"deployments": [{"name": n, "model": f"openai/{n}", "api_base": "http://upstream.invalid/v1", "tier": n,
                            "price": PRICE, "max_retries": 0} for n in ("small", "large")],
           "default_policy": "hedged", "tenants": [{"name": "team", "api_key_sha256": hash_key(KEY)}]}
    svc = build_services(parse_config(raw, "gw.yaml"), policies_dir=folder)

    def handler(d: DeploymentConfig, body: dict[str, Any]) -> Any:
        stream = Stream([chunk("7", finish="stop"), chunk(usage=(12, 3))])
        return Delay(0.12, stream) if d.name == "small" else stream  # small shows its token as large wins
    svc.upstreams.backends = {name: FakeBackend(handler) for name in svc.upstreams.backends}

    async def consume() -> None:
        out = await handle(svc, {**ASK, "model": "router/hedged", "stream": True},
                           CallContext(authorization=f"Bearer {KEY}", request_id="req-hedged"))
        assert isinstance(out, LiveAnswer)
        assert [c async for c in out.stream]
        await out.settle()
    asyncio.run(consume())
    [spent] = _queued(svc)
    assert {c.deployment for c in spent.calls} == {"small", "large"}  # the ledger bills both legs
    assert svc.requests is not None
    [done] = [x for x in svc.requests._queue.items if isinstance(x, Completed)]
    record = build_record(done, svc.requests.digests)
    assert record["cost_usd"] == pytest.approx(spent.cost_usd)
    assert record["prompt_tokens"] == sum(c.usage.prompt_tokens for c in spent.calls)
    assert record["completion_tokens"] == sum(c.usage.completion_tokens for c in spent.calls)


@pytest.mark.parametrize("model", ["small", "router/cheap"])
def test_a_budget_holds_a_capped_requests_tool_definitions_and_so_does_a_call_given_up_on(
        tmp_path: Path, model: str) -> None:
    # A cost cap that bound rebuilt the route without its definitions' bound: 30 tools (~26 kB of JSON)
    # were held as the 9 prompt tokens of "hi", below even the gateway's own count of the request.
    svc, _ = _services(tmp_path, _ok)
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": "d " * 400,
                                               "parameters": {"type": "object", "properties": {}}}}
             for i in range(30)]
    request = {"model": model, "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    tenant = svc.auth.identify(f"Bearer {KEY}")
    bound, _ = request_bound(request)
    assert bound > 20_000
    for cap in (None, 0.016):  # binds: ~13,800 prompt tokens at $1/M leave ~1,100 output tokens at $2/M
        ctx = CallContext(overrides=Overrides(max_cost_usd=cap))
        r = route(svc, resolve_entry(svc, model, ctx, tenant), request, ctx, tenant.name)
        assert r.capped is (cap is not None) and r.held_prompt_tokens == bound
    late = svc.upstreams._worst_usd("small", request)
    assert late >= bound * PRICE["input_per_mtok"] / 1e6


def test_a_shadow_of_a_request_is_held_at_the_prompt_bound_budgets_hold(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # 1,600 "!" are ~110 tokens to tiktoken and 1,600 to a server that reads a mark a token: the shadow's
    # strong call was held at the count, as requests were before their holds took the bound.
    svc, _ = _services(tmp_path, _ok, request_log=True)
    assert svc.shadow is not None
    offered: list[int] = []
    monkeypatch.setattr(svc.shadow, "offer", lambda *args, **kw: offered.append(args[6]))
    question = [{"role": "user", "content": "!" * 1600}]
    asyncio.run(handle(svc, {**ASK, "model": "router/shadowed", "messages": question},
                       CallContext(authorization=f"Bearer {KEY}", request_id="r-1")))
    assert offered == [request_bound({"messages": question})[0]]


def test_a_request_whose_record_the_full_request_log_dropped_is_not_shadowed(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # its shadow was run and billed to the tenant, and then its label had no record to be stored with
    svc, _ = _services(tmp_path, _ok, request_log=True)
    assert svc.shadow is not None and svc.requests is not None
    offered: list[str] = []
    monkeypatch.setattr(svc.shadow, "offer", lambda *args, **kw: offered.append(args[2].request_id))
    monkeypatch.setattr(svc.requests, "_queue", Handoff(1))  # the writer is not running: one record fills it
    for rid in ("r-1", "r-2"):  # two questions: the second is no cache hit
        asyncio.run(handle(svc, {**ASK, "model": "router/shadowed", "messages": [{"role": "user", "content": rid}]},
                           CallContext(authorization=f"Bearer {KEY}", request_id=rid)))
    assert offered == ["r-1"] and svc.requests.dropped == 1


def test_a_messages_name_and_tool_call_id_are_held_and_counted_as_its_content_is() -> None:
    # A 20 kB `name` was held as the 9 prompt tokens of "hi": the client chooses its length, the model reads it.
    bare = {"messages": [{"role": "user", "content": "hi"}]}
    named = {"messages": [{"role": "user", "content": "hi", "name": "n" * 20_000},
                          {"role": "tool", "content": "42", "tool_call_id": "call_" + "x" * 5_000}]}
    assert request_bound(named)[0] >= request_bound(bare)[0] + 25_000
    assert definition_tokens(named)[0] > 1_000


def test_an_assistant_messages_refusal_is_held_and_counted_as_its_content_is() -> None:
    # An earlier turn's `refusal` (OpenAI's assistant message field, beside `content`) is text the model reads:
    # 200 kB of it was held as the prompt without it, as a refusal content part is not.
    bare = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None},
                         {"role": "user", "content": "again"}]}
    refused = {"messages": [{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": None, "refusal": "x " * 100_000},
                            {"role": "user", "content": "again"}]}
    assert request_bound(refused)[0] >= request_bound(bare)[0] + 200_000
    assert definition_tokens(refused)[0] > 50_000


def test_documents_rendered_into_the_prompt_are_held_and_counted_as_its_content_is() -> None:
    # vLLM's chat templates write a request's `documents` (its RAG field) into the prompt: 2 MB of them, billed as
    # prompt tokens, were held as the 9 tokens of "hi".
    bare = {"messages": [{"role": "user", "content": "hi"}]}
    grounded = {**bare, "documents": [{"title": "t", "text": "x " * 100_000}]}
    assert request_bound(grounded)[0] >= request_bound(bare)[0] + 200_000
    assert definition_tokens(grounded)[0] > 50_000


def test_a_priority_request_chooses_its_plan_at_the_priority_rates(tmp_path: Path) -> None:
    """The plans were priced at the standard rates whatever `service_tier` said: under a $0.003 cap a
    priority request took the large plan (predicted at $0.0021, billed about $0.0042) and had its answer
    cut to fit the cap, where the small plan would have answered whole. No price: priority is twice it."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "valued.yaml").write_text("candidates:\n  - single: small\n  - single: large\n"
                                        "objective: {value_usd: 1.0}\n")
    deployments = [{"name": n, "model": f"openai/{n}", "api_base": "http://upstream.invalid/v1", "tier": n,
                    "price": {"input_per_mtok": p, "output_per_mtok": 2 * p}, "expected_output_tokens": 100,
                    "ability": a} for n, p, a in (("small", 1.0, -1.0), ("large", 10.0, 3.0))]
    svc = build_services(parse_config({"deployments": deployments, "default_policy": "valued"}, "gw.yaml"),
                         policies_dir=folder)
    tenant = svc.auth.identify(None)
    ctx = CallContext(overrides=Overrides(max_cost_usd=0.003))
    chosen = {}
    for tier in (None, "priority"):
        request = {**ASK, "model": "auto"} | ({"service_tier": tier} if tier else {})
        r = route(svc, resolve_entry(svc, "auto", ctx, tenant), request, ctx, tenant.name)
        assert r.decision is not None
        large = next(c for c in r.decision.candidates if c.plan.label == "single:large")
        prompt = r.decision.signal.prompt_tokens
        rate = 2 if tier else 1
        assert large.estimate.cost_usd == pytest.approx(rate * (prompt * 10e-6 + 100 * 20e-6))
        chosen[tier] = r.plan.label
        assert r.max_tokens is not None and r.max_tokens >= 100  # the cap leaves room for a whole answer
    assert chosen == {None: "single:large", "priority": "single:small"}
