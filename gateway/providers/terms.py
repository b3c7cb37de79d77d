"""What a request asks for that changes the price of its calls: the terms they are billed under.

A provider bills the same tokens differently by these request fields, forwarded upstream unchanged:
- `service_tier`: OpenAI bills "priority" at its `*_priority` rates (gpt-4o 1.7×, gpt-5 2×) and
  "flex" at its `*_flex` rates (half). "auto" runs under the project's tier, which may be priority,
  and "scale" draws on prepaid units: both are held as priority, the dearest, until the answer says
  which tier it ran under (and is billed by that);
- `web_search_options`: a fee per search query (`search_context_cost_per_query`, by the asked
  `search_context_size`, medium by default) on top of the tokens; one query per call;
- `modalities` with "audio": audio output tokens cost their own (much higher) rate, and any of the
  output may be audio;
- `input_audio` parts in its messages: audio prompt tokens cost their own rate too (gpt-4o-audio
  16× its text rate, gpt-4o-mini-audio 66×). `terms_of` does not read the messages: the gateway
  counts their audio where it counts the prompt (`gateway.messages`), and `with_audio_input` adds it.

A request that sends none of them is `PLAIN`, checked with three dict lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# The tier a request's worst case is priced at, by what it asks; anything else it may send is held
# as priority: the provider decides, and it is the dearest tier.
_ASKED_TIER = {"default": None, "standard": None, "flex": "flex"}
SEARCH_SIZES = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Terms:
    """`tier`: the service tier asked ("priority", "flex"; None: standard); `search`: the web search
    context size asked ("low", "medium", "high"; None: no search); `audio`: audio output asked;
    `audio_input`: the prompt tokens of its audio parts, as `gateway.media_tokens` estimates them."""

    tier: str | None = None
    search: str | None = None
    audio: bool = False
    audio_input: int = 0


PLAIN = Terms()


def terms_of(request: Mapping[str, Any]) -> Terms:
    """The terms `request` asks for: `PLAIN` when it sends none of the fields that change prices."""
    tier, search, modalities = (request.get("service_tier"), request.get("web_search_options"),
                                request.get("modalities"))
    if tier is None and search is None and modalities is None:
        return PLAIN
    asked_tier = None if tier is None else _ASKED_TIER.get(tier, "priority") if isinstance(tier, str) else "priority"
    size: str | None = None
    if search is not None:
        asked = search.get("search_context_size") if isinstance(search, dict) else None
        # an unknown size is held as the dearest: the provider may bill it at any of them
        size = "medium" if asked is None else asked if asked in SEARCH_SIZES else "high"
    audio = isinstance(modalities, list) and "audio" in modalities
    if asked_tier is None and size is None and not audio:
        return PLAIN
    return Terms(asked_tier, size, audio)


def with_audio_input(terms: Terms, tokens: int) -> Terms:
    """`terms` for a prompt with `tokens` audio tokens (0: `terms` itself, `PLAIN` stays `PLAIN`)."""
    return replace(terms, audio_input=tokens) if tokens else terms


def billed_tier(reported: str | None, asked: str | None) -> str | None:
    """The tier a call is billed at: the one its answer reports, else (no tier, or "auto", which
    names none) the one the request asked for."""
    if reported is None or reported == "auto":
        return asked
    if reported in ("default", "standard", "standard_only"):
        return None
    return "flex" if reported == "flex" else "priority" if reported in ("priority", "scale") else asked
