"""What a long benchmark is doing, for the person waiting on it: a line per phase on stderr (stdout
keeps the report), a missing input refused in one line rather than argparse's usage block, and
the argument types that refuse a count or a duration the benchmark cannot run with."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import NoReturn

_STARTED = time.monotonic()


def phase(what: str) -> None:
    """One line: the time since the benchmark started and what it starts doing now."""
    print(f"[{time.monotonic() - _STARTED:6.0f} s] {what}", file=sys.stderr, flush=True)


def missing(prog: str, what: str) -> NoReturn:
    """Stop with one line naming what is missing and how to point at it (exit 2, as a usage error)."""
    print(f"{prog}: {what}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def count(text: str) -> int:
    """An argparse type: a whole number of at least one. Zero or fewer requests, checks or cases
    is no measurement: refused as a usage error before anything starts, not met by a division
    by zero once Redis and the gateway are up, nor by a report of nothing."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def seconds(text: str) -> float:
    """An argparse type: a finite duration above zero, in seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds above 0")
    return value
