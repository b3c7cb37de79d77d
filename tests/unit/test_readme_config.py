"""The configuration example in the README is valid, and its prices resolve."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gateway.config import parse_config
from gateway.providers.pricing import prices_for

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_gateway_example_is_a_valid_config() -> None:
    block = re.search(r"```yaml\n# gateway.yaml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    config = parse_config(yaml.safe_load(block.group(1)), "README gateway.yaml")
    prices = prices_for(config.deployments)
    assert prices["small"].source == "config"
    assert prices["large"].source == "litellm" and prices["large"].input_per_token > 0
