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


_USD = frozenset({"cost_usd", "counterfactual_usd", "savings_usd"})
_NOTHING_USD = 1e-12  # below a picodollar (what records round costs to): a float sum's noise, shown as 0


def usd_text(value: float) -> str:
    """A dollar amount for people: from a cent up, 6 decimals (2 from $1000 up), which keep at least 4
    significant digits; below a cent, 4 significant digits without an exponent (0.00004698, not
    0.000047, whose 2 digits make a column of them visibly not add up)."""
    if abs(value) >= 1000:
        return f"{value:.2f}"
    if abs(value) >= 0.01 or abs(value) < _NOTHING_USD:
        return f"{0.0 if abs(value) < _NOTHING_USD else value:.6f}"
    return format(Decimal(f"{value:.3e}"), "f")


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return usd_text(value) if column in _USD else f"{value:.6f}"
    return str(value)


def _on_points(cells: list[str]) -> list[str]:
    """A column's decimals padded on the right so that their points line up once right-justified
    (0.021300 above 0.00004698); a cell without a point (a count, `-` for none) is left as it is."""
    decimals = max((len(c) - c.index(".") - 1 for c in cells if "." in c), default=0)
    return [c + " " * (decimals - (len(c) - c.index(".") - 1)) if "." in c else c for c in cells]


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
    keys = len(group_by)
    by_column = [[_cell(c, row[c]) for row in rows] for c in columns]
    by_column = [col if i < keys else _on_points(col) for i, col in enumerate(by_column)]
    cells = [[col[j] for col in by_column] for j in range(len(rows))]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i < keys else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths,
                                                                                                  strict=True)))
    return "\n".join([line(header), *(line(r) for r in cells)]) + "\n"
