"""Logging set-up: JSON lines (one object per record) or text, and the one line per request.

`configure(level, "json")` puts a `JsonFormatter` on the root handler: every record becomes
`{"time", "level", "logger", "message", ...fields}`, where the fields are whatever the caller passed
with `extra=` (a record's standard attributes are left out). Our own structured lines use that:
the per-request line (`switchyard.request`, `request_line`), upstream failures and retries
(`switchyard.upstream`), circuit transitions (`switchyard.circuit`), budget and rate refusals
(`switchyard.auth`), policy and router reloads (`switchyard.policy`, `switchyard.router`), each
with an `event` field. In text format the same fields follow the message as `key=value`.

A request line never holds an API key, and holds the prompt only for a tenant with
`log_prompts: true`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any, Literal

import orjson

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Every attribute a bare LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values orjson cannot encode are written as their str()."""

    def __init__(self) -> None:
        super().__init__()
        self._second, self._stamp = -1, ""  # the formatted second, reused by every line within it

    def _utc(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(created % 1 * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self._utc(record.created), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage()}
        out.update(fields_of(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
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
    if isinstance(value, str):
        return value if value and " " not in value else orjson.dumps(value).decode()
    if isinstance(value, float):
        return f"{value:.6g}"
    return orjson.dumps(value, default=str).decode() if isinstance(value, dict | list) else str(value)


def default_format(stream: IO[str] | None = None) -> LogFormat:
    """Text for a person at a terminal, JSON for anything else (a log shipper, a file, a container)."""
    stream = stream or sys.stderr
    return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"


def configure(level: str, fmt: LogFormat | None = None, stream: IO[str] | None = None) -> None:
    """The root logger's one handler, in `fmt` (default: `default_format`), at `level`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if (fmt or default_format(stream)) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
