"""Selecting one answer among samples: `vote` (self-consistency) and `judge` (a judge deployment).

vote: the most frequent extracted answer wins; ties go to the answer whose first sample came
earliest (stable and explainable); samples with no extractable answer are grouped by their
normalised text (named in the evidence by its digest), and when nothing at all can be extracted
the first sample is returned and the evidence says so.
judge: the judge deployment is shown the question and the numbered candidates and names the best.
A judge that fails or answers nothing usable degrades to vote, and the evidence says why.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.executor.answers import extract_answer

DEFAULT_JUDGE_PROMPT = (
    "You are grading candidate answers to the same question. Pick the single best answer: the one "
    "most likely to be correct and complete. Reply with the candidate number only."
)


@dataclass(frozen=True, slots=True)
class Selection:
    index: int                 # which sample was chosen
    agreement: float           # share of samples that agree with the chosen answer
    evidence: dict[str, Any]


# How a sample that calls tools reads to a vote, a judge and a cascade's agreement: the calls (names and
# arguments, without their ids) as one line of canonical JSON, then any text it wrote. Read as its text alone,
# every tool-calling sample was empty: a vote among them took the first sample whatever the others called,
# and an agreement cascade escalated every tool call, samples agreeing or not.
TOOL_CALLS_MARK = "Tool calls: "


def tool_calls_text(message: dict[str, Any]) -> str:
    """The message's tool calls (or legacy function call) as `TOOL_CALLS_MARK` and canonical JSON, else ""."""
    listed = message.get("tool_calls")
    calls = [c.get("function") or c.get("custom") for c in listed if isinstance(c, dict)] \
        if isinstance(listed, list) else []
    found: list[dict[str, Any]] = [c for c in (*calls, message.get("function_call")) if isinstance(c, dict)]
    if not found:
        return ""
    raw = [{"name": str(call.get("name")), "arguments": str(call.get("arguments", call.get("input")))}
           for call in found]
    said = []
    for call in raw:
        try:  # `{"a": 1}` and `{"a":1}` are one call
            said.append({**call, "arguments": orjson.loads(call["arguments"])})
        except orjson.JSONDecodeError:
            said.append(call)
    try:
        return TOOL_CALLS_MARK + orjson.dumps(said, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:  # nested past what orjson writes: the calls as sent
        return TOOL_CALLS_MARK + orjson.dumps(raw).decode()


def answer_key(text: str) -> str | None:
    if text.startswith(TOOL_CALLS_MARK):
        # Samples agree when they make the same calls; named by a digest, as a text is below
        calls = text.split("\n", 1)[0]
        return f"tools:{hashlib.sha256(calls.encode()).hexdigest()[:12]}"
    key = extract_answer(text)
    if key is not None:
        return key
    normalised = " ".join(text.lower().split())
    # Named by a digest, not the text: the key is evidence, sent in a header and recorded on the
    # request's span whatever the tenant's `log_prompts` says, and a whole answer is no label.
    return f"text:{hashlib.sha256(normalised.encode()).hexdigest()[:12]}" if normalised else None


def vote(texts: Sequence[str]) -> Selection:
    keys = [answer_key(t) for t in texts]
    counted = Counter(k for k in keys if k is not None)
    if not counted:
        return Selection(0, 1 / max(1, len(texts)),
                         {"selector": "vote", "votes": {}, "note": "no answer could be extracted; first sample"})
    top = max(counted.values())
    winner = next(k for k in keys if k is not None and counted[k] == top)  # earliest of the tied
    evidence: dict[str, Any] = {"selector": "vote", "votes": dict(counted), "answers": keys, "winner": winner}
    if sum(1 for c in counted.values() if c == top) > 1:
        evidence["tie"] = "broken by the earliest sample"
    return Selection(keys.index(winner), top / len(texts), evidence)


def judge_messages(question: str, texts: Sequence[str], prompt: str | None) -> list[dict[str, str]]:
    listing = "\n\n".join(f"Candidate {i + 1}:\n{t}" for i, t in enumerate(texts))
    return [{"role": "system", "content": prompt or DEFAULT_JUDGE_PROMPT},
            {"role": "user", "content": f"Question:\n{question}\n\n{listing}\n\nBest candidate number:"}]


SCORE_PROMPT = "Rate how likely the answer is correct, from 0 to 10. Reply with the number."


def score_messages(question: str, answer: str) -> list[dict[str, str]]:
    """What a judge grading one answer (a cascade's confidence) is sent."""
    return [{"role": "system", "content": SCORE_PROMPT},
            {"role": "user", "content": f"Question:\n{question}\n\nAnswer:\n{answer}\n\nScore (0-10):"}]


def parse_judge_choice(reply: str, n: int) -> int | None:
    found = re.search(r"\d+", reply)
    if not found:
        return None
    choice = int(found.group()) - 1
    return choice if 0 <= choice < n else None
