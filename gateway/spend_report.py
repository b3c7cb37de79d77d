"""`switchyard spend`: the durable ledger as a table or CSV, read straight from the gateway's Redis.

The rows are those `GET /v1/spend` returns for the admin key (`gateway.ledger.spend_table`), so the
two always agree. A gateway on the in-memory store keeps its ledger inside its own process: ask its
`/v1/spend` instead.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from gateway.ledger import Window, read_spend, spend_table
from gateway.state import RedisStore

METRIC_COLUMNS = ("requests", "calls", "cost_usd", "prompt_tokens", "completion_tokens", "counterfactual_usd",
                  "savings_usd", "predicted_quality_chosen", "predicted_quality_counterfactual")
_SHORT = {"predicted_quality_chosen": "q_chosen", "predicted_quality_counterfactual": "q_counterfactual"}


async def spend_rows(redis_url: str, window: Window, group_by: Sequence[str]) -> list[dict[str, Any]]:
    store = RedisStore(redis_url, timeout_s=5.0)
    try:
        return spend_table(await read_spend(store, window), group_by)
    finally:
        await store.close()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}" if abs(value) < 1000 else f"{value:.2f}"
    return str(value)


def plain_decimal(value: float) -> str:
    """The float's shortest exact text (`repr`, which reads back as the same float) without an exponent:
    4.698e-05 is 0.00004698. `str` writes small costs in scientific notation, which a spreadsheet may
    read as text, or round on the way in."""
    return format(Decimal(repr(value)), "f")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return plain_decimal(value) if isinstance(value, float) else value


def as_csv(rows: Sequence[dict[str, Any]], group_by: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*group_by, *METRIC_COLUMNS])
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in (*group_by, *METRIC_COLUMNS)])
    return out.getvalue()


def as_text(rows: Sequence[dict[str, Any]], group_by: Sequence[str]) -> str:
    columns = (*group_by, *METRIC_COLUMNS)
    header = [_SHORT.get(c, c) for c in columns]
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    keys = len(group_by)

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i < keys else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths,
                                                                                                  strict=True)))
    return "\n".join([line(header), *(line(r) for r in cells)]) + "\n"
