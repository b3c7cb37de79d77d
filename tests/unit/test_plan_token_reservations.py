"""What a best-of or a cascade holds in a tokens-per-minute window (`worst_case_tokens`, reserved
before any call) is an upper bound: through the whole request path, in the world where every call
uses all it may (each answer as long as it is allowed to be, samples disagree, judges score low so
cascades escalate, judges read those long answers), settling never adds tokens to the window."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
import tiktoken

from gateway.admission_store import Settlement
from gateway.api.app import build_services
from gateway.auth import hash_key
from gateway.config import DeploymentConfig, parse_config
from gateway.messages import ENCODING, PER_MESSAGE_TOKENS, PER_REQUEST_TOKENS, load
from gateway.pipeline import Answer, CallContext, Services, handle
from gateway.state import window_key
from tests.support.fake_backend import FakeBackend, answer

KEY = "sk-metered"
POLICIES = {
    "best-of": "candidates:\n  - best_of: {deployment: small, n: 3, selector: judge, judge: judge}\n",
    "best-of-16": "candidates:\n  - best_of: {deployment: small, n: 16, selector: judge, judge: judge}\n",
    "judged-cascade": "candidates:\n  - cascade: {steps: [small, large], confidence: judge, threshold: 0.9, "
                      "judge: judge}\n",
    "vote-cascade": "candidates:\n  - cascade: {steps: [small, large], confidence: agreement, samples: 3, "
                    "threshold: 1.0}\n",
}
LIMITS = {"small": 300, "large": 500, "judge": 200}  # max_output_tokens


def _tokens(text: str) -> int:
    """What an upstream bills: the exact count (the gateway samples texts past `EXACT_CHARS`)."""
    load()  # the vocabulary, from where the gateway keeps it (no network)
    return len(tiktoken.get_encoding(ENCODING).encode_ordinary(text))


def _prompt(messages: list[dict[str, Any]]) -> int:
    return sum(_tokens(m["content"]) for m in messages) + PER_MESSAGE_TOKENS * len(messages) + PER_REQUEST_TOKENS


def _text(tokens: int, letter: str) -> str:
    """An answer exactly `tokens` long."""
    words = f"Answer {letter}."
    while _tokens(words + " more") <= tokens:
        words += " more"
    return words


def _greedy(d: DeploymentConfig, body: dict[str, Any]) -> dict[str, Any]:
    """Every call generates all it may; every sample differs; every judge scores 0."""
    letters = _greedy.letters  # type: ignore[attr-defined]
    n = body.get("n") or 1
    limit = body.get("max_tokens") or d.max_output_tokens
    if d.name == "judge":
        texts = ["0"]
    else:
        texts = [_text(limit, next(letters)) for _ in range(n)]
    out = answer(*texts, model=d.name)
    out["usage"] = {"prompt_tokens": _prompt(body["messages"]), "completion_tokens": sum(_tokens(t) for t in texts)}
    return out


_greedy.letters = itertools.cycle("ABCDEFGHIJ")  # type: ignore[attr-defined]


def _services(tmp_path: Path) -> Services:
    folder = tmp_path / "policies"
    folder.mkdir()
    for name, spec in POLICIES.items():
        (folder / f"{name}.yaml").write_text(spec + "cache: {enabled: false}\n")
    raw = {
        "deployments": [{"name": n, "model": f"openai/{n}", "api_base": "http://upstream.invalid/v1", "tier": n,
                         "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}, "max_retries": 0,
                         "max_output_tokens": limit} for n, limit in LIMITS.items()],
        "default_policy": "best-of",
        "tenants": [{"name": "metered", "api_key_sha256": hash_key(KEY), "tokens_per_minute": 1_000_000}],
        "request_log": {"enabled": False},
    }
    svc = build_services(parse_config(raw, "gw.yaml"), policies_dir=folder)
    backend = FakeBackend(_greedy)
    svc.upstreams.backends = {name: backend for name in svc.upstreams.backends}
    return svc


@pytest.mark.parametrize("max_tokens", [None, 120])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_plan_never_settles_above_the_tokens_it_reserved(tmp_path: Path, policy: str,
                                                            max_tokens: int | None) -> None:
    svc = _services(tmp_path)
    settled: list[Settlement] = []
    settle = svc.auth.store.settle_admission

    async def spy(s: Settlement) -> None:
        settled.append(s)
        await settle(s)
    svc.auth.store.settle_admission = spy  # type: ignore[method-assign]
    request: dict[str, Any] = {"model": f"router/{policy}", "messages": [
        {"role": "system", "content": "You answer questions about astronomy, briefly and exactly."},
        {"role": "user", "content": "Which planet of the solar system is the largest? Explain why."}]}
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    out = asyncio.run(handle(svc, request, CallContext(authorization=f"Bearer {KEY}")))
    assert isinstance(out, Answer)
    assert "judge" in {c["deployment"] for c in out.evidence.get("calls", [])} or policy == "vote-cascade"
    if "cascade" in policy:
        assert out.plan.endswith(":escalated")
    [tokens] = [s.tokens for s in settled]
    [(key, _, change)] = tokens
    assert key == window_key("metered", None, "tpm")
    used = asyncio.run(svc.auth.store.window_usage(key))
    assert used > 0 and change <= 0, f"{policy} used {used} tokens, {change} more than it reserved"
