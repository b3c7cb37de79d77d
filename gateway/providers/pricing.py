"""Prices per deployment: the config's override, else litellm's model cost map.

The cost map is read as the JSON file that ships inside the litellm package, without importing
litellm (the import takes seconds and would reach for the network). Prices follow litellm's cost
rules, resolved once at start-up so that pricing a call is plain arithmetic:

- prompt tokens read from the provider's prompt cache cost `cache_read_input_token_cost`, those
  written to it `cache_creation_input_token_cost` (either defaults to the input price), those written
  to live an hour `cache_creation_input_token_cost_above_1hr` (Anthropic: 2× the input price, against
  1.25× for a 5-minute write; default the 5-minute write price, and never below it);
- a long-context tier (`input_cost_per_token_above_200k_tokens`, and its output and cache
  companions) prices the *whole* call once its prompt exceeds the threshold; a tier key that is
  missing keeps the rate below it;
- a service tier (`service_tier`, `gateway.providers.terms`) has its own rates, the keys with its
  suffix (`input_cost_per_token_priority`, `output_cost_per_token_above_272k_tokens_flex`); a rate
  the tier does not name is the dearer of the tier's rate below and the standard rate there. A
  deployment without priority rates (a config `price:`, a model the map prices at one tier) bills
  priority at `PRIORITY_MULTIPLIER` × its standard rates, the most OpenAI charges for it (gpt-5;
  gpt-4o is 1.7×): litellm would bill it at the standard rates, under what the provider charges.
  One without flex rates bills flex at its standard rates (flex is cheaper: never under);
- audio output tokens (`completion_tokens_details.audio_tokens`) cost `output_cost_per_audio_token`; a
  deployment without it cannot price audio asked for (`under`);
- audio prompt tokens (`prompt_tokens_details.audio_tokens`) cost `input_cost_per_audio_token` (a
  service tier's `input_cost_per_audio_token_<tier>` where the map names one); a deployment without
  it cannot price a prompt's audio (`under`);
- a web search costs `search_context_cost_per_query` per query, by context size.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.config import DeploymentConfig
from gateway.providers.base import Usage
from gateway.providers.terms import PLAIN, SEARCH_SIZES, Terms, billed_tier

log = logging.getLogger("switchyard.pricing")
_COST_MAP_FILE = "model_prices_and_context_window_backup.json"

# cost-map key prefix per rate; a long-context key is `<prefix>_above_<N>[k|m]_tokens`, a service tier's
# `<prefix>[_above_<N>[k|m]_tokens]_<tier>` (batch rates are for the batch API, never sent here)
_RATE_KEYS = {"input": "input_cost_per_token", "output": "output_cost_per_token",
              "cache_read": "cache_read_input_token_cost", "cache_write": "cache_creation_input_token_cost",
              "cache_write_1h": "cache_creation_input_token_cost_above_1hr"}
SERVICE_TIERS = ("priority", "flex")
_RATE_KEY = re.compile(  # the longer prefix first: `..._cost_above_1hr` is not `..._cost` with a threshold
    r"^(?P<rate>" + "|".join(sorted(_RATE_KEYS.values(), key=len, reverse=True)) + r")"
    r"(?:_above_(?P<n>\d+(?:\.\d+)?)(?P<unit>[km]?)_tokens)?"
    r"(?:_(?P<tier>" + "|".join(SERVICE_TIERS) + r"))?$")
PRIORITY_MULTIPLIER = 2.0


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token for each kind of token. `cache_write`: a prompt-cache write that lives 5 minutes,
    `cache_write_1h`: one that lives an hour."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float

    @property
    def dearest_prompt(self) -> float:
        """The most one prompt token may cost: the client decides whether it is read plainly, read from
        the provider's cache or written to it, and for how long (`cache_control` on its messages)."""
        return max(self.input, self.cache_read, self.cache_write, self.cache_write_1h)

    def times(self, factor: float) -> Rates:
        return Rates(*(getattr(self, f.name) * factor for f in fields(Rates)))

    def dearer(self, other: Rates) -> Rates:
        """Each rate the dearer of the two."""
        return Rates(*(max(getattr(self, f.name), getattr(other, f.name)) for f in fields(Rates)))


