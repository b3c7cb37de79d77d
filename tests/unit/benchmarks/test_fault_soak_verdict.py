"""The fault soak's command fails when what it measures fails: a request the client saw fail or a
call billed other than once makes it exit 1 naming the phase, as the fuzz exits 1 on a finding,
so a run that broke is not read as a pass from its exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.fault_soak import SoakReport, SoakSettings
from benchmarks.fault_soak import __main__ as command
from benchmarks.fault_soak.load import Ask, Outcome, Run
from benchmarks.fault_soak.soak import Billing, Phase

ASK = Ask("soak-single", False, "What is 2 + 2?")


def _phase(name: str, ok: bool = True, billed: int = 3) -> Phase:
    run = Run([Outcome(ASK, True, 0.1), Outcome(ASK, ok, 0.2, "" if ok else "status 502: upstream_error")], 1.0)
    return Phase(name, run, Billing({"primary": 3}, {"primary": billed}, {}, {}))


def _report(faulted: Phase) -> SoakReport:
    return SoakReport(SoakSettings(requests=2), _phase("baseline"), faulted, _phase("slow tail, unhedged"),
                      _phase("slow tail, hedged"), _phase("latency, fault-free"), _phase("latency, faulted"),
                      100.0, 101.0, {"down_s": 10.0}, 5.0)


@pytest.mark.parametrize(("faulted", "code"), [
    (_phase("faulted"), 0),
    (_phase("faulted", ok=False), 1),
    (_phase("faulted", billed=2), 1),
])
def test_the_soak_exits_1_when_a_phase_failed_a_request_or_billed_inexactly(
        faulted: Phase, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    async def soak(_settings: SoakSettings) -> SoakReport:
        return _report(faulted)

    monkeypatch.setattr(command, "run_soak", soak)
    assert command.main(["--requests", "2", "--out", str(tmp_path / "soak.md")]) == code
    assert (tmp_path / "soak.md").exists()  # the report is written either way
    if code:
        assert "faulted" in capsys.readouterr().err
