"""A routing-data row from a logged request writes its costs as the records do: to 12 decimals, without
the float noise of a sum (0.0006619999999999999 for 0.000662)."""

from __future__ import annotations

from gateway.feedback import label_key
from gateway.logs_export import to_row


def test_an_exported_rows_costs_carry_no_float_noise() -> None:
    record = {"tenant": "acme", "request_id": "req_1", "deployment": "small", "prompt": "What is 2 + 2?",
              "prompt_tokens": 12, "cost_usd": 0.1 + 0.2, "category": "math"}
    judged = {"score": 1.0, "against": "large", "against_cost_usd": 0.0006619999999999999}
    row = to_row(record, {label_key("gateway", "judge"): judged}, {})
    assert row["models"]["small"]["cost_usd"] == 0.3
    assert row["models"]["large"]["cost_usd"] == 0.000662
