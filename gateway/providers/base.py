"""The provider seam: one small `Backend` protocol and the values that cross it.

Two real implementations: `DirectBackend` (OpenAI-compatible servers over one pooled aiohttp
session: OpenAI, vLLM, llama.cpp, Ollama, our simulator) and `LiteLLMBackend` (every provider
litellm translates for). Backends raise `ProviderFailure`; retries, fallbacks and circuit breaking
live above them in the executor, so every backend behaves the same there.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.config import DeploymentConfig
from gateway.logs import prompts_logged


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one or more calls, in OpenAI's convention: `prompt_tokens` counts every
    prompt token, including those read from (`cached_tokens`) or written to (`cache_write_tokens`)
    the provider's prompt cache, which are priced apart; `completion_tokens` counts the audio ones
    (`audio_tokens`, `completion_tokens_details.audio_tokens`), which are priced apart too.
    `service_tier`: the tier the answer says it ran under (its body's `service_tier`), which sets
    its prices; None when it says none (a sum of calls says none). `prompt_tokens` counts the audio
    prompt tokens too (`prompt_audio_tokens`, `prompt_tokens_details.audio_tokens`), priced apart.
    `cache_write_1h_tokens`: the part of `cache_write_tokens` written to live an hour (Anthropic's
    `ttl: "1h"`), which costs more than a 5-minute write; the rest are 5-minute writes.
    `reasoning_tokens`: of `completion_tokens`, those the model thought with
    (`completion_tokens_details.reasoning_tokens`): billed as completion tokens, so never priced apart,
    but carried so that the client reads what the upstream reported. So are `accepted_prediction_tokens`
    and `rejected_prediction_tokens` (Predicted Outputs, `completion_tokens_details`): OpenAI counts both in
    `completion_tokens` (the rejected ones are billed though unused), so pricing `completion_tokens` bills
    them; they are never priced apart."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    audio_tokens: int = 0
    service_tier: str | None = None
    prompt_audio_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cached_tokens + other.cached_tokens, self.cache_write_tokens + other.cache_write_tokens,
                     self.audio_tokens + other.audio_tokens,
                     prompt_audio_tokens=self.prompt_audio_tokens + other.prompt_audio_tokens,
                     cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
                     reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
                     accepted_prediction_tokens=self.accepted_prediction_tokens + other.accepted_prediction_tokens,
                     rejected_prediction_tokens=self.rejected_prediction_tokens + other.rejected_prediction_tokens)

    def as_dict(self, *, brief: bool = False) -> dict[str, Any]:
        """The usage as OpenAI reports it: both details objects, zeros and all. OpenAI sends them in every
        answer and client code reads `usage.completion_tokens_details.reasoning_tokens` unguarded; a
        routed model is answered by whichever deployment the plan picks (one that reports them, vLLM
        that does not, or none at all, the gateway counting), so a shape that followed the upstream would
        break such code on some requests only. Both objects cost about 150 bytes of compact JSON.
        `brief`: the details only where a count is nonzero, for the gateway's own records of calls
        (`x-switchyard-evidence` lists one per call within a header's bound)."""
        out: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                               "total_tokens": self.total_tokens}
        prompt = {"cached_tokens": self.cached_tokens, "audio_tokens": self.prompt_audio_tokens}
        completion = {"reasoning_tokens": self.reasoning_tokens, "audio_tokens": self.audio_tokens,
                      "accepted_prediction_tokens": self.accepted_prediction_tokens,
                      "rejected_prediction_tokens": self.rejected_prediction_tokens}
        if not brief or any(prompt.values()):
            out["prompt_tokens_details"] = prompt
        if self.cache_write_tokens:
            out["cache_creation_input_tokens"] = self.cache_write_tokens  # as litellm reports it
            if self.cache_write_1h_tokens:  # split by lifetime as Anthropic reports it
                hour = self.cache_write_1h_tokens
                out["cache_creation"] = {"ephemeral_5m_input_tokens": self.cache_write_tokens - hour,
                                         "ephemeral_1h_input_tokens": hour}
        if not brief or any(completion.values()):
            out["completion_tokens_details"] = completion
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, service_tier: Any = None) -> Usage:
        """OpenAI's `prompt_tokens_details.cached_tokens`, or the Anthropic-style top-level
        `cache_read_input_tokens` / `cache_creation_input_tokens` that litellm passes on. The writes'
        split by lifetime is Anthropic's `cache_creation` beside them, or litellm's
        `prompt_tokens_details.cache_creation_token_details`; only the 1-hour part is kept (writes no
        lifetime covers are 5-minute ones, as litellm bills them). A split that counts more writes than
        the total says is believed: the bill never drops a write that was reported.
        `service_tier`: the answer's (a body's or a chunk's), kept when it is a string."""
        tier = service_tier if isinstance(service_tier, str) else None
        if not raw or not all(_is_count(raw.get(k)) for k in ("prompt_tokens", "completion_tokens")):
            # none, counts that are no counts, or one of the two left out: billed on the gateway's own count,
            # as an answer without usage (a usage of prompt tokens alone billed the answer's text as free)
            return cls(service_tier=tier)
        details = raw.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        cached = _count(details.get("cached_tokens")) or _count(raw.get("cache_read_input_tokens"))
        written = _count(raw.get("cache_creation_input_tokens")) or _count(details.get("cache_creation_tokens")) \
            or _count(details.get("cache_write_tokens"))
        split = raw.get("cache_creation") or details.get("cache_creation_token_details")
        split = split if isinstance(split, dict) else {}
        short, long = (_count(split.get(f"ephemeral_{ttl}_input_tokens")) for ttl in ("5m", "1h"))
        out = raw.get("completion_tokens_details")
        out = out if isinstance(out, dict) else {}
        return cls(_count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens")),
                   cached, max(written, short + long), _count(out.get("audio_tokens")), tier,
                   _count(details.get("audio_tokens")), long, _count(out.get("reasoning_tokens")),
                   _count(out.get("accepted_prediction_tokens")), _count(out.get("rejected_prediction_tokens")))


