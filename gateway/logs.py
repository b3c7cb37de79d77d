"""Logging set-up: JSON lines (one object per record) or text, and the one line per request.

`configure(level, "json")` puts a `JsonFormatter` on the root handler: every record becomes
`{"time", "level", "logger", "message", ...fields}`, where the fields are whatever the caller passed
with `extra=` (a record's standard attributes are left out). Our own structured lines use that:
the per-request line (`switchyard.request`, `request_line`), upstream failures and retries
(`switchyard.upstream`), circuit transitions (`switchyard.circuit`), budget and rate refusals
(`switchyard.auth`), policy and router reloads (`switchyard.policy`, `switchyard.router`), each
with an `event` field. In text format the same fields follow the message as `key=value`.

A request line never holds an API key, and holds the prompt only for a tenant with
`log_prompts: true`; so does a line that may quote the request (an upstream's refusal of it), which
reads the tenant's setting from `prompts_logged`.

`switchyard serve` writes its per-request lines in batches (`BatchingHandler`,
`configure(flush_s=...)`): one write per `LOG_FLUSH_S` instead of one write system call per
request, which cost more than the line itself. Every other line (reloads, circuits, refusals,
warnings) is written at once, together with the request lines waiting before it; the waiting ones
are written within `LOG_FLUSH_S`, and at exit. When that handler is the only one the request line
would reach (`direct_handler`), the line is handed to it as fields and encoded once, without the
LogRecord that logging would build and the formatter take apart again.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextvars import ContextVar
from itertools import islice
from typing import IO, Any, Literal

import orjson

LogFormat = Literal["json", "text"]
# Whether the request being served may have its prompt in log lines (its tenant's `log_prompts`): set for
# each request by the pipeline and for each shadow job, read where a line may quote the request.
prompts_logged: ContextVar[bool] = ContextVar("switchyard_prompts_logged", default=False)
LOG_FLUSH_S = 0.2  # how long an INFO line may wait to be written with others
_FLUSH_BYTES = 1 << 16  # ...or until this much is waiting
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Every attribute a bare LogRecord has: anything else on a record came from `extra=`. Except litellm's mark
# on a record it has scrubbed of secrets (an `object()`), which its filter stamps on every record it sees,
# uvicorn's included: written out, every such line ended in "litellm_redacted": "<object object at 0x…>".
# And uvicorn's `color_message`, its message's template again with terminal colour codes, unformatted.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "litellm_redacted", "color_message"}


# A record's standard attributes come first in its __dict__ (set by LogRecord.__init__), then the
# `extra=` ones: so the search for the extras can start past the standard ones.
_FIRST_EXTRA = len(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in islice(record.__dict__.items(), _FIRST_EXTRA, None) if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values orjson cannot encode are written as their str()."""

    def __init__(self) -> None:
        super().__init__()
        self._second, self._stamp = -1, ""  # the formatted second, reused by every line within it

    def _utc(self, created: float) -> str:
        second, ms = divmod(int(created * 1000), 1000)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{ms:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields_of(record),
                         exception)

    def line(self, created: float, level: str, logger: str, message: str, fields: dict[str, Any],
             exception: str | None = None) -> str:
        """The line of a record with these attributes and `extra=` fields (`format`, `BatchingHandler.write`)."""
        out: dict[str, Any] = {"time": self._utc(created), "level": level, "logger": logger, "message": message}
        out.update(fields)
        if exception is not None:
            out["exception"] = exception
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with a structured record's fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields_of(record)
        if not extra:
            return line
        return line + " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items() if v is not None)


def _text(value: Any) -> str:
    if isinstance(value, str):  # quoted unless one plain word: a field's line break would start a line of its own
        return value if value and " " not in value and value.isprintable() else orjson.dumps(value).decode()
    if isinstance(value, float):  # every digit, as the JSON line has it: at 6 significant ones a policy_version
        return repr(value)         # line's `at` (epoch seconds) read 1.79585e+09, off by up to 5,000 s
    return orjson.dumps(value, default=str).decode() if isinstance(value, dict | list) else str(value)


