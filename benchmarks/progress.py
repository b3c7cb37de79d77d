"""What a long benchmark is doing, for the person waiting on it: a line per phase on stderr (stdout
keeps the report), and a missing input refused in one line rather than argparse's usage block."""

from __future__ import annotations

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