def _is_count(value: Any) -> bool:
    if type(value) is int:  # what every upstream sends: one test on each request's path
        return value >= 0
    return isinstance(value, float) and math.isfinite(value) and value >= 0


def _count(value: Any) -> int:
    """A token count an upstream reported: a whole number of tokens, at least 0. Anything else counts 0,
    as a count it did not send (a text count was a traceback that cut the client's stream; a negative
    one billed a credit)."""
    if type(value) is int:  # what every upstream sends: one test on each request's path
        return value if value > 0 else 0
    if not isinstance(value, float) or not math.isfinite(value):  # bool, text, None, NaN
        return 0
    return max(int(value), 0)


def openai_shaped(raw: dict[str, Any]) -> dict[str, Any]:
    """An upstream's own usage, relayed as it sent it, with the details objects `Usage.as_dict` always
    writes filled in where it sent none (or only some of their counts): what it sent is kept, keys we do
    not model included."""
    shape = Usage().as_dict()
    out = dict(raw)
    for key in ("prompt_tokens_details", "completion_tokens_details"):
        sent = raw.get(key)
        out[key] = {**shape[key], **(sent if isinstance(sent, dict) else {})}
    return out


def read_usage(chunk: dict[str, Any], stats: StreamStats) -> dict[str, Any] | None:
    """A stream chunk's usage read into `stats`, and the chunk as it goes on (None: nothing of it is left to
    relay). Usage that bills nothing (counts that are no counts: text, a negative number, none) is billed
    as no usage at all, on counted tokens: it is left out of the chunk, as if never sent, so the client
    reads the counted usage it is billed (and that usage's cost), not the upstream's text and a cost of 0."""
    raw = chunk.get("usage")
    if not raw:
        return chunk
    usage = Usage.from_dict(raw if isinstance(raw, dict) else None, chunk.get("service_tier"))
    if usage.total_tokens:
        stats.usage = usage
        return chunk
    rest = {k: v for k, v in chunk.items() if k != "usage"}
    return rest if rest.get("choices") else None


@dataclass(frozen=True, slots=True)
class Completion:
    """One upstream answer: the OpenAI response body as the provider sent it, plus what we measured."""

    body: dict[str, Any]
    usage: Usage
    latency_s: float


@dataclass(slots=True)
class StreamStats:
    """Filled in while a stream is consumed: usage comes in the last chunk."""

    usage: Usage = field(default_factory=Usage)
    ttft_s: float | None = None


