"""Reading OpenAI messages: their text, the text the router judges, and token counts.

One tokenizer serves routing estimates, cost caps, budget reservations and billing.

tiktoken's `o200k_base` (the GPT-4o family's encoding) counts text. Its vocabulary file ships
inside the litellm package, so it is loaded from there (`TIKTOKEN_CACHE_DIR`, set before the first
`get_encoding`) and nothing is fetched from the network; litellm itself is not imported. Without
tiktoken or that file the count falls back to UTF-8 bytes ÷ 3, which over-counts English a little
and does not under-count CJK text (three bytes and about one token per character).

Counting is on the hot path, so it is bounded: a text up to `EXACT_CHARS` is encoded exactly
(about 4 µs for a short prompt, 40 µs at the limit); a longer one is sampled and extrapolated, and
never counted below bytes ÷ 4. The samples are one window in each of `_SAMPLES` equal stretches of
the text, at places drawn from a keyed hash of the text (a key made at start-up): samples at fixed
places (its head, middle and tail) let a client put token-sparse text (runs of spaces) exactly there
and token-dense text (punctuation, ~0.66 tokens a character) everywhere else, and a 100,000-character
prompt billed 66,000 tokens was counted as 25,000, which a cost cap or a budget hold then took for
its worst case. Where the windows fall is unknown to the client and moves with any change to the
text, so no text can be shaped to be under-counted; an estimate is off only by chance, in either
direction. The same text is counted alike every time in a process (a request's hold, its plans'
estimates and `/v1/route` agree, and a decision does not flip between identical requests). Counts
are not remembered across requests: a remembered text would be counted sooner, and that timing would
tell one tenant whether another had just sent it (the router's memory is per tenant for the same reason).

A prompt's images, audio and files are billed as prompt tokens too: every count of a prompt adds
their conservative estimates (`gateway.media_tokens`); the text the router judges stays text. The
audio among them is counted apart in the same pass (`routing_counts`, `prompt_bound`): it is priced
at its own rate.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from gateway.media_tokens import split_parts_tokens

log = logging.getLogger("switchyard.messages")

ENCODING = "o200k_base"
# tiktoken names its cache files by the sha1 of the vocabulary URL; these are the ones litellm ships.
_CACHE_FILES = {"o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
                "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"}
EXACT_CHARS = 2048
_SAMPLES, _SAMPLE_CHARS = 8, 192  # windows of a long text that are encoded (1,536 characters in all)
# Where a long text is sampled: from hash((_PLACES_KEY, text)), a key from the OS per process, so that
# the places cannot be foreseen even where Python's string hashing is not salted (PYTHONHASHSEED=0).
_PLACES_KEY = random.SystemRandom().getrandbits(64)
# OpenAI's chat format adds a few tokens per message (role, separators) and primes the reply.
PER_MESSAGE_TOKENS = 4
PER_REQUEST_TOKENS = 3


def _litellm_tokenizers() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return folder if (folder / _CACHE_FILES[ENCODING]).is_file() else None


def _bytes_estimate(text: str) -> int:
    return math.ceil(len(text.encode("utf-8", "replace")) / 3)


@lru_cache(maxsize=1)
def _encoder() -> Callable[[str], int]:
    """The exact counter, loaded once; the bytes estimate when tiktoken cannot load offline."""
    folder = _litellm_tokenizers()
    if folder is not None and "TIKTOKEN_CACHE_DIR" not in os.environ:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(ENCODING)
    except Exception as exc:  # any failure, offline included, means: estimate
        log.warning("tokenizer %s unavailable (%s): counting tokens as UTF-8 bytes / 3", ENCODING, exc)
        return _bytes_estimate
    encode = encoding.encode_ordinary  # special-token text in a prompt is plain text here
    return lambda text: len(encode(text))


def load() -> None:
    """Load the tokenizer now (at start-up) rather than on the first request."""
    _encoder()


def count_text(text: str) -> int:
    """Tokens in `text`: exact up to EXACT_CHARS, extrapolated from samples beyond."""
    n = len(text)
    if n <= EXACT_CHARS:
        return _encoder()(text) if text else 0
    count = _encoder()
    stretch = n // _SAMPLES  # > _SAMPLE_CHARS, as n > EXACT_CHARS
    places = random.Random(hash((_PLACES_KEY, text)))  # a str caches its hash: one pass over a long text
    starts = (i * stretch + places.randrange(stretch - _SAMPLE_CHARS + 1) for i in range(_SAMPLES))
    sampled = sum(count(text[s:s + _SAMPLE_CHARS]) for s in starts) * n / (_SAMPLES * _SAMPLE_CHARS)
    return math.ceil(max(sampled, len(text.encode("utf-8", "replace")) / 4))


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones (an image is no empty line)
        return "\n".join(str(p["text"]) for p in content if isinstance(p, dict) and "text" in p)
    return ""


def count_texts(texts: Sequence[str]) -> int:
    """Prompt tokens of messages with these texts: one encode of them all, plus the chat framing."""
    return count_text("\n".join(texts)) + PER_MESSAGE_TOKENS * len(texts) + PER_REQUEST_TOKENS


def read_prompt(messages: Iterable[Mapping[str, Any]]) -> tuple[list[str], int, int]:
    """Each message's text, the prompt tokens of the parts that are not text (images, audio, files:
    `gateway.media_tokens`), which providers bill as prompt tokens too, and of those the audio ones."""
    texts: list[str] = []
    media = audio = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        texts.append(content_text(content))
        if isinstance(content, list):
            parts, heard = split_parts_tokens(content)
            media += parts
            audio += heard
    return texts, media, audio


def count_messages(messages: Iterable[Mapping[str, Any]]) -> int:
    texts, media, _ = read_prompt(messages)
    return count_texts(texts) + media


# What a model reads besides the messages' text, and providers bill as prompt tokens: the tool and
# function definitions, the schema to answer in, the documents vLLM's chat templates render into the prompt
# (its RAG field), and the tool calls of earlier turns. A tenant can put as much text there as in a message,
# so it is counted wherever the prompt is.
_DEFINITIONS = ("tools", "functions", "response_format", "documents")
_CALLS = ("tool_calls", "function_call")
# A message's own fields of text besides its content (`{"role": "user", "name": ..., "content": ...}`, a
# tool result's `tool_call_id`, an earlier assistant turn's `refusal`): the model reads them too, and their
# length is the client's to choose.
_LABELS = ("name", "tool_call_id", "refusal")


def _definition_texts(request: Mapping[str, Any]) -> list[bytes]:
    texts = [orjson.dumps(request[k]) for k in _DEFINITIONS if request.get(k)]
    for m in request.get("messages") or ():
        texts.extend(orjson.dumps(m[k]) for k in _CALLS if m.get(k))
        texts.extend(m[k].encode("utf-8", "replace") for k in _LABELS if isinstance(m.get(k), str) and m[k])
    return texts


def definition_tokens(request: Mapping[str, Any]) -> tuple[int, int]:
    """Tokens of the request's definitions and earlier tool calls, counted as their JSON text, and their
    bound as `prompt_bound` has it (their UTF-8 bytes)."""
    texts = _definition_texts(request)
    return sum(count_text(t.decode()) for t in texts), sum(len(t) for t in texts)


def request_bound(request: Mapping[str, Any]) -> tuple[int, int]:
    """`prompt_bound` of a request's messages with its definitions' bytes: the prompt tokens a budget
    holds for one call of it (and, as `prompt_bound`, the audio tokens among them)."""
    bound, audio = prompt_bound(request.get("messages") or ())
    return bound + sum(len(t) for t in _definition_texts(request)), audio


# The prompt this request already counted (routing does), so that the calls it makes need not count
# it again. A context variable, because the count must reach every upstream call of the request
# (plans copy the body but keep its messages list) without every plan kind passing it along; the
# identity check keeps a judge's own prompt, or another request's, from being taken for it.
_COUNTED: ContextVar[tuple[object, int] | None] = ContextVar("switchyard_prompt_counted", default=None)


def remember_prompt(messages: object, tokens: int | None) -> None:
    """This request's prompt is `messages`, `tokens` long (None: not counted yet), its definitions
    included: every call that sends these messages sends them too."""
    if tokens is not None:
        _COUNTED.set((messages, tokens))


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The prompt tokens of a call of `body`: the count the request already made of these very messages,
    else `count_messages` plus the body's definitions (`definition_tokens`), which the remembered count
    holds too. A pinned request is not counted before its call: the messages alone billed its tools free."""
    messages = body.get("messages") or ()
    known = _COUNTED.get()
    if known is not None and known[0] is messages:
        return known[1]
    return count_messages(messages) + definition_tokens(body)[0]


