"""The direct path to OpenAI-compatible servers on one pooled aiohttp session.

Chosen by measurement (benchmarks/overhead.py): under 32 concurrent requests on this class of
machine a proxy on raw aiohttp served several times what httpx's default pool did, and litellm's
per-call machinery costs more again. litellm stays for providers that need its translation.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import LineTooLong

from gateway.config import DeploymentConfig
from gateway.providers.base import (
    Completion,
    ProviderFailure,
    StreamStats,
    Usage,
    client_reason,
    is_retryable_status,
    parse_retry_after,
    read_usage,
    short_of_choices,
    stated_fields,
    too_large,
    upstream_model_name,
    without_key,
)
from gateway.streaming import Choices, choices_asked, replay


class DirectBackend:
    name = "direct"
    # OpenAI's reasoning models refuse `max_tokens`; vLLM, SGLang and OpenAI itself take this one.
    output_limit = "max_completion_tokens"
    # Every OpenAI-compatible server streams: a whole answer's health is judged by its first token.
    streams_whole_answers = True

    def __init__(self, *, max_connections: int = 512) -> None:
        self._connector_limit = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the running loop (uvicorn's), never at import or config time.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connector_limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    @staticmethod
    def _request_parts(deployment: DeploymentConfig, body: dict[str, Any],
                       extra: Mapping[str, str] | None) -> tuple[str, dict[str, str], bytes]:
        if not deployment.api_base:
            raise ProviderFailure(f"deployment {deployment.name!r} has no api_base", retryable=False,
                                  reason="has no api_base configured")
        url = deployment.api_base.rstrip("/") + "/chat/completions"
        headers = {"content-type": "application/json"}
        key = os.environ.get(deployment.api_key_env) if deployment.api_key_env else None
        if key:
            headers["authorization"] = f"Bearer {key}"
        if extra:
            headers.update(extra)
        payload = orjson.dumps({**body, "model": upstream_model_name(deployment)})
        return url, headers, payload

    async def complete(self, deployment: DeploymentConfig, body: dict[str, Any],
                       headers: Mapping[str, str] | None = None) -> Completion:
        url, sent, payload = self._request_parts(deployment, body, headers)
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=deployment.timeout_s)
        try:
            async with self._client().post(url, data=payload, headers=sent, timeout=timeout) as resp:
                raw = await _body(deployment, resp)
                if resp.status != 200:
                    raise _failure(deployment, resp, raw)
        except TimeoutError as exc:
            raise ProviderFailure(f"{deployment.name}: no answer within {deployment.timeout_s:g} s",
                                  timeout=True, reason=f"timed out after {deployment.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise ProviderFailure(f"{deployment.name}: {type(exc).__name__}: {exc}") from exc
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderFailure(f"{deployment.name}: upstream sent invalid JSON",
                                  reason="upstream sent invalid JSON") from exc
        _raise_if_unreadable(deployment, parsed, "with status 200")
        usage = Usage.from_dict(parsed.get("usage"), parsed.get("service_tier"))
        return Completion(parsed, usage, time.perf_counter() - started)

    async def stream(self, deployment: DeploymentConfig, body: dict[str, Any], stats: StreamStats,
                     headers: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        url, sent, payload = self._request_parts(deployment, body, headers)
        started = time.perf_counter()
        # A stream may run long; what must be bounded is the wait for each next piece.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=deployment.timeout_s,
                                        sock_read=deployment.timeout_s)
        try:
            async with self._client().post(url, data=payload, headers=sent, timeout=timeout) as resp:
                if resp.status != 200:
                    raise _failure(deployment, resp, await _body(deployment, resp))
                async for chunk in _chunks(deployment, resp, choices_asked(body)):
                    if stats.ttft_s is None:
                        stats.ttft_s = time.perf_counter() - started
                    if (relayed := read_usage(chunk, stats)) is not None:
                        yield relayed
        except TimeoutError as exc:
            raise ProviderFailure(f"{deployment.name}: stream stalled for {deployment.timeout_s:g} s",
                                  timeout=True, reason=f"stream stalled for {deployment.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise ProviderFailure(f"{deployment.name}: {type(exc).__name__}: {exc}") from exc
        except orjson.JSONDecodeError as exc:
            raise ProviderFailure(f"{deployment.name}: upstream sent an invalid stream chunk",
                                  reason="upstream sent an invalid stream chunk") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _chunks(deployment: DeploymentConfig, resp: aiohttp.ClientResponse,
                  asked: int = 1) -> AsyncIterator[dict[str, Any]]:
    """The chunks of an upstream's answer to a stream request. An error it sends in the stream (vLLM's
    `data: {"error": ...}` after some chunks, or a 200 JSON error body) is a failure, not a chunk:
    relayed, or rebuilt into a whole answer, it would read as an answer cut short without saying so.
    A server that answers whole anyway (one that ignores `stream`) is read as the same answer in chunks.
    `asked`: the choices the request asked for (its `n`), each of which must finish for a stream that
    ends without `[DONE]` to have ended its answer."""
    if resp.content_type == "application/json":
        answer = orjson.loads(await _body(deployment, resp))
        _raise_if_unreadable(deployment, answer, "in its stream")
        for chunk in replay(answer, include_usage=True, piece_chars=_WHOLE):
            yield chunk
        return
    choices = Choices(asked)
    last: dict[str, Any] = {}
    async for line in _lines(resp.content):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":  # the server says its answer is whole, marked finished or not
            if (ending := choices.ended(last)) is not None:
                yield ending
            if (short := short_of_choices(deployment.name, len(choices.finished), asked)) is not None:
                raise short
            return
        chunk = orjson.loads(data)
        _raise_if_error(deployment, chunk)
        if (problem := chunk_problem(chunk)) is not None:
            # Read on as a chunk, it broke the relay with a traceback (and the client's connection).
            raise ProviderFailure(f"{deployment.name}: upstream sent a stream chunk that is no chunk: {problem}",
                                  reason="upstream sent an invalid stream chunk")
        choices.add(chunk)
        last = chunk
        yield chunk
    if not choices.answered:  # the connection ended cleanly, an answer did not: relayed, it read as done
        raise ProviderFailure(f"{deployment.name}: stream ended before the answer did (no finish_reason, no [DONE])",
                              reason="stream ended before the answer did")


def chunk_problem(chunk: Any) -> str | None:
    """What makes a parsed SSE chunk no chat-completion chunk the relay can read, or None."""
    if not isinstance(chunk, dict):
        return "not an object"
    if not isinstance(chunk.get("usage") or {}, dict):
        return "usage is not an object"
    choices = chunk.get("choices")
    if choices is None:
        return None
    if not isinstance(choices, list):
        return "choices is not an array"
    return _choices_problem(choices, "delta")


def answer_problem(answer: Any) -> str | None:
    """What makes a parsed whole answer no chat completion the gateway can read, or None: at least one
    choice, each an object whose message (if any) is one, as `chunk_problem` asks of a stream's chunks."""
    if not isinstance(answer, dict):
        return "not an object"
    if not isinstance(answer.get("usage") or {}, dict):
        return "usage is not an object"
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    return _choices_problem(choices, "message")


