"""`switchyard logs export`: logged requests that have feedback, as routing data for `switchyard train`.

Each exported line has the schema of the shared routing data:
`{"id", "split", "category", "prompt", "prompt_tokens", "models": {name: {"score", "cost_usd"}}}`.
`name` is the answering deployment's `router_profile` when it has one (the model the router knows it
as), else the deployment's name. The score is the request's most trusted feedback (eval, then user,
then judge). A shadow judge's label is relative to the stronger deployment's answer, so that
deployment is also listed, with score 1.0 (its answer is the reference).

Requests are read from the store (Redis: the `sy:requests` stream and each request's key) or from
the request log's JSONL sink (what an in-memory gateway leaves behind). Records without prompt
text (tenants without `log_prompts: true` keep only a hash) and records without feedback are
skipped and counted. `split` is fixed by a hash of the id, by the rule `switchyard train` applies to
files without one (about 80% train, 20% validation).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.config import DeploymentConfig
from gateway.errors import InputError
from gateway.feedback import SOURCES
from gateway.router.training.data import hash_split
from gateway.state import REQUESTS_STREAM, Store, request_key, since_id

Feedbacks = dict[str, dict[str, Any]]  # source → the stored feedback
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PAGE = 500


def parse_duration(text: str) -> float:
    """'90s', '30m', '24h', '7d', '2w' or plain seconds → seconds."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d)")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


@dataclass(slots=True)
class Counts:
    exported: int = 0
    without_prompt: int = 0
    without_feedback: int = 0


def to_row(record: Mapping[str, Any], feedback: Feedbacks, names: Mapping[str, str]) -> dict[str, Any]:
    """One routing-data line from a record with its prompt and at least one feedback."""
    source = next(s for s in SOURCES if s in feedback)
    label = feedback[source]
    deployment = record["deployment"]
    models: dict[str, dict[str, Any]] = {
        names.get(deployment, deployment): {"score": float(label["score"]), "cost_usd": record.get("cost_usd")}}
    judged = feedback.get("judge")
    against = judged.get("against") if judged else None
    if isinstance(against, str) and against != deployment:
        models.setdefault(names.get(against, against), {"score": 1.0})
    row_id = f"traffic/{record['tenant']}/{record['request_id']}"
    return {"id": row_id, "split": hash_split(row_id), "category": f"traffic/{record.get('category') or 'unknown'}",
            "prompt": record["prompt"], "prompt_tokens": int(record.get("prompt_tokens") or 0), "models": models}


def model_names(deployments: Sequence[DeploymentConfig]) -> dict[str, str]:
    return {d.name: d.router_profile or d.name for d in deployments}


def write_rows(pairs: Iterator[tuple[dict[str, Any], Feedbacks]], names: Mapping[str, str], out: Path) -> Counts:
    counts = Counts()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        for record, feedback in pairs:
            if not feedback:
                counts.without_feedback += 1
            elif not record.get("prompt"):
                counts.without_prompt += 1
            else:
                f.write(orjson.dumps(to_row(record, feedback, names)) + b"\n")
                counts.exported += 1
    return counts


def _feedbacks(fields: Mapping[str, bytes]) -> Feedbacks:
    return {k.removeprefix("fb:"): orjson.loads(v) for k, v in fields.items() if k.startswith("fb:")}


async def from_store(store: Store, since_ms: int) -> AsyncIterator[tuple[dict[str, Any], Feedbacks]]:
    """Records from the stream (oldest first) with the feedback stored under each one's key. A request
    id logged twice (a client reusing x-request-id) is read once, with its latest record."""
    after = since_id(since_ms)
    seen: set[str] = set()
    while True:
        page = await store.records_after(REQUESTS_STREAM, after, _PAGE)
        if not page:
            return
        after = page[-1][0]
        records = [orjson.loads(raw) for _, raw in page]
        keys = [request_key(r["tenant"], r["request_id"]) for r in records]
        entries = await store.request_entries(keys)
        for key, record, fields in zip(keys, records, entries, strict=True):
            if fields is None or key in seen:
                if fields is None:
                    yield record, {}  # expired: its feedback went with it
                continue
            seen.add(key)
            yield orjson.loads(fields["record"]), _feedbacks(fields)


def from_jsonl(path: Path, since_s: float) -> Iterator[tuple[dict[str, Any], Feedbacks]]:
    """Records and feedback from the JSONL sink; a later feedback line of a source replaces an earlier."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    feedback: dict[tuple[str, str], Feedbacks] = {}
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{path}: line {n} is not JSON: {exc}") from None
            if not isinstance(item, dict):
                raise InputError(f"{path}: line {n} is not a request-log record (a JSON object)")
            key = (item.get("tenant", ""), item.get("request_id", ""))
            if item.get("kind") == "request" and item.get("time", 0) >= since_s:
                records[key] = item
            elif item.get("kind") == "feedback":
                feedback.setdefault(key, {})[item["source"]] = item
    for key, record in records.items():
        yield record, feedback.get(key, {})