BATCHED = frozenset({"switchyard.request"})  # the loggers with a line per request


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that joins the lines of the `batched` loggers (below WARNING) and writes them
    at most every `flush_s` (a daemon thread wakes to write what waits), or past 64 KiB; any other
    line is written at once, after those waiting, and so is everything on flush/close."""

    def __init__(self, stream: IO[str] | None = None, flush_s: float = LOG_FLUSH_S,
                 batched: frozenset[str] = BATCHED) -> None:
        super().__init__(stream)
        self.flush_s = flush_s
        self.batched = batched
        self._pending: list[str] = []
        self._size = 0
        self._stop = threading.Event()  # not `_closed`: logging.Handler.close sets that one
        self._flusher = threading.Thread(target=self._flush_every, name="switchyard.log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held (Handler.handle)
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or record.name not in self.batched or self._size >= _FLUSH_BYTES:
            self.flush()

    def write(self, logger: str, message: str, fields: dict[str, Any]) -> None:
        """An INFO line of `logger` with `fields`, as `emit` writes the record `logger.info(message,
        extra=fields)` would make, without making it (a LogRecord costs more than the line). Only for
        the handler `direct_handler` returns."""
        assert isinstance(self.formatter, JsonFormatter)
        line = self.formatter.line(time.time(), "INFO", logger, message, fields) + self.terminator
        with self.lock:  # type: ignore[union-attr]  # set by createLock() in Handler.__init__
            self._pending.append(line)
            self._size += len(line)
            if logger not in self.batched or self._size >= _FLUSH_BYTES:
                self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # set by createLock() in Handler.__init__
            if self._pending:
                text, self._pending, self._size = "".join(self._pending), [], 0
                try:
                    self.stream.write(text)
                except Exception:
                    return  # like StreamHandler: a log that cannot be written must not fail the request
            super().flush()

    def _flush_every(self) -> None:
        while not self._stop.wait(self.flush_s):
            if self._pending:
                self.flush()

    def close(self) -> None:
        if not self._stop.is_set():  # closed once (configure replacing it, then logging's own shutdown)
            self._stop.set()
            try:
                self.flush()
            except (OSError, ValueError):  # the stream is gone already: nothing left to write to
                pass
        super().close()


def direct_handler(logger: logging.Logger) -> BatchingHandler | None:
    """The handler that `logger`'s INFO records reach, when it is the only one, takes lines without a
    LogRecord (a `BatchingHandler` writing JSON) and would pass every record (no filters, here or on
    `logger`); else None, and the line goes through `logging` as usual (a test's capture handler,
    text format, a filter). Checked per line: a handler added later is seen at once."""
    if logger.filters or not logger.isEnabledFor(logging.INFO):
        return None
    found: BatchingHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or type(handler) is not BatchingHandler:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if found is None or found.filters or found.level > logging.INFO or type(found.formatter) is not JsonFormatter:
        return None
    return found


def default_format(stream: IO[str] | None = None) -> LogFormat:
    """Text for a person at a terminal, JSON for anything else (a log shipper, a file, a container)."""
    stream = stream or sys.stderr
    return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"


def configure(level: str, fmt: LogFormat | None = None, stream: IO[str] | None = None,
              flush_s: float | None = None) -> None:
    """The root logger's one handler, in `fmt` (default: `default_format`), at `level`; with `flush_s`,
    lines are written in batches (`BatchingHandler`), else each as it comes."""
    target = stream or sys.stderr
    handler = BatchingHandler(target, flush_s) if flush_s else logging.StreamHandler(target)
    handler.setFormatter(JsonFormatter() if (fmt or default_format(stream)) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, BatchingHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Every LogRecord otherwise looks up its thread, process and multiprocessing names: neither
    # format writes them, and the request line makes a record per request.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


ENV_LOG_PROMPTS = "SWITCHYARD_LOG_PROMPTS"
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm")


def quiet_litellm_loggers() -> None:
    """Prompts and completions are user data: kept out of the log whatever the gateway's level. Here, not
    beside the litellm backend: every command sets its logging up, and importing that backend's HTTP clients
    cost the quick ones (`route`, `policy check`) half a second."""
    if os.environ.get(ENV_LOG_PROMPTS) == "1":
        return
    for name in LITELLM_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
