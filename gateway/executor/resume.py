"""Mid-stream resumption: a relayed stream whose upstream breaks goes on, in the same client stream,
on the next candidate.

Once a stream's first chunk has been relayed the client holds part of an answer, and the usual
fallback (ask another deployment the same question) would send a second, different answer after
it. Instead the next candidate is asked to *continue*: the original messages plus the text relayed
so far as a trailing assistant message (assistant prefill), and only its continuation is relayed,
under the first stream's `id`, with one final `usage` summed over both calls. Nothing else in the
request changes: no system prompt is added (the tenant's stays the only one).

It is done only where a continuation is sure to mean the same thing:
- not when the request has `tools`/`functions`, `response_format`, `n > 1` or `logprobs` (a tool
  call or a JSON document cannot be spliced, several choices or logprobs cannot be resumed as one);
  those streams fail as before;
- only onto deployments with `supports_prefill` (they honour a trailing assistant message); when
  nothing had been relayed but the role chunk, any next candidate will do (it starts afresh);
- once per request, within the request's deadline (the continuation is opened with it).

Both calls are billed: the cut one for its prompt and what it streamed, the continuation for its
own usage (or, without one, its prompt and what it streamed). The request's span carries
`switchyard.resumed_from` and the `switchyard.upstream` log a `stream_resumed` line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from opentelemetry.trace import Span

from gateway.errors import GatewayError
from gateway.executor.deadline import Deadline
from gateway.executor.upstreams import OpenStream, Upstreams
from gateway.media_tokens import messages_audio_tokens
from gateway.messages import count_text, prompt_tokens, reasoning_text
from gateway.providers.base import ProviderFailure, Usage
from gateway.telemetry import set_attributes

log = logging.getLogger("switchyard.upstream")


def resumable(body: dict[str, Any]) -> bool:
    """Can a stream of this request be continued by another deployment without changing its meaning?"""
    return not (body.get("tools") or body.get("functions") or body.get("response_format")
                or body.get("logprobs") or (body.get("n") or 1) > 1)


def continuation_body(body: dict[str, Any], partial: str, streamed_tokens: int) -> dict[str, Any]:
    """The request that continues `partial`: the messages plus it as a trailing assistant message,
    and a token limit less what was already streamed.

    The prefill is sent without its trailing whitespace (`owed`): Anthropic refuses a final assistant
    message that ends in whitespace, and litellm strips it before sending, so the continuation starts
    with the space the client already has ("sits" + " on", after "sits "); a model's tokens mostly
    carry their leading space anyway. The relay drops what the client already has of it."""
    prefill = partial.rstrip()
    if not prefill:
        return body  # nothing but the role chunk (or whitespace) went out: the next candidate starts afresh
    out = {**body, "messages": [*body["messages"], {"role": "assistant", "content": prefill}]}
    for key in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(key), int):
            out[key] = max(1, body[key] - streamed_tokens)
    return out


def next_candidates(up: Upstreams, names: Sequence[str], failed: str, partial: str) -> tuple[str, ...]:
    """The candidates after `failed` that can continue `partial`."""
    later = tuple(names[names.index(failed) + 1:]) if failed in names else ()
    return later if not partial else tuple(n for n in later if up.deployments[n].supports_prefill)


def resuming(up: Upstreams, live: OpenStream, names: Sequence[str], body: dict[str, Any], span: Span | None,
             deadline: Deadline) -> OpenStream:
    """`live`, with its `rest` continuing on the next of `names` if it breaks (when the request allows).

    On resumption `live` becomes the continuation's stream (deployment, stats, span), and the cut
    call's record goes to `live.earlier`: whoever ends `live` bills both."""
    if len(names) > 1 and resumable(body):
        live.rest = _Relay(_relay(up, live, live.rest, names, body, span, deadline), live.rest)
    return live


class _Relay:
    """The relaying generator, whose `aclose` also closes the upstream stream it reads when it was
    never started (closing an unstarted generator skips its `finally`)."""

    __slots__ = ("chunks", "upstream")

    def __init__(self, chunks: AsyncIterator[dict[str, Any]], upstream: AsyncIterator[dict[str, Any]]) -> None:
        self.chunks, self.upstream = chunks, upstream

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await anext(self.chunks)

    async def aclose(self) -> None:
        await self.chunks.aclose()  # type: ignore[attr-defined]
        await self.upstream.aclose()  # type: ignore[attr-defined]


