"""Log formats, the per-request line (what it holds and what it never holds), circuit transition lines."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from gateway.auth import Tenant
from gateway.executor.result import CallRecord
from gateway.logs import BatchingHandler, JsonFormatter, TextFormatter, configure, default_format
from gateway.metrics import Metrics
from gateway.observer import Observer, Trail
from gateway.plans import Single
from gateway.providers.base import Usage
from gateway.providers.health import DeploymentHealth

PROMPT = "Summarise the quarterly report of the secret project."


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("switchyard.test")
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, args or ("world",), None, extra=extra)


def test_the_json_formatter_writes_one_object_with_the_extra_fields() -> None:
    line = JsonFormatter().format(_record(event="thing", deployment="small", n=3, when=object()))
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed["message"] == "hello world" and parsed["level"] == "INFO" and parsed["logger"] == "switchyard.test"
    assert parsed["event"] == "thing" and parsed["deployment"] == "small" and parsed["n"] == 3
    assert parsed["time"].endswith("Z") and "when" in parsed  # an object orjson cannot encode is str()-ed
    assert not {"args", "msg", "levelno", "pathname", "exc_info"} & set(parsed)


def test_litellms_mark_on_a_scrubbed_record_is_not_written_as_a_field() -> None:
    """litellm's filter stamps every record it sees (uvicorn's too) with an `object()`: each JSON line ended in
    "litellm_redacted": "<object object at 0x…>", and each text line in litellm_redacted=<object …>."""
    record = _record(event="thing")
    record.litellm_redacted = object()
    assert "litellm_redacted" not in json.loads(JsonFormatter().format(record))
    assert "litellm_redacted" not in TextFormatter().format(record)


def test_uvicorns_coloured_copy_of_its_message_is_not_written_as_a_field() -> None:
    """uvicorn logs with extra={"color_message": ...}, its message's template with terminal colour codes: every
    JSON line of uvicorn's ended in "color_message": "Uvicorn running on \\u001b[1m%s://%s:%d\\u001b[0m ..."."""
    record = _record("Uvicorn running on %s", "http://127.0.0.1:8080",
                     color_message="Uvicorn running on \x1b[1m%s\x1b[0m")
    assert "color_message" not in json.loads(JsonFormatter().format(record))
    assert TextFormatter().format(record).endswith("Uvicorn running on http://127.0.0.1:8080")


def test_the_json_formatter_keeps_the_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_the_text_formatter_appends_fields_as_key_value() -> None:
    line = TextFormatter().format(_record(event="circuit", deployment="small", reason="two words", gone=None))
    assert line.endswith("hello world event=circuit deployment=small reason=\"two words\"")


def test_a_text_field_never_breaks_its_line() -> None:
    """A field with a line break (a `log_prompts` tenant's prompt) was written as it came, so its caller could
    write lines of its own into the log: `prompt=hi` then a forged `... WARNING switchyard.auth: ...` line."""
    line = TextFormatter().format(_record(event="request", prompt="hi\n2026-11-26 13:40:02 WARNING switchyard.auth:",
                                          tab="a\tb"))
    assert "\n" not in line and line.endswith('prompt="hi\\n2026-11-26 13:40:02 WARNING switchyard.auth:" tab="a\\tb"')


def test_a_text_field_keeps_every_digit_of_a_number() -> None:
    """Floats were written with 6 significant digits: a `policy_version` line's `at` (epoch seconds) read
    at=1.79585e+09, thousands of seconds from when the version came into force, and a cost lost its tail."""
    line = TextFormatter().format(_record(event="policy_version", at=1795847395.026, cost_usd=0.0000258123,
                                          wait_s=0.5))
    assert line.endswith("at=1795847395.026 cost_usd=2.58123e-05 wait_s=0.5")
    assert float(line.split("at=")[1].split()[0]) == 1795847395.026


def test_the_default_format_is_text_at_a_terminal_and_json_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert default_format(Tty()) == "text"
    assert default_format(io.StringIO()) == "json"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    looked_up = logging.logThreads, logging.logProcesses, logging.logMultiprocessing
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    yield stream
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing = looked_up
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(x) for x in stream.getvalue().splitlines()]


def _finish(tenant: Tenant, status: int = 200, code: str | None = None) -> None:
    observer = Observer(Metrics(otlp=False), {"small": "small"})
    trail = Trail("req_1", time.perf_counter(), tenant=tenant, policy="balanced", plan=Single("small"),
                  plan_label="single:small", deployment="small", cache="miss",
                  messages=[{"role": "user", "content": PROMPT}])
    observer.billed(trail, (CallRecord("small", Usage(12, 30), 0.000042, 0.01),))
    trail.upstream_s = 0.01
    observer.finish(trail, status, code)
    observer.finish(trail, status, code)  # a second call (a stream settled twice) writes nothing


def test_the_request_line_holds_the_account_and_no_prompt_by_default(captured: io.StringIO) -> None:
    _finish(Tenant("acme"))
    (line,) = _lines(captured)
    assert line["logger"] == "switchyard.request" and line["event"] == "request"
    assert (line["tenant"], line["policy"], line["plan"], line["deployment"]) == ("acme", "balanced", "single:small",
                                                                                   "small")
    assert (line["input_tokens"], line["output_tokens"], line["cost_usd"]) == (12, 30, 0.000042)
    assert line["upstream_ms"] == 10.0 and line["overhead_ms"] <= line["duration_ms"]
    assert "prompt" not in line and PROMPT not in captured.getvalue()


def test_the_request_line_holds_the_prompt_for_a_tenant_with_log_prompts(captured: io.StringIO) -> None:
    _finish(Tenant("acme", log_prompts=True))
    assert _lines(captured)[0]["prompt"] == PROMPT


