"""Request records and feedback: what the gateway keeps of its own traffic, to learn from it.

Every completed chat request (whole or streamed; cache hits are not recorded, they repeat an answer
that was) leaves a compact record: request id, time, tenant, policy, entry, plan, deployment,
router version, the router's predicted quality per deployment, cost and tokens (and, for a plan that
called several deployments, each one's cost: `cost_usd_by_deployment`), the savings
(the predicted cost of the policy's dearest candidate, and the predicted quality of the chosen plan
and of that candidate: `gateway.ledger.savings`), and the prompt
the router judged: its text when the tenant has `log_prompts: true`, else only `prompt_hmac`, its
keyed digest (`gateway.keyed`: equal prompts match, a dictionary of guesses cannot be tested against
it without the secret). Such records cannot be exported as training data.

Records are written off the response path. `RequestLog.add` puts one small value on a bounded
queue (a few microseconds); a background writer drains it in batches (waiting `LINGER_S` after the
first, so that one round trip carries the records of the moment), builds the records and
writes each batch to the store in one round trip (a capped stream plus a key per request, with a
TTL: `gateway.state`) and to an optional `Sink` (a JSONL file: `request_log.path`). A full queue
drops records, counted and warned about, so that logging never slows or fails a request.

Feedback (`POST /v1/feedback`, shadow judges) is stored with the record it is about, one entry
per origin and source: a second write from the same source replaces the first (a user may change
their mind; an evaluation may be re-run). The origin is who wrote the label, and no client can
choose it: every label posted to `/v1/feedback` is a `client` label whatever `source` it names
(field `fb:<source>`), and only the gateway's own shadow evaluation writes `gateway` labels (field
`fb:gateway:<source>`). A tenant posting `source: judge` therefore labels its request as a client
would, beside the gateway's judge label, never in its place; `switchyard logs export` chooses
which origins it trusts (`gateway.logs_export`). The request id is the response's
`x-request-id`; records are found by (tenant, request id), so one tenant can neither see nor
label another's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from gateway.auth import LogThrottle, Tenant
from gateway.config import RequestLogSettings
from gateway.decimals import MICRO, MS, rounded
from gateway.errors import NotFound, StoreOutage
from gateway.executor.result import CallRecord
from gateway.handoff import Handoff
from gateway.keyed import Digests
from gateway.ledger import savings
from gateway.messages import routing_prompt
from gateway.policy import Decision
from gateway.signal import RouteSignal
from gateway.state import REQUESTS_STREAM, Store, StoreUnavailable, record_digest, request_key

log = logging.getLogger("switchyard.feedback")

Source = Literal["user", "judge", "eval"]
Origin = Literal["client", "gateway"]  # who wrote a label: a caller of /v1/feedback, or the gateway itself
_BATCH = 256
_PENDING_WAIT_S = 2.0
# A label posted to one replica for a request another answered a moment ago: that replica's writer stores the
# record within its linger and a round trip, so a record not found is looked for again for this long (an
# unknown id's 404 takes as long, and so does another tenant's: the two still cannot be told apart).
_ELSEWHERE_WAIT_S = 1.0
_ELSEWHERE_POLL_S = 0.05  # the first look again, each next one twice as late: a few round trips, not one per tick
# A store round trip costs about as much CPU for one record as for a batch of them; feedback on a
# record still queued waits for it (`wait_written`), so the wait is never seen as a missing record.
LINGER_S = 0.1


def label_key(origin: str, source: str) -> str:
    """How a label is named in its request's entry (after `fb:`): a client's by its source alone, as
    labels were named before origins were recorded, the gateway's own under `gateway:`."""
    return source if origin == "client" else f"{origin}:{source}"


def feedback_field(source: str, origin: Origin = "client") -> str:
    return f"fb:{label_key(origin, source)}"


@dataclass(slots=True)
class Completed:
    """What the request path hands over: references only. The record is built by the writer.

    Not frozen, though never changed: it is built on every request, and a frozen dataclass takes
    about three times as long to build."""

    request_id: str
    at: float
    tenant: Tenant
    entry: str
    policy: str | None
    plan: str
    deployment: str
    messages: Sequence[Mapping[str, Any]]
    signal: RouteSignal | None
    calls: tuple[CallRecord, ...]
    # The gateway's own count of the prompt (tiktoken, one call's), which routing priced plans on; None
    # when nothing counted it (a pinned request). Never what was billed: that is summed over `calls`.
    prompt_tokens_estimate: int | None
    router_version: str
    decision: Decision | None = None  # its candidates give the savings against the dearest one
    policy_version: str | None = None  # the version of `policy` that decided (None when pinned)
    # Set by the writer: the stored record's `record_digest`, which a shadow label names as the record it is
    # about (the request's id may be reused by a later request before the label is in).
    digest: str | None = None


