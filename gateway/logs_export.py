"""`switchyard logs export`: logged requests that have feedback, as routing data for `switchyard train`.

Each exported line has the schema of the shared routing data:
`{"id", "split", "category", "prompt", "prompt_tokens", "models": {name: {"score", "cost_usd"}}}`.
`name` is the answering deployment's `router_profile` when it has one (the model the router knows it
as), else the deployment's name. `cost_usd` is what that deployment's own calls of the request cost
(`own_cost`), never the whole plan's: a cascade's small try is not part of the large model's cost.
The score is the request's most trusted label among those the export takes (`Trusted`): a client's
eval, then a client's user label, then the gateway's own judge label, then a client's "judge". The
gateway's shadow label is relative to the stronger deployment's answer, so that deployment is also
listed, with score 1.0 (its answer is the reference).

Which labels count is the operator's choice (`--origin`), because a client label says whatever its
tenant posted: by default only the gateway's own shadow labels (origin `gateway`), which no client
can write, so that no tenant can steer a router trained for everyone. `client` adds every tenant's
posted labels, `client:NAME` one tenant's (a team whose evaluations are trusted); `--tenant`
exports only those tenants' requests. A request with labels but none of a chosen origin is skipped
and counted.

Requests are read from the store (Redis: the `sy:requests` stream and each request's key) or from
the request log's JSONL sink (what an in-memory gateway leaves behind; a last line without its end, which a
running gateway is still writing, is left for the next export). Records without prompt
text (tenants without `log_prompts: true` keep only a hash) and records without feedback are
skipped and counted. `split` is fixed by a hash of the id, by the rule `switchyard train` applies to
files without one (about 80% train, 20% validation).
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.config import DeploymentConfig
from gateway.decimals import PICO, rounded
from gateway.errors import InputError
from gateway.feedback import label_key
from gateway.router.training.data import hash_split
from gateway.state import REQUESTS_STREAM, Store, request_key, since_id

Feedbacks = dict[str, dict[str, Any]]  # source → the stored feedback
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LONGEST_S = 100 * 365.25 * 86400
_PAGE = 500
_GATEWAY_JUDGE = label_key("gateway", "judge")
# Most trusted first: the label an export keeps. A client's "judge" is only what a tenant calls its label.
RANK = (label_key("client", "eval"), label_key("client", "user"), _GATEWAY_JUDGE, label_key("client", "judge"))


@dataclass(frozen=True, slots=True)
class Trusted:
    """Which labels and requests an export takes: the gateway's own labels (`gateway`), clients'
    labels of every tenant (`client_tenants` None) or of these tenants, requests of every tenant
    (`tenants` None) or of these."""

    gateway: bool = True
    client_tenants: frozenset[str] | None = frozenset()
    tenants: frozenset[str] | None = None

    @classmethod
    def parse(cls, origins: str, tenants: str | None = None) -> Trusted:
        """`--origin gateway,client:evals` and `--tenant a,b`; ValueError names what is not understood."""
        gateway, clients, everyone = False, set(), False
        for item in (x.strip() for x in origins.split(",")):
            if item == "gateway":
                gateway = True
            elif item == "client":
                everyone = True
            elif item.startswith("client:") and item[7:]:
                clients.add(item[7:])
            else:
                raise ValueError(f"{item!r} is not an origin (gateway, client or client:TENANT)")
        chosen = None if tenants is None else frozenset(t.strip() for t in tenants.split(",") if t.strip())
        if chosen is not None and not chosen:
            raise ValueError("--tenant names no tenant")
        return cls(gateway, None if everyone else frozenset(clients), chosen)

    def labels(self, tenant: str, feedback: Feedbacks) -> Feedbacks:
        """The labels of a request of `tenant` that this export takes."""
        clients = self.client_tenants is None or tenant in self.client_tenants
        return {k: v for k, v in feedback.items()
                if (self.gateway if k.startswith("gateway:") else clients and ":" not in k)}


def parse_duration(text: str) -> float:
    """'90s', '30m', '24h', '7d', '2w' or plain seconds → seconds."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d)")
    seconds = float(found.group(1)) * _UNIT_S[found.group(2)]
    if not seconds <= _LONGEST_S:  # enough digits make it inf, which no time or stream id can start from
        shown = text.strip() if len(text.strip()) <= 24 else text.strip()[:20] + "..."
        raise ValueError(f"not a duration: {shown!r} is over 100 years (use e.g. 30m, 24h, 7d)")
    return seconds


@dataclass(slots=True)
class Counts:
    exported: int = 0
    without_prompt: int = 0
    without_feedback: int = 0
    untrusted: int = 0  # labelled, but by no origin the export takes


def to_row(record: Mapping[str, Any], feedback: Feedbacks, names: Mapping[str, str]) -> dict[str, Any]:
    """One routing-data line from a record with its prompt and at least one (taken) label."""
    label = feedback[next(k for k in RANK if k in feedback)]
    deployment = record["deployment"]
    models: dict[str, dict[str, Any]] = {
        names.get(deployment, deployment): {"score": float(label["score"]), "cost_usd": own_cost(record)}}
    judged = feedback.get(_GATEWAY_JUDGE)
    against = judged.get("against") if judged else None
    if isinstance(against, str) and against != deployment:
        cost = judged.get("against_cost_usd") if judged else None  # labels stored before it have none
        reference: dict[str, Any] = {"score": 1.0}
        if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0:
            reference["cost_usd"] = rounded(float(cost), PICO)
        models.setdefault(names.get(against, against), reference)
    row_id = f"traffic/{record['tenant']}/{record['request_id']}"
    return {"id": row_id, "split": hash_split(row_id), "category": f"traffic/{record.get('category') or 'unknown'}",
            "prompt": record["prompt"], "prompt_tokens": prompt_length(record), "models": models}