@dataclass(frozen=True, slots=True)
class PriceTier:
    above_prompt_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class DeploymentPrice:
    input_per_token: float
    output_per_token: float
    source: str  # "config" | "litellm" | "unknown"
    cache_read_per_token: float | None = None   # None: cached prompt tokens cost the input price
    cache_write_per_token: float | None = None  # None: likewise for prompt-cache writes
    tiers: tuple[PriceTier, ...] = ()  # ascending thresholds
    service_tiers: tuple[tuple[str, DeploymentPrice], ...] = ()  # ("priority", its prices), ...
    audio_output_per_token: float | None = None  # None: unknown (audio asked for is `unpriced`, see `under`)
    search_per_query: tuple[tuple[str, float], ...] = ()  # (context size, USD a query); none: unknown
    audio_input_per_token: float | None = None  # None: unknown (an audio prompt is `unpriced`, see `under`)
    cache_write_1h_per_token: float | None = None  # None: 1-hour prompt-cache writes cost a 5-minute write's price
    # Set on the price of a request's worst case (`under`): a fee each call adds, and a field of the
    # request this price cannot account for (a web search at a deployment with no per-query price,
    # audio in the prompt at one with no audio rate).
    per_call: float = 0.0
    unpriced: str | None = None
    base: Rates = field(init=False, repr=False, compare=False)  # resolved once, below every tier

    def __post_init__(self) -> None:
        inp = self.input_per_token
        read = inp if self.cache_read_per_token is None else self.cache_read_per_token
        write = inp if self.cache_write_per_token is None else self.cache_write_per_token
        write_1h = write if self.cache_write_1h_per_token is None else self.cache_write_1h_per_token
        object.__setattr__(self, "base", Rates(inp, self.output_per_token, read, write, write_1h))

    def rates(self, prompt_tokens: int) -> Rates:
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above_prompt_tokens:
                return tier.rates
        return self.base

    def at_tier(self, tier: str | None) -> DeploymentPrice:
        """The prices under service tier `tier` (None: standard)."""
        if tier is None:
            return self
        for name, price in self.service_tiers:
            if name == tier:
                return price
        return self.scaled(PRIORITY_MULTIPLIER) if tier == "priority" else self

    def scaled(self, factor: float) -> DeploymentPrice:
        b = self.base.times(factor)
        audio = None if self.audio_output_per_token is None else self.audio_output_per_token * factor
        heard = None if self.audio_input_per_token is None else self.audio_input_per_token * factor
        return replace(self, input_per_token=b.input, output_per_token=b.output, cache_read_per_token=b.cache_read,
                       cache_write_per_token=b.cache_write, cache_write_1h_per_token=b.cache_write_1h,
                       tiers=tuple(PriceTier(t.above_prompt_tokens, t.rates.times(factor)) for t in self.tiers),
                       service_tiers=(), audio_output_per_token=audio, audio_input_per_token=heard)

    def search_fee(self, size: str) -> float | None:
        """USD a web search query of context `size` costs, or None when the price is not known."""
        fees = dict(self.search_per_query)
        return fees.get(size, max(fees.values())) if fees else None

    def cost(self, usage: Usage, terms: Terms = PLAIN) -> float:
        """What the provider bills for one call: at the tier its answer reports (else the one asked),
        its audio output and audio prompt at their audio rates, and one search query if the request
        asked for search."""
        p = self if usage.service_tier is None and terms.tier is None else self.at_tier(
            billed_tier(usage.service_tier, terms.tier))
        r = p.rates(usage.prompt_tokens)
        cached, written = usage.cached_tokens, usage.cache_write_tokens
        hour = min(usage.cache_write_1h_tokens, written)
        plain = max(usage.prompt_tokens - cached - written, 0)
        billed = (plain * r.input + cached * r.cache_read + (written - hour) * r.cache_write
                  + hour * r.cache_write_1h + usage.completion_tokens * r.output)
        if usage.audio_tokens and p.audio_output_per_token is not None:
            billed += min(usage.audio_tokens, usage.completion_tokens) * (p.audio_output_per_token - r.output)
        if usage.prompt_audio_tokens and p.audio_input_per_token is not None:
            # counted among the prompt tokens at the text rate above: the difference makes them the audio rate
            billed += min(usage.prompt_audio_tokens, usage.prompt_tokens) * (p.audio_input_per_token - r.input)
        if terms.search is not None:
            billed += self.search_fee(terms.search) or 0.0
        return billed

    def under(self, terms: Terms) -> DeploymentPrice:
        """The prices a call asked for under `terms` is held at: its tier's (priority for any tier the
        provider picks), every output token at the audio rate when audio is asked (the model decides
        how much of it is audio), its search query as a fee per call, and its audio prompt tokens'
        premium over the text rate as a fee per call too (each call is sent the whole prompt)."""
        p = self.at_tier(terms.tier)
        if terms.audio and p.audio_output_per_token is not None:
            audio = p.audio_output_per_token
            p = replace(p, output_per_token=max(p.output_per_token, audio), tiers=tuple(
                PriceTier(t.above_prompt_tokens, replace(t.rates, output=max(t.rates.output, audio))) for t in p.tiers))
        per_call, unpriced = 0.0, None
        if terms.search is not None:
            fee = self.search_fee(terms.search)
            per_call, unpriced = fee or 0.0, "web_search_options" if fee is None else None
        if terms.audio and p.audio_output_per_token is None:
            # Audio output at no known rate: refused under a budget or cost cap, as audio input is (audio
            # output rates run 8× the text output rate and more: no multiple bounds them).
            unpriced = unpriced or "modalities"
        if terms.audio_input:
            heard = p.audio_input_per_token
            if heard is None:
                # Unknown is refused under a budget or cost cap, as an unpriced web search is, rather than
                # held at a multiple as priority is: priority costs at most 2× standard, but audio prompt
                # rates run from 6× the text rate (Gemini's native audio) to 66× (gpt-4o-mini-audio), so
                # no multiple bounds them. The prompt's audio is already counted at the text rate.
                unpriced = unpriced or "input_audio"
            else:  # the premium over the text rate below any long-context tier: never less than `cost` adds
                per_call += terms.audio_input * max(heard - p.input_per_token, 0.0)
        if per_call or unpriced:
            p = replace(p, per_call=per_call, unpriced=unpriced)
        return p

    def estimate(self, prompt_tokens: float, output_tokens: float) -> float:
        """A prediction: no cache hits assumed, the tier the prompt falls in."""
        r = self.rates(int(prompt_tokens)) if self.tiers else self.base
        return prompt_tokens * r.input + output_tokens * r.output + self.per_call

    def bound(self, prompt_tokens: float, output_tokens: float) -> float:
        """The most a call of this many tokens may be billed (budget holds, cost caps): `estimate` with
        every prompt token at its dearest rate (`Rates.dearest_prompt`). A prompt written to the
        provider's cache costs more than one read plainly (Anthropic: 1.25× the input price for 5
        minutes, 2× for an hour), and the client decides that, so a prompt is held as if all of it were
        written for an hour."""
        r = self.rates(int(prompt_tokens)) if self.tiers else self.base
        return prompt_tokens * r.dearest_prompt + output_tokens * r.output + self.per_call