def build_record(c: Completed, digests: Digests) -> dict[str, Any]:
    text = routing_prompt(c.messages)
    # cost_usd, prompt_tokens and completion_tokens are billed, summed over every call of the request
    # (its samples, judge, escalation, a hedge's losing leg), as the spend ledger sums them.
    cost, prompt, completion = 0.0, 0, 0
    own: dict[str, float] = {}  # deployment -> its calls' cost
    for x in c.calls:  # a loop, not three generator sums: one record per request
        cost += x.cost_usd
        prompt += x.usage.prompt_tokens
        completion += x.usage.completion_tokens
        own[x.deployment] = own.get(x.deployment, 0.0) + x.cost_usd
    record: dict[str, Any] = {
        "request_id": c.request_id, "time": rounded(c.at, MS), "tenant": c.tenant.name, "policy": c.policy,
        "entry": c.entry, "plan": c.plan, "deployment": c.deployment, "router_version": c.router_version,
        "policy_version": c.policy_version, "cost_usd": cost, "prompt_tokens": prompt,
        "completion_tokens": completion,
    }
    if len(own) > 1:  # a plan of several deployments (a cascade): what each one's calls cost, for
        # `switchyard logs export`; absent, every call was the answering deployment's (cost_usd is its own)
        record["cost_usd_by_deployment"] = own
    if c.prompt_tokens_estimate is not None:
        record["prompt_tokens_estimate"] = c.prompt_tokens_estimate
    counterfactual, chosen, dearest = savings(c.decision, cost)
    record["counterfactual_usd"] = counterfactual
    if chosen is not None and dearest is not None:
        record |= {"predicted_quality_chosen": rounded(chosen, MICRO),
                   "predicted_quality_counterfactual": rounded(dearest, MICRO)}
    if c.signal is not None:
        record |= {"category": c.signal.category, "difficulty": rounded(c.signal.difficulty, MICRO),
                   "predicted": {k: rounded(v, MICRO) for k, v in c.signal.quality.items()}}
    if c.tenant.log_prompts:
        record["prompt"] = text
    elif (digest := digests.prompt(text)) is not None:
        record["prompt_hmac"] = digest
    return record


@dataclass(frozen=True, slots=True)
class Feedback:
    """One label of one request, as stored (JSON) with its record."""

    request_id: str
    source: Source
    score: float
    thumbs: str | None = None
    detail: Mapping[str, Any] | None = None  # a shadow judge's method, reference deployment, reply
    origin: Origin = "client"  # only the gateway's own evaluation passes "gateway"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "source": self.source, "score": self.score,
                               "time": round(time.time(), 3)}
        if self.thumbs is not None:
            out["thumbs"] = self.thumbs
        if self.detail:
            out |= dict(self.detail)
        out["origin"] = self.origin  # last: nothing in `detail` can stand in for it
        return out


class Sink(Protocol):
    """Where records and feedback also go, as JSON lines. Called from a worker thread, never on the
    event loop, so it may block (a file, a socket to a log shipper)."""

    def write(self, lines: Sequence[bytes]) -> None: ...


