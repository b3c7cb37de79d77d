"""Runs plans against deployments: single calls, best-of-n with selection, cascades."""

from gateway.executor.deadline import Deadline
from gateway.executor.result import Result
from gateway.executor.runners import RUNNERS, run
from gateway.executor.upstreams import CallRecord, Upstreams

__all__ = ["RUNNERS", "CallRecord", "Deadline", "Result", "Upstreams", "run"]