class ProviderFailure(Exception):
    """An upstream call failed. `retryable` says whether another attempt may succeed.

    `str(failure)` is the full detail, for logs and spans only; `reason` is the short account a
    client may see ("upstream answered 503", "timed out after 30 s", "connection failed"): no
    host, port, library internals or credentials. `retry_after_s` is the upstream's Retry-After.
    `refuses_streaming`: the upstream refused the request for asking to stream (its error names
    `stream` or `stream_options`), not for anything else in it. `deployment_specific`: a refusal (a 400)
    for what this deployment alone does not take, which another deployment may answer. `code`, `param`:
    what the upstream's refusal of the request (a 400 or 422) names, as OpenAI's error objects do
    (`context_length_exceeded`, `messages`), for the client to be told the same (`stated_fields`).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True,
                 timeout: bool = False, reason: str | None = None, retry_after_s: float | None = None,
                 refuses_streaming: bool = False, too_large: bool = False,
                 deployment_specific: bool = False, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param
        self.deployment_specific = deployment_specific
        self.retryable = retryable and not too_large
        self.timeout = timeout
        self.retry_after_s = retry_after_s
        self.refuses_streaming = refuses_streaming
        self.too_large = too_large
        self.reason = reason or ("upstream answered 429: the request is over the deployment's tokens-per-minute "
                                 "limit on its own" if too_large else "timed out" if timeout else
                                 f"upstream answered {status}" if status else "connection failed")

    @property
    def timed_out(self) -> bool:
        """The call ran out of time: ours (`timeout`), or an upstream's that said so, a proxy's 504 in
        front of a model server or a server's own 408: how long an answer takes is the request's
        doing as much as the deployment's (`gateway.providers.health`)."""
        return self.timeout or self.status in (408, 504)

    @property
    def counts_against_deployment(self) -> bool:
        """Does this failure say something about the deployment (and so count toward its circuit)?

        Timeouts, connection errors, 408, 429 and 5xx do; a 4xx the request caused (400, 404, 413,
        422, a context-length error, a 429 saying the request alone is over a tokens-per-minute limit:
        `too_large`) does not: one client must not open a circuit for everyone.
        """
        if self.too_large:
            return False
        if self.status is None:
            return self.retryable  # a connection error or timeout; not a configuration error
        return self.status in (408, 429) or self.status >= 500


MAX_RETRY_AFTER_S = 60.0

# OpenAI's (and Azure OpenAI's) 429 for one request over a tokens-per-minute limit on its own: "Request
# too large for gpt-4o in organization org-… on tokens per min (TPM): Limit 30000, Requested 41000. The
# input or output tokens must be reduced in order to run successfully." No wait or retry makes it fit.
_TOO_LARGE = re.compile(r"\brequest too large\b|\btokens must be reduced\b", re.IGNORECASE)


# What an error object's `code` and `param` may be to be passed on: names (`context_length_exceeded`,
# `messages[0].content`), never free text or a value the request held.
_ERROR_FIELD = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")


def stated_fields(status: int | None, error: object) -> tuple[str | None, str | None]:
    """The `code` and `param` of an upstream's OpenAI error object, for a 400 or 422 the request caused:
    code that handles OpenAI's errors reads them (`context_length_exceeded` to shorten the conversation and
    ask again), and a refusal relayed without them read as some other error."""
    if status not in (400, 422) or not isinstance(error, dict):
        return None, None
    code, param = error.get("code"), error.get("param")
    return (code if isinstance(code, str) and _ERROR_FIELD.fullmatch(code) else None,
            param if isinstance(param, str) and _ERROR_FIELD.fullmatch(param) else None)


# Shorter keys are left alone: replacing a few common characters would garble the message, and hide nothing.
_MIN_REDACTED_KEY = 8