def own_cost(record: Mapping[str, Any]) -> float | None:
    """What the answering deployment's own calls cost: the routing data's `cost_usd` is one model's
    cost on the prompt, not a plan's (a cascade's small try is not the large model's cost). A record
    without `cost_usd_by_deployment` called no other deployment, so its `cost_usd` is its own."""
    by_deployment = record.get("cost_usd_by_deployment")
    cost = by_deployment.get(record["deployment"]) if isinstance(by_deployment, Mapping) else record.get("cost_usd")
    # to 12 decimals, as records write costs: a sum's float noise (0.0006619999999999999) is no figure of ours
    return rounded(float(cost), PICO) if isinstance(cost, int | float) and not isinstance(cost, bool) else cost


def prompt_length(record: Mapping[str, Any]) -> int:
    """The routing data's `prompt_tokens` is one prompt's length: the gateway's count where it made one,
    else (a pinned request, or a record written before the count had its own field) the billed count."""
    return int(record.get("prompt_tokens_estimate") or record.get("prompt_tokens") or 0)


def model_names(deployments: Sequence[DeploymentConfig]) -> dict[str, str]:
    return {d.name: d.router_profile or d.name for d in deployments}


def write_rows(pairs: Iterator[tuple[dict[str, Any], Feedbacks]], names: Mapping[str, str], out: Path,
               trusted: Trusted = Trusted()) -> Counts:
    counts = Counts()
    rows: list[bytes] = []
    for record, every in pairs:
        tenant = str(record.get("tenant", ""))
        if trusted.tenants is not None and tenant not in trusted.tenants:
            continue
        feedback = trusted.labels(tenant, every)
        if not every:
            counts.without_feedback += 1
        elif not any(k in feedback for k in RANK):
            counts.untrusted += 1
        elif not record.get("prompt"):
            counts.without_prompt += 1
        else:
            rows.append(orjson.dumps(to_row(record, feedback, names)) + b"\n")
            counts.exported += 1
    # Opened only once every line is read: a malformed line stops the export with `out` as it was
    # (an earlier export kept whole), not emptied.
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        f.writelines(rows)
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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# A request record's fields that reach the routing data, where `switchyard train` refuses anything but these.
_RECORD_TEXTS = ("prompt", "category")
_RECORD_NUMBERS = ("prompt_tokens_estimate", "prompt_tokens", "cost_usd")


def _malformed(item: Mapping[str, Any]) -> str | None:
    """What a record or feedback line of the JSONL sink lacks that the export reads, or None."""
    for key in ("tenant", "request_id"):  # a line's key: missing, a list or an object cannot be one
        if item.get("kind") in ("request", "feedback") and not isinstance(item.get(key), str):
            return f"'{key}' must be a string"
    if item.get("kind") == "request":
        if not _number(item.get("time", 0)):
            return "a request record's 'time' must be unix seconds"
        if not isinstance(item.get("deployment"), str):
            return "a request record needs its 'deployment' (a string)"
        for key in _RECORD_TEXTS:
            if item.get(key) is not None and not isinstance(item[key], str):
                return f"a request record's '{key}' must be a string"
        for key in _RECORD_NUMBERS:
            if item.get(key) is not None and not _number(item[key]):
                return f"a request record's '{key}' must be a number"
        own = item.get("cost_usd_by_deployment")
        if own is not None and not (isinstance(own, dict) and all(_number(v) for v in own.values())):
            return "a request record's 'cost_usd_by_deployment' must map deployments to numbers"
    if item.get("kind") == "feedback":
        if not isinstance(item.get("source"), str):
            return "a feedback line needs its 'source' (user, judge or eval)"
        if not isinstance(item.get("origin", "client"), str):
            return "a feedback line's 'origin' must be a string (client or gateway)"
        if not (_number(item.get("score")) and 0 <= item["score"] <= 1):
            return "a feedback line's 'score' must be a number from 0 to 1"
    return None


def from_jsonl(path: Path, since_s: float) -> Iterator[tuple[dict[str, Any], Feedbacks]]:
    """Records and feedback from the JSONL sink; a later feedback line of a source replaces an earlier,
    and a later record of a request id replaces the earlier one with its labels."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    feedback: dict[tuple[str, str], Feedbacks] = {}
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.endswith(b"\n"):  # the gateway is writing it (every line it writes ends so)
                    break
                raise InputError(f"{path}: line {n} is not JSON: {exc}") from None
            if not isinstance(item, dict):
                raise InputError(f"{path}: line {n} is not a request-log record (a JSON object)")
            if (problem := _malformed(item)) is not None:
                raise InputError(f"{path}: line {n}: {problem}")
            key = (item.get("tenant", ""), item.get("request_id", ""))
            if item.get("kind") == "request":
                # A reused request id starts afresh, as the store starts it: the labels before this
                # line were the earlier request's, and would score this one's prompt.
                feedback.pop(key, None)
                if item.get("time", 0) >= since_s:
                    records[key] = item
            elif item.get("kind") == "feedback":  # a line from before origins were recorded: a client's
                feedback.setdefault(key, {})[label_key(item.get("origin", "client"), item["source"])] = item
    for key, record in records.items():
        yield record, feedback.get(key, {})
