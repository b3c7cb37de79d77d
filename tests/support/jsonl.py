"""Reading a JSONL file that a gateway may still be appending to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def whole_records(path: Path) -> list[dict[str, Any]]:
    """The file's records so far: a writer may be mid-line, and only a line it has ended is a record."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [orjson.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines() if line.strip()]