def _choices_problem(choices: list[Any], part: str) -> str | None:
    """What makes a list of choices unreadable, or None: each an object with a choice number, its `part` (a
    chunk's `delta`, an answer's `message`) an object if any, and well-formed tool calls in it."""
    for c in choices:
        if not isinstance(c, dict):
            return "a choice is not an object"
        if not _position(c.get("index", 0)):
            return "a choice's index is not a choice number"
        said = c.get(part) or {}
        if not isinstance(said, dict):
            return f"a choice's {part} is not an object"
        if not isinstance(c.get("finish_reason") or "", str):
            return "a choice's finish_reason is not a string"
        if (problem := _tool_calls_problem(said.get("tool_calls"))) is not None:
            return problem
    return None


def _raise_if_unreadable(deployment: DeploymentConfig, answer: Any, where: str) -> None:
    """A whole answer sent with status 200 (asked for whole, or answered whole to a stream) that is an error
    envelope or no chat completion is a failure of the upstream: passed on, the client read a 200 that was
    no answer (and was billed for it), or the gateway failed on it with a 500."""
    _raise_if_error(deployment, answer, where)
    if (problem := answer_problem(answer)) is not None:
        raise ProviderFailure(f"{deployment.name}: upstream sent an answer that is no answer: {problem}",
                              reason="upstream sent an invalid answer")


def _position(index: Any) -> bool:
    return isinstance(index, int) and not isinstance(index, bool) and index >= 0


def _tool_calls_problem(calls: Any) -> str | None:
    if calls is not None and not isinstance(calls, list):
        return "a delta's tool_calls is not an array"
    for d in calls or ():
        if not isinstance(d, dict) or not _position(d.get("index", 0)):
            return "a tool call is not an object with a number for its index"
        if not isinstance(d.get("function") or {}, dict):
            return "a tool call's function is not an object"
    return None


_WHOLE = 1 << 62  # a text's one piece when a whole answer is read as chunks
# The longest SSE line read: one chunk may carry a long piece (a tool call's arguments whole, a server
# that sends its answer in one chunk), well past aiohttp's line limit (128 KiB), which raised unhandled.
_MAX_LINE = 64 << 20


# The largest whole body read: an answer is held, parsed and relayed in memory, and one an upstream sent
# without end (or a misbehaving one's gigabytes) grew the gateway's memory with it. Larger than a stream's
# line: a whole answer of n = 16 choices with top_logprobs runs to tens of MiB.
_MAX_BODY = 256 << 20


