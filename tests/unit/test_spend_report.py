"""`switchyard spend --csv`: every number as a plain decimal a spreadsheet reads exactly."""

from __future__ import annotations

import csv
import io
import re

import pytest

from gateway.spend_report import METRIC_COLUMNS, as_csv


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
