"""`switchyard spend`: the table for people shows small costs with their significant digits, their decimal
points aligned; `--csv` writes every number as a plain decimal a spreadsheet reads exactly."""

from __future__ import annotations

import csv
import io
import re

import pytest

from gateway.spend_report import METRIC_COLUMNS, as_csv, as_text


@pytest.mark.parametrize(("value", "text"), [
    (4.698e-05, "0.00004698"), (1e-12, "0.000000000001"), (-3.5e-07, "-0.00000035"), (0.1, "0.1"),
    (12345.678, "12345.678"), (1e20, "100000000000000000000"), (0.0, "0.0"), (0.8619, "0.8619"),
])
def test_a_float_is_written_as_its_shortest_exact_decimal_without_an_exponent(value: float, text: str) -> None:
    from gateway.spend_report import plain_decimal

    assert plain_decimal(value) == text
    assert float(text) == value


def test_spend_csv_has_no_scientific_notation_and_reads_back_exactly() -> None:
    row = {"deployment": "small", "requests": 3, "calls": 3, "cost_usd": 4.698e-05, "prompt_tokens": 18,
           "completion_tokens": 180, "counterfactual_usd": 0.00024816, "savings_usd": 0.00020118,
           "predicted_quality_chosen": 0.8619, "predicted_quality_counterfactual": None}
    [read] = list(csv.DictReader(io.StringIO(as_csv([row], ["deployment"]))))
    assert read["cost_usd"] == "0.00004698" and read["predicted_quality_counterfactual"] == ""
    for column in METRIC_COLUMNS:
        if row[column] is not None:
            assert re.fullmatch(r"-?\d+(\.\d+)?", read[column]), read[column]
            assert float(read[column]) == row[column]


@pytest.mark.parametrize(("value", "text"), [
    (4.698e-05, "0.00004698"), (1.4e-06, "0.000001400"), (0.001, "0.001000"), (-3.5e-07, "-0.0000003500"),
    (0.0213, "0.021300"), (12.5, "12.500000"), (1234.5678, "1234.57"), (0.0, "0.000000"),
    (1e-19, "0.000000"),  # a float sum's noise (a saving of nothing), not a cost
])
def test_a_cost_for_people_keeps_four_significant_digits_below_a_cent(value: float, text: str) -> None:
    from gateway.spend_report import usd_text

    assert usd_text(value) == text


def _row(deployment: str, cost: float, counterfactual: float) -> dict[str, object]:
    return {"deployment": deployment, "requests": 3, "calls": 3, "cost_usd": cost, "prompt_tokens": 18,
            "completion_tokens": 180, "counterfactual_usd": counterfactual, "savings_usd": counterfactual - cost,
            "predicted_quality_chosen": 0.8619, "predicted_quality_counterfactual": None}


def test_the_spend_table_shows_small_costs_readably_in_aligned_columns() -> None:
    """Costs of a few micro-dollars, as cheap models bill them: each row within a rounding of its value
    (6 decimals made 1.4e-06 read 0.000001, and ten such rows not add up to 0.000014), and every column
    lined up on its decimal points under its header."""
    rows = [_row("tiny", 1.4e-06, 2.2e-06), _row("small", 4.698e-05, 0.00024816), _row("large", 0.0213, 1234.5678)]
    lines = as_text(rows, ["deployment"]).splitlines()
    assert len({len(line) for line in lines}) == 1  # every column padded to one width
    header = lines[0].split()
    for name in ("cost_usd", "counterfactual_usd", "savings_usd"):
        k = header.index(name)
        cells = [list(re.finditer(r"\S+", line))[k] for line in lines[1:]]
        for cell, row in zip(cells, rows, strict=True):
            assert float(cell.group()) == pytest.approx(row[name], rel=5e-4), (name, cell.group())
        assert len({c.start() + c.group().index(".") for c in cells}) == 1, [c.group() for c in cells]
        assert max(c.end() for c in cells) == re.search(rf"\b{name}\b", lines[0]).end()  # type: ignore[union-attr]