async def _body(deployment: DeploymentConfig, resp: aiohttp.ClientResponse) -> bytes:
    """The whole body of an upstream's answer, up to `_MAX_BODY`: past it the call failed (not retried: the
    upstream would answer the same; another deployment may answer)."""
    if resp.content_length is not None:
        if resp.content_length <= _MAX_BODY:
            return await resp.read()  # the common case: a stated length, read as aiohttp reads it
    else:  # read to the end of the connection, counting
        parts: list[bytes] = []
        read = 0
        async for piece in resp.content.iter_chunked(1 << 20):
            read += len(piece)
            if read > _MAX_BODY:
                break
            parts.append(piece)
        else:
            return b"".join(parts)
    resp.close()  # the rest is not read: the connection is not reused
    too_large = f"upstream sent an answer over {_MAX_BODY >> 20} MiB"
    raise ProviderFailure(f"{deployment.name}: {too_large}", retryable=False, reason=too_large)


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The lines of an SSE body, however its bytes were split in transit, each up to `_MAX_LINE`."""
    try:
        while line := await content.readuntil(b"\n", max_size=_MAX_LINE):
            yield line
    except LineTooLong as exc:
        raise ProviderFailure(f"upstream sent a stream line over {_MAX_LINE} bytes",
                              reason="upstream sent an oversized stream chunk") from exc


def _raise_if_error(deployment: DeploymentConfig, chunk: Any, where: str = "in its stream") -> None:
    if isinstance(chunk, dict) and chunk.get("error") and not chunk.get("choices"):
        error = chunk["error"]
        stated = str(error.get("message") if isinstance(error, dict) else error)[:300]
        raise without_key(deployment, ProviderFailure(f"{deployment.name}: upstream sent an error {where}: {stated}",
                                                      reason=f"upstream sent an error {where}"))


def _failure(deployment: DeploymentConfig, resp: aiohttp.ClientResponse, raw: bytes) -> ProviderFailure:
    status = resp.status
    try:
        parsed: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    # the provider's own error message, from its OpenAI error envelope
    stated = str(error["message"])[:300] if isinstance(error, dict) and "message" in error else None
    code, param = stated_fields(status, error)
    return without_key(deployment, ProviderFailure(
        f"{deployment.name}: upstream answered {status}: {stated or raw[:300].decode(errors='replace')}",
        status=status, retryable=is_retryable_status(status), reason=client_reason(status, stated),
        retry_after_s=parse_retry_after(resp.headers.get("retry-after")),
        refuses_streaming=_refuses_streaming(status, parsed), too_large=too_large(status, stated),
        code=code, param=param))


# How a server says it will not stream this request, in its error's `param`, `code` or `message` (or a
# FastAPI 422's `loc`): OpenAI's 400 for a model an unverified organisation may not stream ("must be
# verified to stream this model", param `stream`), Azure's older API versions ("Unrecognized request
# argument supplied: stream_options"), a server whose request schema has no `stream_options` (an extra
# input at loc body.stream_options). Anything else a 4xx says is about the request, not streaming.
_STREAM_PARAM = re.compile(r"^(?:body\.)?stream(?:_options)?(?:$|[.\[])")
_STREAM_CODE = re.compile(r"(?<![a-z])stream(?:ing|_options)?(?![a-z])", re.IGNORECASE)
_STREAM_MESSAGE = re.compile(
    r"\bstream_options\b|\b(?:verified|allowed|permitted|permission|access) to stream\b"
    r"|\bstream(?:ing)?\b(?: is| are| mode is)? (?:not |un)(?:supported|allowed|permitted|available|enabled)"
    r"|\b(?:does|do) not support stream(?:ing)?\b|\b'stream' does not support\b", re.IGNORECASE)


def _refuses_streaming(status: int, parsed: Any) -> bool:
    """Did the upstream refuse the request for streaming (`stream`, `stream_options`), and nothing else?
    Only a 4xx the request caused: a 408, 429 or 5xx says nothing about what it asked for."""
    if not 400 <= status < 500 or is_retryable_status(status) or not isinstance(parsed, dict):
        return False
    error = parsed.get("error")
    if isinstance(error, dict):
        param, code, message = error.get("param"), error.get("code"), error.get("message")
        return bool((isinstance(param, str) and _STREAM_PARAM.match(param))
                    or (isinstance(code, str) and _STREAM_CODE.search(code))
                    or (isinstance(message, str) and _STREAM_MESSAGE.search(message)))
    if isinstance(error, str):  # a server's bare error string
        return bool(_STREAM_MESSAGE.search(error))
    detail = parsed.get("detail")  # FastAPI's validation errors: each names the field it refused
    return isinstance(detail, list) and any(
        isinstance(d, dict) and isinstance(d.get("loc"), list) and set(d["loc"]) & {"stream", "stream_options"}
        for d in detail)
