"""Runs plans against deployments: single calls, best-of-n with selection, cascades."""

from gateway.executor.deadline import Deadline
from gateway.executor.result import CallRecord, Result
from gateway.executor.runners import run
from gateway.executor.upstreams import Upstreams

__all__ = ["CallRecord", "Deadline", "Result", "Upstreams", "run"]
