"""The configuration example in the README is valid, and its prices resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.providers.pricing import prices_for

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_gateway_example_is_a_valid_config() -> None:
    block = re.search(r"```yaml\n# gateway.yaml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    config = parse_config(yaml.safe_load(block.group(1)), "README gateway.yaml")
    prices = prices_for(config.deployments)
    assert prices["small"].source == "config"
    assert prices["large"].source == "litellm" and prices["large"].input_per_token > 0


@pytest.mark.parametrize("field", ["max_retries", "timeout_s", "expected_output_tokens"])
def test_a_deployments_yes_or_true_is_no_number(field: str) -> None:
    """`max_retries: true` was read as 1 retry, `timeout_s: yes` as a second."""
    row = {"name": "small", "model": "openai/m", "api_base": "http://127.0.0.1:9/v1", field: True}
    with pytest.raises(ConfigError, match=rf"{field}: Value error, got true, which is no value of this field"):
        parse_config({"deployments": [row]}, "gw.yaml")
    assert parse_config({"deployments": [{**row, field: 2}]}, "gw.yaml").deployments[0].model_dump()[field] == 2
