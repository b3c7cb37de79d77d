"""A cascade that cannot run is rejected when its policy file is loaded, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy.loader import parse_policy


def test_cascade_agreement_with_one_sample_is_rejected_at_load_time(tmp_path: Path) -> None:
    path = tmp_path / "one-sample.yaml"
    path.write_text("candidates:\n  - cascade: {steps: [small, large], confidence: agreement, samples: 1}\n")
    with pytest.raises(ConfigError) as err:
        parse_policy(path)
    message = str(err.value)
    assert "one-sample.yaml" in message and "cascade" in message and "samples" in message


def test_cascade_agreement_with_two_samples_loads(tmp_path: Path) -> None:
    path = tmp_path / "two-samples.yaml"
    path.write_text("candidates:\n  - cascade: {steps: [small, large], confidence: agreement, samples: 2}\n")
    assert parse_policy(path).candidates[0].cascade is not None
