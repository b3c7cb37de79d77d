"""Calls given up on are still read and billed; broken streams resume on the next candidate.
At the provider seam, with the fake backend."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.executor import CallRecord, Deadline
from gateway.executor.drain import LATE, READ_ON, late_bills
from gateway.executor.resume import resuming
from gateway.messages import count_messages, count_text, prompt_bound
from gateway.providers.base import ProviderFailure, Usage
from gateway.streaming import Accumulator
from tests.support.fake_backend import Delay, Stream, answer, chunk, deployment, fake_upstreams

BODY = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}
CUT = ProviderFailure("a: connection dropped", reason="connection failed")


class _Collected:
    """A request's late calls: the most each may cost when given up on, and each one's end."""

    tenant = "acme"

    def __init__(self) -> None:
        self.worst: list[float] = []
        self.ended: list[CallRecord | None] = []

    def open(self, worst_usd: float) -> Any:
        self.worst.append(worst_usd)

        async def ended(call: CallRecord | None) -> None:
            self.ended.append(call)
        return ended


async def _collecting(work: Any, collected: _Collected | None = None) -> tuple[Any, list[CallRecord]]:
    """Run `work()` as a request whose late calls are billed into the returned list."""
    sink = collected or _Collected()
    late_bills.set(sink)
    done = await work()
    return done, [c for c in sink.ended if c is not None]


def test_a_call_that_answers_after_its_timeout_is_billed_late_while_the_fallback_answers(
        caplog: pytest.LogCaptureFixture) -> None:
    def handler(d: Any, body: dict[str, Any]) -> Any:
        return Delay(0.2) if d.name == "a" else answer("The answer is 42.", model=d.name)
    up, _ = fake_upstreams(handler, deployment("a", timeout_s=0.05, max_retries=0), deployment("b"))

    async def work() -> Any:
        done, record = await up.call(("a", "b"), BODY, None, deadline=Deadline.after(5))
        assert record.deployment == "b"
        await asyncio.sleep(0.3)  # a's answer arrives after the gateway gave up on it
        return done

    collected = _Collected()
    with caplog.at_level(logging.INFO, logger="switchyard"):
        _, billed = asyncio.run(_collecting(work, collected))
    assert [(c.deployment, c.role) for c in billed] == [("a", LATE)]
    assert billed[0].usage.prompt_tokens == 10 and billed[0].cost_usd > 0
    line = next(r for r in caplog.records if getattr(r, "event", None) == "late_answer")
    assert (line.tenant, line.cost_usd) == ("acme", billed[0].cost_usd)  # type: ignore[attr-defined]
    # given up on, it was held for at its worst (its prompt and the whole output it may write)
    worst = up.prices["a"].estimate(prompt_bound(BODY["messages"])[0], up.deployments["a"].max_output_tokens)
    assert collected.worst == [pytest.approx(worst)]


def test_a_call_that_fails_after_its_timeout_costs_nothing() -> None:
    def handler(d: Any, body: dict[str, Any]) -> Any:
        return Delay(0.1, CUT) if d.name == "a" else answer(model=d.name)
    up, _ = fake_upstreams(handler, deployment("a", timeout_s=0.05, max_retries=0), deployment("b"))

    async def work() -> None:
        await up.call(("a", "b"), BODY, None, deadline=Deadline.after(5))
        await asyncio.sleep(0.2)

    collected = _Collected()
    _, billed = asyncio.run(_collecting(work, collected))
    assert billed == [] and collected.ended == [None]  # it ended, costing nothing: its hold goes back


def _late_first_chunk(first: dict[str, Any]) -> tuple[str, list[Any]]:
    """Deployment `a` sends `first` after its timeout (the stream goes to `b`); what is answered and billed."""
    def handler(d: Any, body: dict[str, Any]) -> Any:
        return Delay(0.2, Stream([first, chunk(" is 42.")])) if d.name == "a" else answer(model="b")
    up, _ = fake_upstreams(handler, deployment("a", timeout_s=0.05, max_retries=0), deployment("b"))

    async def work() -> str:
        live = await up.open_stream(("a", "b"), BODY, None, deadline=Deadline.after(5))
        await live.rest.aclose()  # type: ignore[attr-defined]
        up.close_stream(live)
        await asyncio.sleep(0.3)
        return live.deployment

    return asyncio.run(_collecting(work))


def test_a_stream_whose_first_chunk_comes_late_is_billed_for_it_and_closed() -> None:
    answered, billed = _late_first_chunk(chunk("The answer"))
    assert answered == "b"
    assert [(c.deployment, c.role) for c in billed] == [("a", LATE)]
    assert billed[0].usage.completion_tokens == 2  # "The answer": what it had sent


def test_a_late_first_chunk_of_reasoning_is_billed_for_it() -> None:
    """The first chunk of a reasoning model served by vLLM or DeepSeek may be thinking, not content:
    billed as completion tokens all the same."""
    thought = "First, six times seven: six sevens are forty-two."
    _, billed = _late_first_chunk(
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"reasoning_content": thought}}]})
    assert [c.deployment for c in billed] == ["a"]
    assert billed[0].usage.completion_tokens == count_text(thought)


def _broken_then_whole(tools: bool = False) -> tuple[Any, Any]:
    def handler(d: Any, body: dict[str, Any]) -> Any:
        if d.name == "a":
            return Stream([{**chunk("The answer"), "id": "chatcmpl-a"}, {**chunk(" is"), "id": "chatcmpl-a"}],
                          fail=CUT)
        return Stream([{**chunk(" 42."), "id": "chatcmpl-b"}, {**chunk(finish="stop"), "id": "chatcmpl-b"},
                       chunk(usage=(20, 2))])
    return fake_upstreams(handler, deployment("a"), deployment("b", supports_prefill=True))


async def _relayed(up: Any, body: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    live = await up.open_stream(("a", "b"), body, None, deadline=Deadline.after(5))
    live = resuming(up, live, ("a", "b"), body, None, Deadline.after(5))
    chunks = [live.first]
    async for c in live.rest:
        chunks.append(c)
    return live, chunks


def test_a_broken_stream_continues_on_the_next_candidate_from_where_it_broke() -> None:
    up, backend = _broken_then_whole()
    live, chunks = asyncio.run(_relayed(up, BODY))
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text == "The answer is 42."
    assert {c.get("id") for c in chunks} == {"chatcmpl-a"}  # one stream for the client
    continued = backend.calls[-1]
    assert continued[0] == "b"
    assert continued[1]["messages"] == [*BODY["messages"], {"role": "assistant", "content": "The answer is"}]
    # The cut call is billed for what it streamed, the continuation for its own usage; the client's
    # usage is the sum.
    assert live.deployment == "b" and [c.deployment for c in live.earlier] == ["a"]
    assert live.earlier[0].usage.completion_tokens > 0
    assert chunks[-1]["usage"]["prompt_tokens"] == 20 + live.earlier[0].usage.prompt_tokens


@pytest.mark.parametrize(("relayed", "continued", "told"), [
    (["The answer", " is "], [" 42", "."], "The answer is 42."),  # the space the client has: not twice
    (["The answer", " is"], [" 42", "."], "The answer is 42."),
    (["Lines:\n"], ["\n", "\n", "- 42"], "Lines:\n\n- 42"),  # one of two newlines the client had
    (["The answer is", "\n", "\n"], ["", "\n", "\n42."], "The answer is\n\n42."),  # over several chunks
])
def test_a_continuation_does_not_repeat_the_whitespace_the_client_has(
        relayed: list[str], continued: list[str], told: str) -> None:
    """Anthropic refuses a final assistant message that ends in whitespace, and litellm strips it: sent "... is "
    as its start, the provider went on from "... is", with " 42." The client, which had the space, read
    "The answer is  42.". The prefill is sent without it, and what the client has of it is not sent again."""
    def handler(d: Any, body: dict[str, Any]) -> Any:
        if d.name == "a":
            return Stream([{**chunk(t), "id": "chatcmpl-a"} for t in relayed], fail=CUT)
        return Stream([*(chunk(t) for t in continued), chunk(finish="stop"), chunk(usage=(20, 2))])
    up, backend = fake_upstreams(handler, deployment("a"), deployment("b", supports_prefill=True))
    _, chunks = asyncio.run(_relayed(up, BODY))
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"]) == told
    assert backend.calls[-1][1]["messages"][-1] == {"role": "assistant", "content": "".join(relayed).rstrip()}


def test_a_stream_read_on_after_its_client_left_is_not_resumed_when_it_breaks() -> None:
    """Read on only to be billed (`Upstreams.read_on`): a continuation would be paid for nobody."""
    async def work() -> Any:
        up, backend = _broken_then_whole()
        live = await up.open_stream(("a", "b"), BODY, None, deadline=Deadline.after(5))
        live = resuming(up, live, ("a", "b"), BODY, None, Deadline.after(5))
        live.abandoned = True
        with pytest.raises(ProviderFailure):
            async for _ in live.rest:
                pass
        return backend

    assert asyncio.run(work()).called("b") == 0


@pytest.mark.parametrize("extra", [{"tools": [{"type": "function", "function": {"name": "f"}}]},
                                   {"response_format": {"type": "json_object"}}, {"n": 2}, {"logprobs": True}])
def test_a_stream_that_cannot_be_spliced_fails_as_before(extra: dict[str, Any]) -> None:
    up, backend = _broken_then_whole()
    with pytest.raises(ProviderFailure):
        asyncio.run(_relayed(up, {**BODY, **extra}))
    assert backend.called("b") == 0


def test_no_resumption_onto_a_deployment_that_does_not_take_prefill() -> None:
    def handler(d: Any, body: dict[str, Any]) -> Any:
        return Stream([chunk("The answer")], fail=CUT) if d.name == "a" else answer(model="b")
    up, backend = fake_upstreams(handler, deployment("a"), deployment("b"))
    with pytest.raises(ProviderFailure):
        asyncio.run(_relayed(up, BODY))
    assert backend.called("b") == 0


def test_closing_a_relay_never_read_closes_the_upstream_stream() -> None:
    closed: list[bool] = []

    async def upstream() -> Any:
        try:
            yield chunk("a")
            yield chunk("b")
        finally:
            closed.append(True)

    async def work() -> None:
        up, _ = _broken_then_whole()
        chunks = upstream()
        first = await anext(chunks)
        live = await up.open_stream(("b",), BODY, None, deadline=Deadline.after(5))
        live.first, live.rest, live.deployment = first, chunks, "a"
        live = resuming(up, live, ("a", "b"), BODY, None, Deadline.after(5))
        await live.rest.aclose()  # type: ignore[attr-defined]

    asyncio.run(work())
    assert closed == [True]


AUDIO_PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "audio_input_per_mtok": 40.0}
HEARD_BODY = {"messages": [{"role": "user", "content": [
    {"type": "text", "text": "Transcribe."},
    {"type": "input_audio", "input_audio": {"data": "SUQz" * 10_000, "format": "mp3"}}]}]}  # 960 audio tokens


def test_a_call_given_up_on_is_held_with_its_audio_prompt_at_the_audio_rate() -> None:
    """The hold of a late call was its prompt at the text rate: 960 audio tokens held $0.00096 of the
    $0.0384 they may be billed."""
    def handler(d: Any, body: dict[str, Any]) -> Any:
        return Delay(0.2) if d.name == "a" else answer(model=d.name)
    up, _ = fake_upstreams(handler, deployment("a", timeout_s=0.05, max_retries=0, price=AUDIO_PRICE),
                           deployment("b", price=AUDIO_PRICE))

    async def work() -> None:
        await up.call(("a", "b"), HEARD_BODY, None, deadline=Deadline.after(5))
        await asyncio.sleep(0.3)

    collected = _Collected()
    asyncio.run(_collecting(work, collected))
    prompt = prompt_bound(HEARD_BODY["messages"])[0]  # held at the bound no upstream's count exceeds
    worst = (prompt * 1.0 + 960 * 39.0 + up.deployments["a"].max_output_tokens * 2.0) / 1e6
    assert collected.worst == [pytest.approx(worst)]


def test_an_answer_without_usage_bills_its_counted_audio_prompt_at_the_audio_rate() -> None:
    def handler(d: Any, body: dict[str, Any]) -> Any:
        return {**answer("Hello.", model=d.name), "usage": None}
    up, _ = fake_upstreams(handler, deployment("a", price=AUDIO_PRICE))

    async def work() -> Any:
        return await up.call(("a",), HEARD_BODY, None, deadline=Deadline.after(5))

    (_, record), _ = asyncio.run(_collecting(work))
    assert record.usage.prompt_audio_tokens == 960
    prompt = count_messages(HEARD_BODY["messages"])
    assert record.cost_usd == pytest.approx(((prompt - 960) * 1.0 + 960 * 40.0 + record.usage.completion_tokens * 2.0)
                                            / 1e6)


def test_a_stream_read_on_is_billed_even_when_what_it_tells_its_request_fails(
        caplog: pytest.LogCaptureFixture) -> None:
    """`read_on`'s `ended` writes the request's record and metrics; were that to fail, the bill itself must
    still reach the request's ledger (a bug in bookkeeping must never lose spend)."""
    def handler(d: Any, body: dict[str, Any]) -> Any:
        return Stream([chunk("The"), chunk(" answer"), chunk(" is 42.")])
    up, _ = fake_upstreams(handler, deployment("a"))
    told: list[CallRecord] = []

    def ended(record: CallRecord) -> None:
        told.append(record)
        raise RuntimeError("the record could not be queued")

    async def work() -> None:
        live = await up.open_stream(("a",), BODY, None, deadline=Deadline.after(5))
        acc = Accumulator()
        acc.add(live.first)
        up.read_on(live, acc, BODY, lambda: Usage(10, 3), ended)  # no usage reported: counted
        await asyncio.sleep(0.2)

    _, billed = asyncio.run(_collecting(work))
    assert len(told) == 1 and [(c.deployment, c.role) for c in billed] == [("a", READ_ON)]
    assert billed[0].cost_usd == told[0].cost_usd > 0
    assert "its request's record failed" in caplog.text