def prompt_bound(messages: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """A bound no exact count exceeds, for the price of measuring bytes: a byte-level BPE token
    covers at least one UTF-8 byte (non-text parts: their estimates, as `count_messages` counts
    them). Enough to show that a cost cap cannot bind. And the prompt's audio tokens among them
    (`gateway.media_tokens`), priced at their own rate."""
    texts, media, audio = read_prompt(messages)
    return (sum(len(t.encode("utf-8", "replace")) for t in texts) + PER_MESSAGE_TOKENS * len(texts)
            + PER_REQUEST_TOKENS + media), audio


# Where servers put a model's thinking, in a message or a stream's delta (vLLM's reasoning parsers and
# DeepSeek: `reasoning_content`; newer vLLM and OpenRouter: `reasoning`). It is billed as completion
# tokens, so an answer or a stream without usage is billed for it too.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def reasoning_text(message: Mapping[str, Any]) -> str:
    """The thinking a message or delta carries: the first of `REASONING_FIELDS` it has (a server moving
    from one name to the other may send the same text under both, which is billed once)."""
    for name in REASONING_FIELDS:
        if isinstance(thought := message.get(name), str) and thought:
            return thought
    return ""


def count_completion(body: Mapping[str, Any]) -> int:
    """Completion tokens of a chat.completion body, counted from its text (for answers without usage):
    the answer, its refusal, its tool calls (or function call) and the reasoning that came with it, as
    `streaming.Accumulator.completion_tokens_estimate` counts a stream's."""
    total = 0
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        total += count_text(content_text(message.get("content")))
        total += count_text(reasoning_text(message))
        if isinstance(refusal := message.get("refusal"), str):
            total += count_text(refusal)
        if isinstance(function := message.get("function_call"), dict):  # the legacy form of a tool call
            total += count_text(str(function.get("name", "")) + str(function.get("arguments", "")))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            total += count_text(str(function.get("name", "")) + str(function.get("arguments", "")))
    return total


message_text = content_text

# The router reads the end of a long prompt: that is where the question usually is, and it keeps the
# per-request cost bounded whatever the client sends.
MAX_ROUTER_CHARS = 12_000


def routing_counts(messages: Sequence[Mapping[str, Any]]) -> tuple[str, int, int]:
    """The text the router judges (the last user turn, with the system prompt), the prompt's tokens
    and the audio tokens among them. Routed requests carry the counts forward
    (`RouteSignal.prompt_tokens`, `RouteSignal.audio_tokens`): counted once, they price the plans, so
    they count the non-text parts too; the router reads the text alone."""
    texts, media, audio = read_prompt(messages)
    return _judged(messages, texts), count_texts(texts) + media, audio


def routing_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the router judges, without counting tokens (request records keep it)."""
    return _judged(messages, [content_text(m.get("content")) for m in messages])


def _judged(messages: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> str:
    last_user = ""
    system = ""
    for m, text in zip(messages, texts, strict=True):
        if m.get("role") == "user":
            last_user = text
        elif m.get("role") in ("system", "developer") and not system:
            system = text
    text = (system + "\n" + last_user).strip() if system else last_user
    return text[-MAX_ROUTER_CHARS:]
