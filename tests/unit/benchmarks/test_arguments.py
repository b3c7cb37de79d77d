"""A benchmark given a count or a duration it cannot run with stops at once with a usage error
naming the option, before it starts anything: not a traceback after starting Redis and the
gateway, nor a report of zero requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.fault_soak.__main__ import main as fault_soak
from benchmarks.fuzz import main as fuzz
from benchmarks.rate_limits.__main__ import main as rate_limits
from benchmarks.test_time_compute import main as time_compute

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "ttc_small.jsonl"
QUICK = ["--data", str(FIXTURE), "--quick"]


@pytest.mark.parametrize(("main", "argv", "option"), [
    pytest.param(time_compute, [*QUICK, "--fit-rows", "0"], "--fit-rows", id="test_time_compute-fit-rows-0"),
    pytest.param(time_compute, [*QUICK, "--fit-rows", "-3"], "--fit-rows", id="test_time_compute-fit-rows-neg"),
    pytest.param(rate_limits, ["--checks", "0"], "--checks", id="rate_limits-checks-0"),
    pytest.param(rate_limits, ["--checks", "-1"], "--checks", id="rate_limits-checks-neg"),
    pytest.param(fuzz, ["--examples", "0"], "--examples", id="fuzz-examples-0"),
    pytest.param(fault_soak, ["--requests", "0"], "--requests", id="fault_soak-requests-0"),
    pytest.param(fault_soak, ["--requests", "-5"], "--requests", id="fault_soak-requests-neg"),
    pytest.param(fault_soak, ["--concurrency", "0"], "--concurrency", id="fault_soak-concurrency-0"),
    pytest.param(fault_soak, ["--latency-requests", "0"], "--latency-requests", id="fault_soak-latency-requests-0"),
    pytest.param(fault_soak, ["--outage-s", "-1"], "--outage-s", id="fault_soak-outage-neg"),
    pytest.param(fault_soak, ["--outage-s", "nan"], "--outage-s", id="fault_soak-outage-nan"),
])
def test_a_count_below_one_is_a_usage_error_naming_the_option(
        main: Callable[[list[str]], int], argv: list[str], option: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert option in error and "error:" in error
    assert not (tmp_path / "out").exists()
