"""Any provider litellm translates for, through its async API.

litellm is imported only where a deployment uses it: the import costs seconds and, unless told
otherwise, fetches a cost map from the network (and later Anthropic's beta headers), so it runs in its
offline mode. Quick commands and the direct path never pay for it; a gateway that serves through litellm
imports it while starting (`prepare`), not on its first request, which would hold the event loop (every
request in flight) for those seconds.
At debug level litellm logs whole prompts and completions, so its loggers stay at warning unless
`SWITCHYARD_LOG_PROMPTS=1`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx

from gateway.config import DeploymentConfig
from gateway.exc_chain import causes, traceback_modules
from gateway.log_throttle import KeyedLogThrottle
from gateway.logs import quiet_litellm_loggers
from gateway.providers.base import (
    Completion,
    ProviderFailure,
    StreamStats,
    Usage,
    client_reason,
    is_retryable_status,
    parse_retry_after,
    read_usage,
    stated_fields,
    too_large,
    without_key,
)

log = logging.getLogger("switchyard.upstream")


def import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # Nor anything else litellm would fetch on its own (Anthropic's beta headers, on the first call that needs
    # one): a blocking GET on the event loop, which held every request in flight for its 5 s timeout where
    # outbound traffic is dropped. It uses the copies it ships.
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    quiet_litellm_loggers()  # again: importing litellm may have set its loggers' levels
    return litellm


def provider_takes_n(model: str) -> bool | None:
    """Whether litellm sends `n` to this model's provider (None: litellm cannot tell). Those it does not
    (Anthropic, Bedrock, Mistral, Ollama) have it refused before sending, so the model answers one choice per
    call. Imports litellm."""
    lib = import_litellm()
    try:
        name, provider, _, _ = lib.get_llm_provider(model)
        params = lib.get_supported_openai_params(model=name, custom_llm_provider=provider)
    except Exception:  # a model string litellm does not know: it fails the same way on its first call
        return None
    return None if params is None else "n" in params


# litellm reads its own controls from the same keyword arguments as the model's parameters: where to
# send the call and with which credentials (`api_base`, `aws_bedrock_runtime_endpoint`,
# `vertex_project`...), a canned answer, callbacks, and fields it merges into the upstream body or
# drops from it (`extra_body`, `additional_drop_params`), which can override the `max_tokens` and `n`
# the gateway priced and capped the call by. Its list of them grows with every release (and misses
# some: `extra_body` and the AWS and Vertex fields are not on it), so a list of what to keep out can
# never be whole: a client's body reaches litellm through this list only, OpenAI's chat-completion
# fields and the provider extensions litellm translates (`top_k`, Anthropic's `thinking`). Anything
# else is dropped, with a warning line per deployment a while. `metadata` stays out: litellm
# reads it as its own (callbacks, its logging).
FORWARDED = frozenset({
    "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "user", "safety_identifier", "seed", "response_format", "tools", "tool_choice", "parallel_tool_calls",
    "functions", "function_call", "reasoning_effort", "verbosity", "modalities", "audio", "prediction",
    "service_tier", "store", "web_search_options", "prompt_cache_key", "prompt_cache_retention", "cache_salt",
    "top_k", "thinking",
})


class LiteLLMBackend:
    name = "litellm"
    # litellm's own name for it, translated for every provider (`max_completion_tokens` is refused by
    # several of its providers, Bedrock's and watsonx's among them).
    output_limit = "max_tokens"
    # Not every provider behind it reports usage in a stream, or streams every field it answers whole
    # with: whole answers stay whole, judged by `DeploymentHealth.answered_since`.
    streams_whole_answers = False

    def __init__(self) -> None:
        self._litellm: Any = None
        self._dropped = KeyedLogThrottle()  # per deployment

    def _lib(self) -> Any:
        if self._litellm is None:
            self._litellm = import_litellm()
        return self._litellm

    async def prepare(self) -> None:
        """Import litellm off the event loop, before traffic."""
        await asyncio.to_thread(self._lib)

    def _kwargs(self, deployment: DeploymentConfig, body: dict[str, Any],
                headers: Mapping[str, str] | None) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k in FORWARDED}
        if len(kwargs) < len(body) - ("model" in body):  # the client's model is the deployment's, not dropped
            self._say_dropped(deployment, body)
        kwargs.update(model=deployment.model, timeout=deployment.timeout_s, num_retries=0)
        if headers:  # litellm hands these to the provider's HTTP request
            kwargs["extra_headers"] = dict(headers)
        if deployment.api_base:
            kwargs["api_base"] = deployment.api_base
            # Self-hosted servers often take no key, but litellm's OpenAI client insists on one.
            kwargs["api_key"] = "no-key"
        if deployment.api_key_env:
            kwargs["api_key"] = os.environ.get(deployment.api_key_env)
        return kwargs

    def _say_dropped(self, deployment: DeploymentConfig, body: dict[str, Any]) -> None:
        # Keyed by deployment alone: field names come from requests, and the throttle's keys must not.
        if (held := self._dropped.due(deployment.name)) is not None:
            dropped = ", ".join(f"`{k[:64]}`" for k in list(body)[:32] if k not in FORWARDED and k != "model")
            log.warning("deployment '%s' (litellm): body fields not forwarded: %s (%d more requests with fields "
                        "dropped since the last line)", deployment.name, dropped, held,
                        extra={"event": "fields_dropped", "deployment": deployment.name, "fields": dropped,
                               "suppressed": held})

    async def complete(self, deployment: DeploymentConfig, body: dict[str, Any],
                       headers: Mapping[str, str] | None = None) -> Completion:
        lib = self._lib()
        started = time.perf_counter()
        try:
            resp = await lib.acompletion(**self._kwargs(deployment, body, headers))
        except Exception as exc:  # litellm raises many types; classify them in one place
            raise without_key(deployment, _classify(lib, deployment, exc)) from exc
        parsed = _openai_shaped(resp.model_dump(exclude_none=True), "message")
        if not parsed.get("choices"):  # passed on, a 200 with nothing in it, billed (as on the direct path)
            raise ProviderFailure(f"{deployment.name}: upstream sent an answer that is no answer: no choices",
                                  reason="upstream sent an invalid answer")
        usage = Usage.from_dict(parsed.get("usage"), parsed.get("service_tier"))
        return Completion(parsed, usage, time.perf_counter() - started)

    async def stream(self, deployment: DeploymentConfig, body: dict[str, Any], stats: StreamStats,
                     headers: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        lib = self._lib()
        started = time.perf_counter()
        # Chunks that say nothing, held until one does (None since one did): litellm ends a stream it read no
        # chunk from (an empty body, or a 200 whose body is an HTML page or an error envelope) with a
        # finish_reason of its own, which relayed was an empty answer, finished and billed.
        held: list[dict[str, Any]] | None = []
        try:
            resp = await lib.acompletion(**self._kwargs(deployment, {**body, "stream": True}, headers))
            async for chunk in resp:
                parsed = _openai_shaped(_without_its_price(chunk.model_dump(exclude_none=True)), "delta")
                if held is None:
                    pending = [parsed]
                else:
                    held.append(parsed)
                    if not _says_something(parsed):
                        continue
                    pending, held = held, None
                for piece in pending:
                    if stats.ttft_s is None:
                        stats.ttft_s = time.perf_counter() - started
                    if (relayed := read_usage(piece, stats)) is not None:
                        yield relayed
        except ProviderFailure:
            raise
        except Exception as exc:
            raise without_key(deployment, _classify(lib, deployment, exc)) from exc
        if held is not None:
            raise ProviderFailure(f"{deployment.name}: stream ended before any chunk (litellm read none from it)",
                                  reason="stream ended before any chunk")

    async def close(self) -> None:
        return None


def _openai_shaped(answer: dict[str, Any], part: str) -> dict[str, Any]:
    """An answer (`part` "message") or chunk ("delta") without what litellm adds to OpenAI's shape of it: its
    `provider_specific_fields` (copies of `thinking_blocks`, a stop reason OpenAI's `finish_reason` says) and a
    whole answer's tool calls' `index` (a stream's). The openai SDK sends an answer's message back as the
    conversation's next turn, which another deployment of the policy may answer, and a server that checks
    messages strictly (Groq's) refused those fields: a conversation broke when the next turn went there."""
    for choice in answer.get("choices") or ():
        said = choice.get(part) if isinstance(choice, dict) else None
        if not isinstance(said, dict):
            continue
        said.pop("provider_specific_fields", None)
        if part == "message":
            for call in said.get("tool_calls") or ():
                if isinstance(call, dict):
                    call.pop("index", None)
    return answer


def _without_its_price(chunk: dict[str, Any]) -> dict[str, Any]:
    """A chunk without the price litellm puts in a stream's usage (`cost`, from its own cost map): relayed, it
    stood beside the gateway's bill (`switchyard.cost_usd`: a deployment's `price:`, the tier and cache terms,
    a resumed stream's both calls) and disagreed with it. A whole answer's usage is written anew without it."""
    usage = chunk.get("usage")
    if isinstance(usage, dict) and "cost" in usage:
        chunk["usage"] = {k: v for k, v in usage.items() if k != "cost"}
    return chunk


def _says_something(chunk: dict[str, Any]) -> bool:
    """Does a chunk litellm made carry anything of the upstream's: a delta with something in it (litellm
    gives the first chunk it reads the assistant's role) or usage (litellm counts it when the upstream
    reports none)? The chunks litellm adds to end a stream it read nothing from carry neither."""
    return bool(chunk.get("usage")) or any(isinstance(c, dict) and c.get("delta") for c in chunk.get("choices") or ())


def _classify(lib: Any, deployment: DeploymentConfig, exc: Exception) -> ProviderFailure:
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    if (answered := _answered_status(exc)) is not None:
        status = answered
    if isinstance(exc, lib.exceptions.Timeout) and answered is None:
        return ProviderFailure(f"{deployment.name}: timed out: {exc}", status=status, timeout=True,
                               reason=f"timed out after {deployment.timeout_s:g} s")
    if isinstance(exc, lib.exceptions.UnsupportedParamsError):
        # Raised before sending, for OpenAI fields the provider has no counterpart for (Anthropic's for `seed`,
        # `n`, `logprobs`): the client is told which, and a fallback of another provider may take them.
        names = _unsupported_names(exc)
        return ProviderFailure(f"{deployment.name}: {type(exc).__name__}: {exc}", status=400, retryable=False,
                               deployment_specific=True, reason=_unsupported(names),
                               code="unsupported_parameter", param=names[0] if names else None)
    if isinstance(exc, lib.exceptions.APIConnectionError) and not _reached_provider(exc):
        # litellm checks and translates a request before sending it, and raises what it refuses there
        # (an unknown content part type, a message it cannot translate) as a connection error with status
        # 500: retried and counted against the deployment, a few such requests from one client opened its
        # circuit for every tenant without a call being made. Nothing was sent: another attempt would be
        # refused the same way, and the deployment is no less healthy; a fallback may still take it.
        return ProviderFailure(f"{deployment.name}: refused by litellm before it was sent: {exc}", retryable=False,
                               reason=f"refused before it was sent: {_refusal(exc)[:300]}")
    if (isinstance(exc, lib.exceptions.APIConnectionError) and status is None) or _no_answer(exc):
        return ProviderFailure(f"{deployment.name}: connection failed: {exc}")
    if _unreadable_answer(exc):
        return ProviderFailure(f"{deployment.name}: upstream sent invalid JSON: {exc}",
                               reason="upstream sent invalid JSON")
    if _answered_an_error(exc):
        # An error envelope sent with status 200: litellm raises it with a status of its own making (422 unless
        # the envelope names a code), which read as the request's fault was a 400 blaming the client, and no
        # fallback was asked. A failure of the upstream, as on the direct path.
        return ProviderFailure(f"{deployment.name}: upstream sent an error with status 200: {exc}",
                               reason="upstream sent an error with status 200")
    retryable = is_retryable_status(status) if status is not None else True
    error = _stated_error(exc)
    code, param = stated_fields(status, error)
    if isinstance(exc, lib.exceptions.ContextWindowExceededError) and status in (400, 422):
        # A provider's own words for it (Anthropic's "prompt is too long"), which litellm recognised: named as
        # OpenAI names it, which is what code that shortens a conversation on it looks for.
        code, param = code or "context_length_exceeded", param or "messages"
    return ProviderFailure(f"{deployment.name}: {type(exc).__name__}: {exc}", status=status,
                           retryable=retryable, reason=client_reason(status, _message_of(error)),
                           retry_after_s=_retry_after(exc), too_large=too_large(status, str(exc)),
                           code=code, param=param)


def _answered_status(exc: BaseException) -> int | None:
    """The HTTP status the provider answered, where litellm raised from its response (its providers other than
    OpenAI's). litellm's own status may be another: Anthropic's 529 `overloaded_error` is raised as a 500, its
    413 `request_too_large` as a 400, and a 504 or 408 the provider answered at once as a timeout ("timed out
    after 30 s", its Retry-After dropped), where the direct path tells each as the upstream answered it."""
    for seen in causes(exc):
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response.status_code
    return None


def _no_answer(exc: BaseException) -> bool:
    """Whether `exc` is a connection that ended with no answer (reset, refused, dropped), which litellm raises
    for OpenAI-compatible providers as an `InternalServerError` of status 500 ("Connection error."): told as
    `upstream answered 500`, counted under error_type 500, an operator looked for a 500 no upstream sent. What
    it was raised from says so: a transport error, and no HTTP status the provider answered."""
    chain = causes(exc)
    return (any(isinstance(e, (httpx.TransportError, aiohttp.ClientConnectionError)) for e in chain)
            and not any(isinstance(e, httpx.HTTPStatusError) for e in chain))


def _unreadable_answer(exc: BaseException) -> bool:
    """Whether litellm failed to read the provider's answer as JSON (a 200 whose body is not JSON), which it
    raises as a 500 of its own making, as on the direct path: a 200 no client can read, not an answered 500."""
    chain = causes(exc)
    return (any(isinstance(e, json.JSONDecodeError) for e in chain)
            and not any(isinstance(e, httpx.HTTPStatusError) for e in chain))


# Where litellm reads an answer sent with status 200 into its own types, and raises an error envelope it finds
# there as a bare Exception.
_ANSWER_READER = "litellm.litellm_core_utils.llm_response_utils.convert_dict_to_response"


def _answered_an_error(exc: BaseException) -> bool:
    """Whether litellm raised `exc` from an error envelope the provider sent as its answer (status 200)."""
    return any(type(e) is Exception and traceback_modules(e)[-1:] == [_ANSWER_READER] for e in (exc, *causes(exc)))


_UNSUPPORTED = re.compile(r"does not support parameters: \[([^\]]*)\]")


def _unsupported_names(exc: Exception) -> list[str]:
    """The fields litellm will not send the provider, from its message."""
    found = _UNSUPPORTED.search(str(exc))
    return re.findall(r"'([^']{1,64})'", found.group(1)) if found else []


def _unsupported(names: list[str]) -> str:
    """What a client is told of fields litellm will not send the provider: their names (litellm's advice on
    dropping them is about litellm's settings, not the client's)."""
    if not names:
        return "not sent: it takes a field of the request that this deployment's provider does not take"
    listed = ", ".join(f"`{n}`" for n in names[:16])
    return f"not sent: this deployment's provider takes no {listed}; send the request without it"


def _reached_provider(exc: BaseException) -> bool:
    """Whether the call got as far as the network: raised from a transport error (a refused or dropped
    connection, a name that did not resolve), from the provider's HTTP answer, or in litellm's code for
    the provider (`litellm.llms`), which sends the request and reads its answer: an answer it cannot read
    (a KeyError on a body of the wrong shape) fails there, raised as a connection error as a refusal is."""
    return any(isinstance(e, (OSError, httpx.HTTPError, aiohttp.ClientError))
               or isinstance(getattr(e, "status_code", None), int) or _through_provider_code(e)
               for e in causes(exc))


def _through_provider_code(exc: BaseException) -> bool:
    return any(m.startswith("litellm.llms.") for m in traceback_modules(exc))


def _refusal(exc: BaseException) -> str:
    """What litellm said of a request it refused: the error it wrapped as a connection error (its own
    sentence about the request; what that was raised from may be a bare `KeyError`)."""
    chain = causes(exc)
    return str(chain[0] if chain else exc)


def _stated_error(exc: Exception) -> dict[str, Any] | None:
    """The provider's own error object (its message, code, param); never litellm's own wording around it.
    From the error litellm raised (`body`: OpenAI's error object, or a whole envelope; else its response's
    JSON), or, for a provider litellm translates for (Anthropic, Bedrock, ...), from the error it raised
    that from, which keeps the provider's error body as its text: the error raised has no body, and a
    response made up without one."""
    for seen in (exc, *causes(exc)):
        if _message_of(error := _error_of(_error_body(seen))) is not None:
            return error
    return None


def _error_body(exc: BaseException) -> object:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        return body
    for text in (getattr(exc, "message", None), getattr(exc, "text", None)):
        if isinstance(text, str) and text.lstrip().startswith("{"):
            try:
                return json.loads(text)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than `json` reads: nothing stated
                continue
    response = getattr(exc, "response", None)
    try:
        return response.json() if response is not None else None
    except (ValueError, AttributeError, RuntimeError):  # not JSON, not a response, not read: nothing stated
        return None


def _error_of(body: object) -> dict[str, Any] | None:
    """The error object of an error envelope: OpenAI's `{"error": {"message"}}`, Anthropic's `{"type": "error",
    "error": {"type", "message"}}`, or an error object itself."""
    error = body.get("error", body) if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _message_of(error: dict[str, Any] | None) -> str | None:
    message = error.get("message") if error is not None else None
    return message if isinstance(message, str) and message else None


def _retry_after(exc: Exception) -> float | None:
    """Best effort: litellm's exceptions carry the provider's response (and its headers) only sometimes."""
    for headers in (getattr(getattr(exc, "response", None), "headers", None),
                    getattr(exc, "litellm_response_headers", None)):
        try:
            value = headers.get("retry-after") if headers is not None else None
        except (AttributeError, TypeError):
            continue
        if value:
            return parse_retry_after(str(value))
    return None