async def _relay(up: Upstreams, live: OpenStream, rest: AsyncIterator[dict[str, Any]], names: Sequence[str],
                 body: dict[str, Any], span: Span | None, deadline: Deadline) -> AsyncIterator[dict[str, Any]]:
    text: list[str] = [_content(live.first)]
    thought: list[str] = [_thought(live.first)]  # billed with the cut call, never part of its prefill
    try:
        async for chunk in rest:
            text.append(_content(chunk))
            thought.append(_thought(chunk))
            yield chunk
        return
    except ProviderFailure as exc:
        partial = "".join(text)
        candidates = () if live.abandoned else next_candidates(up, names, live.deployment, partial)
        if not candidates:  # nowhere to go on, or nobody to go on for: its client left
            raise
        request = continuation_body(body, partial, count_text(partial))
        try:
            cont = await up.open_stream(candidates, request, span, deadline=deadline)
        except GatewayError:
            raise exc from None  # no continuation: the stream fails as it would have
        failure = exc
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
    cut = OpenStream(live.deployment, live.first, rest, live.stats, live.span, live.started, live.taken,
                     terms=live.terms)
    if not cut.stats.usage.total_tokens:
        messages = body.get("messages") or ()
        cut.stats.usage = Usage(prompt_tokens(body), count_text(partial) + count_text("".join(thought)),
                                prompt_audio_tokens=messages_audio_tokens(messages))
    record = await up.end_stream(cut, failure)
    log.warning("stream from deployment '%s' broke after %d characters (%s); resumed on '%s'",
                cut.deployment, len(partial), failure.reason, cont.deployment, extra={
                    "event": "stream_resumed", "deployment": cont.deployment, "resumed_from": cut.deployment,
                    "reason": failure.reason})
    if span is not None:
        set_attributes(span, switchyard__resumed_from=cut.deployment, switchyard__resumed_on=cont.deployment)
    live.deployment, live.stats, live.span, live.started, live.taken = (
        cont.deployment, cont.stats, cont.span, cont.started, cont.taken)
    live.earlier = (*live.earlier, record)
    stream_id = live.first.get("id")
    continued: list[str] = []
    owed = _owed_whitespace(partial, request)
    try:
        for chunk in _chained(cont.first):
            continued.append(_content(chunk) + _thought(chunk))
            chunk, owed = _without_owed(chunk, owed)
            yield _spliced(chunk, stream_id, record.usage)
        async for chunk in cont.rest:
            continued.append(_content(chunk) + _thought(chunk))
            chunk, owed = _without_owed(chunk, owed)
            yield _spliced(chunk, stream_id, record.usage)
    finally:
        await cont.rest.aclose()  # type: ignore[attr-defined]
        if not live.stats.usage.total_tokens:  # cut short or no usage sent: bill what was counted
            live.stats.usage = Usage(prompt_tokens(request), count_text("".join(continued)),
                                     prompt_audio_tokens=messages_audio_tokens(request["messages"]))


def _owed_whitespace(partial: str, request: dict[str, Any]) -> str:
    """The whitespace the client has at the end of `partial` that the continuation's prefill left out."""
    messages = request.get("messages") or ()
    if not messages or messages[-1].get("role") != "assistant":
        return ""  # started afresh: nothing of it to splice
    return partial[len(partial.rstrip()):]


def _without_owed(chunk: dict[str, Any], owed: str) -> tuple[dict[str, Any], str]:
    """`chunk` less the start of its text the client already has (`owed`: whitespace relayed before the break),
    and what is still owed: only while the continuation's text has said nothing else."""
    text = _content(chunk)
    if not owed or not text:
        return chunk, owed
    same = 0
    while same < min(len(text), len(owed)) and text[same] == owed[same]:
        same += 1
    choice = chunk["choices"][0]
    out = {**chunk, "choices": [{**choice, "delta": {**choice["delta"], "content": text[same:]}},
                                *chunk["choices"][1:]]}
    return out, owed[same:] if same == len(text) else ""


def _chained(first: dict[str, Any]) -> list[dict[str, Any]]:
    """The continuation's first chunk, unless it only opens the message (the client had that one)."""
    choices = first.get("choices") or ()
    if not first.get("usage") and all(not {k: v for k, v in (c.get("delta") or {}).items()
                                           if k != "role" and v} and not c.get("finish_reason") for c in choices):
        return []
    return [first]


def _spliced(chunk: dict[str, Any], stream_id: Any, before: Usage) -> dict[str, Any]:
    """A continuation chunk as part of the first stream: its `id`, and usage summed over both calls."""
    out = {**chunk, "id": stream_id}
    if chunk.get("usage"):
        out["usage"] = (before + Usage.from_dict(chunk["usage"])).as_dict()
    return out


def _content(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices")
    if not choices:
        return ""
    return str((choices[0].get("delta") or {}).get("content") or "")


def _thought(chunk: dict[str, Any]) -> str:
    """The reasoning a chunk streams (`REASONING_FIELDS`): billed, so counted for a call without usage."""
    choices = chunk.get("choices")
    if not choices:
        return ""
    return reasoning_text(choices[0].get("delta") or {})
