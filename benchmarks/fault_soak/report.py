"""The soak's markdown report: failures, billing, latency, memory, logs per fault class."""

from __future__ import annotations

from .load import Run, percentile
from .soak import FAULTS, SLOW_TAIL, Phase, SoakReport


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _latency_row(phase: Phase, policy: str | None = None) -> tuple[float, float]:
    values = phase.run.latencies(policy)
    return percentile(values, 0.5), percentile(values, 0.99)


def _rate(run: Run) -> str:
    return f"{len(run.outcomes) / run.wall_s:.0f}" if run.wall_s else "?"


def broken(r: SoakReport) -> list[str]:
    """What the soak holds every phase to and this run missed: a request the client saw fail, or
    the calls served and billed not equal. Empty when the run passed."""
    out = []
    for phase in (r.baseline, r.faulted, r.calm, r.troubled, r.unhedged, r.hedged):
        if failed := sum(phase.run.failures().values()):
            out.append(f"{phase.name}: {failed} of {len(phase.run.outcomes)} requests failed")
        if not phase.billing.exact:
            out.append(f"{phase.name}: served {phase.billing.served}, billed {phase.billing.billed}")
    return out


def render(r: SoakReport, command: str) -> str:
    s = r.settings
    out = [
        "# Fault soak",
        "",
        f"Command: `{command}` ({r.seconds:.0f} s on this machine). The gateway (one process), its Redis and the",
        "simulated models run locally; the client sends a fixed mix (half streamed) of three policies: `soak-single`",
        "(the faulted deployment `primary`, healthy fallback `backup`), `soak-best-of` (samples from primary, backup,",
        "primary) and `soak-cascade` (primary, escalating to `large` on low logprob confidence), at concurrency",
        f"{s.concurrency}. Faults on `primary` ({sum(f['rate'] for f in FAULTS):.0%} of its calls): "
        + ", ".join(f"{f['kind']} {f['rate']:.0%}" for f in FAULTS) + ".",
        f"Redis is killed (SIGKILL, by PID) after half of the faulted run's requests and restarted "
        f"{r.outage.get('down_s', float('nan')):.1f} s later.",
        "",
        "## Client-visible failures",
        "",
        "| phase | requests | requests/s | failed | by policy, streamed?, what the client saw |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for phase in (r.baseline, r.faulted, r.calm, r.troubled, r.unhedged, r.hedged):
        fails = phase.run.failures()
        detail = "; ".join(f"{p} {'stream' if st else 'whole'}: {d} x{n}" for (p, st, d), n in fails.most_common())
        rate = len(phase.run.outcomes) / phase.run.wall_s if phase.run.wall_s else float("nan")
        out.append(f"| {phase.name} | {len(phase.run.outcomes)} | {rate:.0f} | {sum(fails.values())} | "
                   f"{detail or '-'} |")
    out += ["", "## Every upstream call billed exactly once", "",
            "Calls the simulator served (answers delivered, streams that sent a first chunk) against calls the",
            "spend ledger billed, per deployment, read back from Redis after the run.", "",
            "| phase | served (simulator) | billed (ledger) | equal | faults injected | abandoned by the gateway |",
            "| --- | --- | --- | --- | --- | --- |"]
    for phase in (r.baseline, r.faulted, r.calm, r.troubled, r.unhedged, r.hedged):
        b = phase.billing
        out.append(f"| {phase.name} | {b.served} | {b.billed} | {'yes' if b.exact else '**no**'} | "
                   f"{b.faults or '-'} | {b.abandoned or '-'} |")
    calm, troubled = r.calm.run, r.troubled.run
    out += ["", "## Added latency under faults", "",
            f"Measured where it means something: the same {len(calm.outcomes)} requests (the same mix) sent "
            f"at concurrency {s.latency_concurrency}, fault-free and then with the faults above (no Redis "
            f"outage), back to back; latency of successful requests to the last byte. At this concurrency "
            f"the gateway keeps up ({_rate(calm)} and {_rate(troubled)} requests/s); at concurrency "
            f"{s.concurrency} it is saturated on this machine ({_rate(r.baseline.run)} requests/s) and "
            "latency there is queueing, so those runs count losses and bills only.", "",
            "| policy | fault-free p50 / p99 ms | faulted p50 / p99 ms | added p50 / p99 ms |",
            "| --- | --- | --- | --- |"]
    for policy in (None, "soak-single", "soak-best-of", "soak-cascade"):
        b50, b99 = _latency_row(r.calm, policy)
        f50, f99 = _latency_row(r.troubled, policy)
        out.append(f"| {policy or 'all'} | {_ms(b50)} / {_ms(b99)} | {_ms(f50)} / {_ms(f99)} | "
                   f"{_ms(f50 - b50)} / {_ms(f99 - b99)} |")
    u50, u99 = _latency_row(r.unhedged)
    h50, h99 = _latency_row(r.hedged)
    out += ["", "## Hedging under a slow tail", "",
            f"Only fault: {SLOW_TAIL[0]['kind']} on {SLOW_TAIL[0]['rate']:.0%} of `primary`'s calls "
            f"(+{SLOW_TAIL[0]['delay_ms']} ms before the first token); `soak-hedged` is `soak-single` with "
            f"`hedge_after_ms: 150`; both arms at concurrency {s.hedge_concurrency}, where the gateway is not "
            "saturated, so the tail is the fault's and not queueing's.", "",
            "| arm | requests | p50 ms | p99 ms | calls billed |", "| --- | ---: | ---: | ---: | --- |",
            f"| unhedged | {len(r.unhedged.run.outcomes)} | {_ms(u50)} | {_ms(u99)} | {r.unhedged.billing.billed} |",
            f"| hedged | {len(r.hedged.run.outcomes)} | {_ms(h50)} | {_ms(h99)} | "
            f"{r.hedged.billing.billed} |",
            "", "## Gateway memory", "",
            f"Resident set after a {s.warmup_requests}-request warm-up: {r.rss_before_mb:.1f} MB; "
            f"after the faulted run: {r.rss_after_mb:.1f} MB ({(r.rss_after_mb / r.rss_before_mb - 1):+.1%}).", "",
            "## Gateway log lines per fault class (faulted run)", "",
            "| level, logger, event, error type | lines |", "| --- | ---: |"]
    out += [f"| {k} | {n} |" for k, n in sorted(r.faulted.log_lines.items(), key=lambda kv: -kv[1])]
    return "\n".join(out) + "\n"