def load_litellm_cost_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _COST_MAP_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _rate(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _resolved(explicit: dict[str, float]) -> Rates:
    """A cache rate the map does not give is the input rate (the provider bills such tokens as input); a
    1-hour write's, the 5-minute write's, and never below it (a tier that raises the 5-minute write
    rate without naming the 1-hour one raises both)."""
    inp = explicit["input"]
    write = explicit.get("cache_write", inp)
    return Rates(inp, explicit.get("output", 0.0), explicit.get("cache_read", inp), write,
                 max(explicit.get("cache_write_1h", write), write))


def _parsed(entry: dict[str, Any]) -> dict[str | None, dict[int, dict[str, float]]]:
    """The map's rate keys: per service tier (None: standard), per threshold (0: below any), per rate."""
    found: dict[str | None, dict[int, dict[str, float]]] = {}
    names = {v: k for k, v in _RATE_KEYS.items()}
    for key in entry:
        m = _RATE_KEY.match(key)
        if m and (rate := _rate(entry, key)) is not None:
            scale = {"k": 1_000, "m": 1_000_000}.get(m["unit"], 1)
            threshold = int(float(m["n"]) * scale) if m["n"] else 0
            found.setdefault(m["tier"], {}).setdefault(threshold, {})[names[m["rate"]]] = rate
    return found


def _tiers(found: dict[int, dict[str, float]], base: dict[str, float],
           standard: tuple[PriceTier, ...] = ()) -> tuple[PriceTier, ...]:
    """The `*_above_<N>k_tokens` rates as cumulative tiers, in ascending order. A service tier's
    (`standard`: the standard tiers) adds the standard thresholds it does not name, each rate the
    dearer of its own below and the standard one there."""
    thresholds = sorted({t for t in found if t} | {t.above_prompt_tokens for t in standard})
    named = {t.above_prompt_tokens: t.rates for t in standard}
    tiers, current = [], base
    for threshold in thresholds:
        own = found.get(threshold, {})
        if threshold in named:
            current = {**asdict(_resolved(current).dearer(named[threshold])), **own}
        else:
            current = {**current, **own}  # a rate the tier does not name stays as below it
        tiers.append(PriceTier(threshold, _resolved(current)))
    return tuple(tiers)


def _audio_rate(entry: dict[str, Any]) -> float | None:
    return _rate(entry, "output_cost_per_audio_token")


def _audio_input_rate(entry: dict[str, Any], tier: str | None = None) -> float | None:
    """The audio prompt rate, standard or service tier `tier`'s. A tier the map prices without naming
    its audio rate is held as a tier without rates is (`DeploymentPrice.at_tier`): priority at
    `PRIORITY_MULTIPLIER` × the standard audio rate, flex at it. The long-context keys are not read:
    the map prices audio above 200k tokens no dearer than below."""
    standard = _rate(entry, "input_cost_per_audio_token")
    own = None if tier is None else _rate(entry, f"input_cost_per_audio_token_{tier}")
    if own is not None or standard is None:
        return own
    return standard * PRIORITY_MULTIPLIER if tier == "priority" else standard


def _search_fees(entry: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    fees = entry.get("search_context_cost_per_query")
    if not isinstance(fees, dict):
        return ()
    return tuple((size, r) for size in SEARCH_SIZES if (r := _rate(fees, f"search_context_size_{size}")) is not None)


def price_from_cost_map(entry: dict[str, Any]) -> DeploymentPrice:
    found = _parsed(entry)
    explicit = found.get(None, {}).get(0, {})
    standard = _tiers(found.get(None, {}), explicit)
    audio, search = _audio_rate(entry), _search_fees(entry)
    variants = []
    for tier in SERVICE_TIERS:
        own = found.get(tier, {})
        if "input" not in own.get(0, {}):
            continue
        below = {**{k: v for k, v in explicit.items() if k == "output"}, **own[0]}
        variants.append((tier, DeploymentPrice(below["input"], below.get("output", 0.0), "litellm",
                                               below.get("cache_read"), below.get("cache_write"),
                                               _tiers(own, below, standard), audio_output_per_token=audio,
                                               search_per_query=search,
                                               audio_input_per_token=_audio_input_rate(entry, tier),
                                               cache_write_1h_per_token=_resolved(below).cache_write_1h)))
    return DeploymentPrice(explicit["input"], explicit.get("output", 0.0), "litellm", explicit.get("cache_read"),
                           explicit.get("cache_write"), standard, tuple(variants), audio, search,
                           _audio_input_rate(entry), _resolved(explicit).cache_write_1h)


def price_for(deployment: DeploymentConfig, cost_map: dict[str, Any] | None) -> DeploymentPrice:
    if deployment.price is not None:
        p = deployment.price
        return DeploymentPrice(p.input_per_mtok / 1e6, p.output_per_mtok / 1e6, "config",
                               None if p.cached_input_per_mtok is None else p.cached_input_per_mtok / 1e6,
                               None if p.cache_write_per_mtok is None else p.cache_write_per_mtok / 1e6,
                               cache_write_1h_per_token=None if p.cache_write_1h_per_mtok is None
                               else p.cache_write_1h_per_mtok / 1e6,
                               audio_output_per_token=None if p.audio_output_per_mtok is None
                               else p.audio_output_per_mtok / 1e6,
                               audio_input_per_token=None if p.audio_input_per_mtok is None
                               else p.audio_input_per_mtok / 1e6)
    cost_map = cost_map or {}
    _, _, bare = deployment.model.partition("/")
    entry = cost_map.get(deployment.model) or cost_map.get(bare)
    if entry and _rate(entry, "input_cost_per_token") is not None:
        return price_from_cost_map(entry)
    log.warning("no price for deployment %s (%s): its cost counts as 0; set price: in the config",
                deployment.name, deployment.model)
    return DeploymentPrice(0.0, 0.0, "unknown")


def prices_for(deployments: list[DeploymentConfig]) -> dict[str, DeploymentPrice]:
    needs_map = any(d.price is None for d in deployments)
    cost_map = load_litellm_cost_map() if needs_map else None
    return {d.name: price_for(d, cost_map) for d in deployments}


def format_usd(cost: float) -> str:
    """Fixed-point, no exponent, enough digits for sub-cent requests: `0.0000342`."""
    text = f"{cost:.12f}".rstrip("0").rstrip(".")
    return text or "0"