class JsonlSink:
    """Appends lines to a file (`request_log.path`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, lines: Sequence[bytes]) -> None:
        # Made readable by its owner alone (0o600), whatever the umask: it holds prompt digests, and the prompts
        # of `log_prompts` tenants; a file the operator made beforehand keeps the mode they gave it.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as f:
            f.write(b"".join(line + b"\n" for line in lines))


class RequestLog:
    """The bounded queue, its writer task, and feedback lookups. `add` is the only hot-path call."""

    def __init__(self, store: Store, settings: RequestLogSettings, sink: Sink | None = None,
                 linger_s: float = LINGER_S, digests: Digests | None = None) -> None:
        self.store = store
        self.digests = digests or Digests()  # the app's, whose secret every replica shares
        self.linger_s = linger_s
        self.settings = settings
        self.sink: Sink | None = sink or (JsonlSink(settings.path) if settings.path else None)
        self._queue: Handoff[Completed | dict[str, Any]] = Handoff(settings.queue_size)
        self._throttle = LogThrottle()
        self.written = self.dropped = self.failed = 0
        self.feedback_counts: dict[tuple[str, str], int] = {}  # labels stored, by (source, origin): metrics
        self._writer: asyncio.Task[None] | None = None
        self._batch_written = asyncio.Event()  # set (and replaced) after every batch

    def add(self, done: Completed) -> bool:
        """Queue a completed request's record; never waits, drops (counted) when the queue is full. Whether
        it was queued."""
        if self._queue.put(done):
            return True
        self.dropped += 1
        self._warn("request log queue full (%d): record dropped, %d so far", self.settings.queue_size,
                   self.dropped)
        return False

    def _warn(self, message: str, *args: Any) -> None:
        if self._throttle.due():
            log.warning(message, *args)

    # -- the writer -------------------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._run(), name="switchyard.request_log")

    async def close(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (for at most `timeout_s`), then stop the writer."""
        if self._writer is not None and not self._writer.done():
            await self._queue.drained(timeout_s)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._queue.wait()
            if self.linger_s > 0:
                await asyncio.sleep(self.linger_s)
            batch = self._queue.take(_BATCH)
            try:
                await self._write(batch)
            except Exception:  # the writer must outlive any one bad batch
                log.exception("request log: a batch of %d could not be written", len(batch))
            finally:
                self._queue.done()
                self._batch_written.set()
                self._batch_written = asyncio.Event()

    def _pending(self, key: str) -> bool:
        """Whether the record of `key` is queued or being written (feedback is rare: a scan will do)."""
        return any(isinstance(item, Completed) and request_key(item.tenant.name, item.request_id) == key
                   for batch in (self._queue.taken, self._queue.items) for item in batch)

    async def _write(self, batch: list[Completed | dict[str, Any]]) -> None:
        records: list[tuple[str, bytes]] = []
        lines: list[bytes] = []
        for item in batch:
            if isinstance(item, Completed):
                raw = orjson.dumps(build_record(item, self.digests))
                item.digest = record_digest(raw)
                records.append((request_key(item.tenant.name, item.request_id), raw))
                if self.sink is not None:
                    lines.append(b'{"kind":"request",' + raw[1:])
            elif self.sink is not None:
                lines.append(orjson.dumps(item))
        if records:
            try:
                await self.store.append_records(REQUESTS_STREAM, records, self.settings.max_records,
                                                self.settings.ttl_s)
                self.written += len(records)
            except StoreUnavailable as exc:
                self.failed += len(records)
                self._warn("request log: %d records not stored (store unavailable): %s", len(records), exc)
        if self.sink is not None and lines:
            try:
                await asyncio.to_thread(self.sink.write, lines)
            except OSError as exc:
                self._warn("request log: %d lines not written to the sink: %s", len(lines), exc)

    # -- feedback ---------------------------------------------------------------------------------

    async def wait_written(self, key: str, timeout_s: float = _PENDING_WAIT_S) -> None:
        """A record still in this replica's queue is waited for (it lands within milliseconds)."""
        deadline = time.monotonic() + timeout_s
        while self._pending(key) and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_written.wait(), left)

    async def put_feedback(self, tenant: str, fb: Feedback, about: str | None = None) -> tuple[dict[str, Any], bool]:
        """Store `fb` with its request's record: (what is stored, whether it replaced an earlier one).
        NotFound when this tenant has no such request (another tenant's is simply not found). `about`:
        the `record_digest` of the very record `fb` is about (a shadow label); a record of a later request
        that reused the id is not found."""
        key = request_key(tenant, fb.request_id)
        await self.wait_written(key)
        stored = fb.as_dict()
        # The record of a request this replica answered is written by now; another replica's may still be
        # in that replica's queue (a load balancer sends the label anywhere), so it is looked for a while.
        # A shadow label is about this replica's own written record: not finding it is final.
        deadline, poll = time.monotonic() + (_ELSEWHERE_WAIT_S if about is None else 0.0), _ELSEWHERE_POLL_S
        while (replaced := await self._put(key, fb, stored, about)) is None and \
                (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(poll, left))
            poll *= 2
        if replaced is None:
            raise not_found()
        self.feedback_counts[fb.source, fb.origin] = self.feedback_counts.get((fb.source, fb.origin), 0) + 1
        if self.sink is not None:
            if not self._queue.put({"kind": "feedback", "tenant": tenant, **stored}):
                self.dropped += 1
        return stored, replaced

    async def _put(self, key: str, fb: Feedback, stored: dict[str, Any], about: str | None) -> bool | None:
        try:
            return await self.store.put_feedback(key, feedback_field(fb.source, fb.origin), orjson.dumps(stored),
                                                 about)
        except StoreUnavailable:
            # a tenant is not told what the store said (its host and port): that is the operator's to read
            raise StoreOutage("feedback cannot be stored right now; retry shortly",
                              headers={"retry-after": "2"}) from None

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                "queued": len(self._queue)}


def not_found() -> NotFound:
    """The same answer for an unknown id and for another tenant's: never reveal that it exists."""
    return NotFound("no such request for this API key (or it is older than the request log keeps)",
                    param="request_id", code="request_not_found")
