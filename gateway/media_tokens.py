"""Prompt tokens of a message's non-text parts (images, audio, files): conservative estimates.

Providers bill these parts as prompt tokens, so budgets, cost caps and token windows must count them
before the call. The gateway has neither the provider's media tokenizer nor the media (an image by
URL is not fetched, and a base64 payload is not decoded: its size, len × 3/4, is all that is read),
so each part is priced by its kind and size with a bound meant to hold on every provider it routes to:

- image (`image_url`): `IMAGE_TOKENS` = 1,600 per image, whatever its `detail` says. OpenAI bills
  85 tokens at `low`, and at `high` 85 + 170 per 512-px tile of the image scaled into 2048 × 768,
  at most 8 tiles (1,445); o-series and GPT-5 tiles cost less (≤ 1,275). Anthropic ignores `detail`
  and bills width × height / 750, at most ~1,600 (1.15 MP); Gemini 258 (up to 1,290 at high media
  resolution). `detail` binds one provider only, and a fallback may go to another, so it is not read.
  Known to bill more per image: gpt-4o-mini (2,833 + 5,667 per tile, at a per-token price that makes
  an image cost what it costs on gpt-4o), newer patch-priced models at detail `original`, and Claude
  models with high-resolution input (≤ 4,784).
- audio (`input_audio`): the decoded size at 8 kbit/s (1,000 bytes a second: MP3's lowest bitrate,
  the most compressed of the accepted `wav` and `mp3`; PCM WAV is 64 kbit/s or more) is the longest
  the clip can last, billed at 32 tokens a second (Gemini's rate; OpenAI's is 10), at least 1 s.
  A 1 MB clip is held as 32,000 tokens. These are counted apart too (`split_parts_tokens`): providers
  bill audio prompt tokens at their own rate (OpenAI's audio models 13-66× the text rate), so budgets,
  cost caps and plan prices hold them at the deployment's audio rate (`DeploymentPrice.under`).
- file (`file`): documents (PDFs) are billed by page, as the page's text plus an image of the page,
  up to ~4,600 tokens a page on Anthropic (3,000 text + 1,600 image): `FILE_PAGE_TOKENS` = 5,000.
  With `file_data`: 2 tokens per decoded byte (a text page compresses to 2-4 KB, so about 1.5 tokens
  a byte are billed), at least one page and at most `FILE_MAX_TOKENS`, the 100 pages OpenAI and
  Anthropic read from a request. Only a `file_id` (the content is the provider's): that 100-page most.
  A PDF crafted to pack many near-empty pages into few bytes can be billed more than its size says.
- `text`: counted by the tokenizer with the rest of the text (`gateway.messages`), not here;
  `refusal` (an earlier assistant turn): its UTF-8 bytes, a bound on its tokens.
- any other type: `UNKNOWN_PART_TOKENS`, an image's worth, never 0.

Text-only requests do not come here: `gateway.messages` calls `split_parts_tokens` only for list contents.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

IMAGE_TOKENS = 1_600
AUDIO_BYTES_PER_S = 1_000       # 8 kbit/s
AUDIO_TOKENS_PER_S = 32
AUDIO_MIN_TOKENS = AUDIO_TOKENS_PER_S  # one second
FILE_PAGE_TOKENS = 5_000
FILE_TOKENS_PER_BYTE = 2
FILE_MAX_TOKENS = 100 * FILE_PAGE_TOKENS
FILE_ID_TOKENS = FILE_MAX_TOKENS
UNKNOWN_PART_TOKENS = IMAGE_TOKENS


def _decoded_bytes(data: object) -> int:
    """The size a base64 payload decodes to, without decoding it (a data: URL's prefix is counted too)."""
    return len(data) * 3 // 4 if isinstance(data, str) else 0


def _field(part: Mapping[str, Any], container: str, name: str) -> object:
    inner = part.get(container)
    return inner.get(name) if isinstance(inner, Mapping) else None


def audio_tokens(data: object) -> int:
    seconds = _decoded_bytes(data) / AUDIO_BYTES_PER_S
    return max(AUDIO_MIN_TOKENS, math.ceil(seconds * AUDIO_TOKENS_PER_S))


def file_tokens(part: Mapping[str, Any]) -> int:
    data = _field(part, "file", "file_data")
    if not isinstance(data, str) or not data:
        return FILE_ID_TOKENS
    return min(FILE_MAX_TOKENS, max(FILE_PAGE_TOKENS, _decoded_bytes(data) * FILE_TOKENS_PER_BYTE))


def part_tokens(part: object) -> int:
    """The prompt tokens one content part may be billed, besides its text (0 for a text part)."""
    if not isinstance(part, Mapping):
        return UNKNOWN_PART_TOKENS
    kind = part.get("type")
    if kind == "text":
        return 0
    if kind == "image_url":
        return IMAGE_TOKENS
    if kind == "input_audio":
        return audio_tokens(_field(part, "input_audio", "data"))
    if kind == "file":
        return file_tokens(part)
    if kind == "refusal":
        refusal = part.get("refusal")
        return len(refusal.encode("utf-8", "replace")) if isinstance(refusal, str) else 0
    return UNKNOWN_PART_TOKENS


def split_parts_tokens(parts: Sequence[object]) -> tuple[int, int]:
    """The prompt tokens a list content's non-text parts may be billed, and of them the audio ones
    (`input_audio`), in one pass."""
    total = audio = 0
    for p in parts:
        n = part_tokens(p)
        total += n
        if n and isinstance(p, Mapping) and p.get("type") == "input_audio":
            audio += n
    return total, audio


def messages_audio_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """The audio prompt tokens of `messages`, for the few places that price a call without the count
    the request made (`gateway.messages`): a call given up on, a shadow call, usage the gateway counts."""
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            total += split_parts_tokens(content)[1]
    return total