def test_a_failed_request_line_has_its_status_and_error_code(captured: io.StringIO) -> None:
    _finish(Tenant("acme"), 429, "budget_exceeded")
    line = _lines(captured)[0]
    assert (line["status"], line["error_code"]) == (429, "budget_exceeded")


def test_each_circuit_transition_is_one_structured_line(caplog: pytest.LogCaptureFixture) -> None:
    health = DeploymentHealth(failure_threshold=2, cooldown_s=10, name="small")
    with caplog.at_level(logging.INFO, logger="switchyard.circuit"):
        health.record_failure(0.0)
        health.record_failure(1.0)                      # closed → open
        health.record_failure(1.5)                      # still open: no new line
        assert health.admit(20.0) == "trial"             # open → half-open
        health.record_failure(20.1, trial=True)         # half-open → open
        assert health.admit(40.0) == "trial"
        health.record_success(0.1)                      # half-open → closed
    moves = [(r.state, r.was) for r in caplog.records]  # type: ignore[attr-defined]
    assert moves == [("open", "closed"), ("half_open", "open"), ("open", "half_open"), ("half_open", "open"),
                     ("closed", "half_open")]
    assert all(r.deployment == "small" and r.event == "circuit" for r in caplog.records)  # type: ignore[attr-defined]


def _batching(stream: io.StringIO, flush_s: float) -> Iterator[logging.Logger]:
    logger = logging.getLogger("switchyard.test.batching")
    handler = BatchingHandler(stream, flush_s, batched=frozenset({logger.name}))
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_batched_lines_are_written_together_within_the_flush_interval() -> None:
    stream = io.StringIO()
    for logger in _batching(stream, flush_s=0.05):
        logger.info("one")
        logger.info("two")
        assert stream.getvalue() == ""  # waiting to be written with others, not one write each
        deadline = time.monotonic() + 5
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [json.loads(x)["message"] for x in stream.getvalue().splitlines()] == ["one", "two"]


def test_a_warning_is_written_at_once_after_the_lines_waiting_before_it() -> None:
    stream = io.StringIO()
    for logger in _batching(stream, flush_s=60):
        logger.info("before")
        logger.warning("trouble")
        assert [json.loads(x)["message"] for x in stream.getvalue().splitlines()] == ["before", "trouble"]


def test_closing_the_batching_handler_writes_what_waits() -> None:
    stream = io.StringIO()
    for logger in _batching(stream, flush_s=60):
        logger.info("last words")
    assert json.loads(stream.getvalue())["message"] == "last words"


def test_a_line_of_a_logger_without_a_line_per_request_is_written_at_once() -> None:
    stream = io.StringIO()
    for logger in _batching(stream, flush_s=60):
        logger.info("per request")
        logging.getLogger("switchyard.test.batching.reload").info("reloaded")  # propagates to the handler
        assert [json.loads(x)["message"] for x in stream.getvalue().splitlines()] == ["per request", "reloaded"]


def test_a_batching_handler_may_be_closed_twice() -> None:
    handler = BatchingHandler(io.StringIO(), 60)
    handler.close()  # when configure() replaces it
    handler.close()  # and again in logging's shutdown at exit


def test_configured_records_skip_the_thread_and_process_names_no_format_writes(captured: io.StringIO) -> None:
    record = logging.getLogger("switchyard.request").makeRecord("switchyard.request", logging.INFO, "", 0, "x",
                                                                 None, None)
    assert (record.thread, record.threadName, record.process, record.processName) == (None, None, None, None)
    _finish(Tenant("acme"))
    (line,) = _lines(captured)
    assert line["tenant"] == "acme" and not {"thread", "threadName", "process", "processName"} & set(line)


@pytest.fixture
def batched() -> Iterator[io.StringIO]:
    """The handler `switchyard serve` installs: JSON lines written in batches."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure("info", "json", stream=stream, flush_s=60)
    yield stream
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_the_request_line_goes_straight_to_the_batching_handler_as_logging_would_write_it(
        batched: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    (handler,) = [h for h in root.handlers if isinstance(h, BatchingHandler)]
    assert len(root.handlers) > 1  # pytest's own capture handler: the line goes through logging
    _finish(Tenant("acme"), 429, "budget_exceeded")
    handler.flush()
    via_logging = _lines(batched)[0]

    monkeypatch.setattr(root, "handlers", [handler])  # as in `switchyard serve`: the one handler

    def no_record(*_: object, **__: object) -> logging.LogRecord:
        raise AssertionError("the request line built a LogRecord")

    monkeypatch.setattr(logging.Logger, "makeRecord", no_record)
    batched.truncate(0)
    batched.seek(0)
    _finish(Tenant("acme"), 429, "budget_exceeded")
    assert batched.getvalue() == ""  # batched like any request line
    handler.flush()
    direct = _lines(batched)[0]
    timing = {"time", "overhead_ms", "duration_ms"}
    assert list(direct) == list(via_logging)  # same fields, same order
    assert {k: v for k, v in direct.items() if k not in timing} == {k: v for k, v in via_logging.items()
                                                                      if k not in timing}
    assert direct["message"] == "POST /v1/chat/completions 429" and direct["level"] == "INFO"


def test_a_handler_added_beside_the_batching_one_still_gets_the_request_line(
        batched: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="switchyard.request"):
        _finish(Tenant("acme"))
    (record,) = [r for r in caplog.records if r.name == "switchyard.request"]
    assert record.tenant == "acme" and record.status == 200  # type: ignore[attr-defined]
    for h in logging.getLogger().handlers:
        h.flush()
    assert [line["tenant"] for line in _lines(batched)] == ["acme"]