def without_key(deployment: DeploymentConfig, failure: ProviderFailure) -> ProviderFailure:
    """`failure` with the deployment's own API key taken out of what the upstream said: a server that quotes
    the request's `Authorization` header back in its error (a proxy's "invalid key Bearer sk-..."), or a
    client library that puts it in its exception, had the key written to every log line and span of the
    failure, and for a refusal of the request (a 400 or 422) sent to the client in its error message."""
    key = os.environ.get(deployment.api_key_env) if deployment.api_key_env else None
    if not key or len(key) < _MIN_REDACTED_KEY:
        return failure
    detail = str(failure)
    if key in detail:
        failure.args = (detail.replace(key, "[api key]"),)
    if key in failure.reason:
        failure.reason = failure.reason.replace(key, "[api key]")
    return failure


def client_reason(status: int | None, stated: str | None) -> str | None:
    """What a client is told of an upstream's error: what the provider said (`stated`, the message of its
    error envelope) about the request, for a 400 or 422 it caused; nothing about the upstream else (None:
    `ProviderFailure`'s default)."""
    if status in (400, 422) and stated:
        return f"upstream answered {status}: {stated[:300]}"
    return None


# An upstream's refusal of what the request holds: its message may quote the request back, prompt and all
# (vLLM's validation errors hold the whole body they refused).
_QUOTES_REQUEST = frozenset({400, 413, 422})


def loggable(failure: ProviderFailure) -> tuple[str, str]:
    """(detail, reason) of `failure` as log lines and spans may hold them: a refusal of the request is
    told by its status and code alone, its upstream's words only for a tenant with `log_prompts: true`."""
    if failure.status not in _QUOTES_REQUEST or prompts_logged.get():
        return str(failure), failure.reason
    said = f"upstream answered {failure.status}" + (f" ({failure.code})" if failure.code else "")
    return f"{said}; its message is left out, as it may quote the prompt (log_prompts: false)", said


def short_of_choices(name: str, answered: int, asked: int) -> ProviderFailure | None:
    """The failure of a call asked for `asked` choices (its `n`) that answered `answered`, fewer, or None.
    A server that takes no `n` answers one choice and says nothing of it: passed on, the client read a
    200 with fewer choices than it asked, and a best-of vote or an agreement cascade read the one
    sample as unanimous. Not retried (the server would answer the same) and not counted toward the
    circuit (its answers to n = 1 are whole); another deployment may take `n`."""
    if answered >= asked:
        return None
    return ProviderFailure(f"{name}: answered {answered} of the {asked} choices asked (n); a server that "
                           "answers one choice per call needs supports_n: false", retryable=False,
                           deployment_specific=True, reason=f"answered {answered} of the {asked} choices asked (n)")


def too_large(status: int | None, message: str | None) -> bool:
    """Is this a 429 the request itself caused (over a per-minute token limit on its own)?"""
    return status == 429 and message is not None and _TOO_LARGE.search(message) is not None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """An HTTP Retry-After (delta-seconds or an HTTP date) in seconds, capped at `MAX_RETRY_AFTER_S`."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def missing_credential(deployment: DeploymentConfig) -> str | None:
    """The env var a deployment names for its key when that variable is unset or empty, else None."""
    name = deployment.api_key_env
    return name if name and not os.environ.get(name) else None


class Backend(Protocol):
    """`headers`: more request headers for the upstream (the call's W3C trace context), or None."""

    name: str
    # What the gateway names the output limit it sends when the client set none (`executor.upstreams`):
    # the name every provider behind this backend takes.
    output_limit: str
    # Whether a whole answer is asked for as a stream and rebuilt (`executor.upstreams`): its first
    # chunk then shows the deployment answering, whatever the answer's length (`gateway.providers.health`).
    streams_whole_answers: bool

    async def complete(self, deployment: DeploymentConfig, body: dict[str, Any],
                       headers: Mapping[str, str] | None = None) -> Completion: ...

    def stream(self, deployment: DeploymentConfig, body: dict[str, Any], stats: StreamStats,
               headers: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]: ...

    async def close(self) -> None: ...


def upstream_model_name(deployment: DeploymentConfig) -> str:
    """`openai/gpt-4o-mini` → `gpt-4o-mini`: what an OpenAI-compatible server expects in `model`."""
    provider, _, rest = deployment.model.partition("/")
    return rest if rest and provider in {"openai", "hosted_vllm", "vllm", "ollama_chat", "local"} \
        else deployment.model


def is_retryable_status(status: int) -> bool:
    return status in (408, 409, 425, 429) or status >= 500
