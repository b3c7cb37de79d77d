"""Schema-driven fuzzing of the running gateway: every operation in /openapi.json, generated cases.

    python -m benchmarks.fuzz                    # 300 cases per operation and mode → benchmarks/results/fuzz.md
    python -m benchmarks.fuzz --examples 50

Starts the simulated models and `switchyard serve` (a tenant key, an admin key for the /admin/
operations, the in-memory store) as real processes, loads the gateway's own /openapi.json with
schemathesis and sends, for each operation,
cases that follow the schema (positive) and cases that break it (negative), with and without the
key, half of the bodies naming a model the key may call. A finding is a 5xx, a traceback in a
response body, or a 2xx whose body does not match the documented response model. One 5xx is the
documented answer rather than a fault: 504 `upstream_timeout` for a case that set its own deadline
(`x-switchyard-timeout-ms`, often a fraction of a millisecond); those are counted apart. The same
`fuzz` runs in the test suite with a few cases per operation.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.progress import count, phase

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fuzz.md"
TENANT_KEY = "sk-fuzz-tenant"
ADMIN_KEY = "sk-fuzz-admin"  # sent instead of the tenant's to /admin/ operations
_TRACE_MARKERS = ("Traceback (most recent call last)", 'File "/')


@dataclass
class Finding:
    operation: str
    status: int
    what: str
    request: str


@dataclass
class FuzzResult:
    cases: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    own_deadline: int = 0  # 504s for a deadline the case set itself: the documented answer


def _said(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:300]}"


def _own_deadline(case: Any, response: Any) -> bool:
    """A 504 `upstream_timeout` to a request that set `x-switchyard-timeout-ms`: what it asked for."""
    if response.status_code != 504 or not any(h.lower() == "x-switchyard-timeout-ms" for h in case.headers or {}):
        return False
    try:
        return bool(response.json()["error"]["code"] == "upstream_timeout")
    except (ValueError, KeyError, TypeError):
        return False


def _problems(case: Any, response: Any) -> list[str]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.openapi.checks import JsonSchemaError
    from schemathesis.specs.openapi.checks import response_schema_conformance

    out = []
    text = response.text or ""
    if any(marker in text for marker in _TRACE_MARKERS):
        out.append("stack trace in the response body")
    checks = [not_a_server_error]
    if 200 <= response.status_code < 300:
        checks.append(response_schema_conformance)
    try:
        case.validate_response(response, checks=checks)
    except FailureGroup as group:  # several checks failed at once
        out += [_said(exc) for exc in group.exceptions]
    except (JsonSchemaError, AssertionError) as exc:
        out.append(_said(exc))
    return out


def fuzz(base_url: str, examples: int, key: str | None = TENANT_KEY, deterministic: bool = True,
         document: dict[str, Any] | None = None) -> FuzzResult:
    """Run `examples` cases per operation and generation mode against the gateway at `base_url`,
    as its /openapi.json describes it (or as `document` does)."""
    import schemathesis

    document = document or httpx.get(base_url + "/openapi.json", timeout=10).json()
    headers = {"authorization": f"Bearer {key}"} if key else {}
    listed = httpx.get(base_url + "/v1/models", headers=headers, timeout=10)
    models = [m["id"] for m in listed.json()["data"]] if listed.status_code == 200 else []
    result = FuzzResult()
    for loaded in schemathesis.openapi.from_dict(document).get_all_operations():
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            _fuzz_operation(loaded.ok(), mode, base_url, examples, key, deterministic, models, result)
    return result


def _fuzz_operation(operation: Any, mode: Any, base_url: str, examples: int, key: str | None,
                    deterministic: bool, models: list[str], result: FuzzResult) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    name = f"{operation.method.upper()} {operation.path}"
    if key and operation.path.startswith("/admin/"):
        key = ADMIN_KEY

    @settings(max_examples=examples, deadline=None, database=None, derandomize=deterministic,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        headers = dict(case.headers or {})
        if key and "authorization" not in {h.lower() for h in headers} and result.cases % 5:
            headers["authorization"] = f"Bearer {key}"  # one case in five goes without the key
        if models and isinstance(case.body, dict) and "model" in case.body and result.cases % 2:
            # half the bodies name a model that exists, so that they get past the lookup to the routing
            case.body = {**case.body, "model": models[result.cases % len(models)]}
        response = case.call(base_url=base_url, headers=headers)
        result.cases += 1
        result.by_operation[name] += 1
        result.statuses[response.status_code] += 1
        if _own_deadline(case, response):
            result.own_deadline += 1
            return
        for what in _problems(case, response):
            result.findings.append(Finding(name, response.status_code, what, case.as_curl_command()[:600]))

    try:
        run()
    except Unsatisfiable:  # nothing to break: an operation that takes no input has no negative cases
        pass


# -- the stack the benchmark runs against ---------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def gateway_config(sim_url: str) -> dict[str, Any]:
    from gateway.auth import hash_key

    dep = {"api_base": sim_url, "router_profile": "Meta-Llama-3.1-8B-Instruct"}
    return {
        "deployments": [
            {"name": "small", "model": "openai/sim-small", "tier": "small",
             "price": {"input_per_mtok": 0.18, "output_per_mtok": 0.18}, **dep},
            {"name": "large", "model": "openai/sim-large", "tier": "large",
             "price": {"input_per_mtok": 0.88, "output_per_mtok": 0.88},
             **dep, "router_profile": "Meta-Llama-3.1-70B-Instruct"},
        ],
        "tenants": [{"name": "fuzz", "api_key_sha256": hash_key(TENANT_KEY)}],
        "admin_api_key_sha256": hash_key(ADMIN_KEY),
    }


@contextmanager
def running_stack() -> Iterator[str]:
    """The simulated models and `switchyard serve`, each its own process; yields the gateway's URL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    sim_port, port = _free_port(), _free_port()
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="sy-fuzz-") as folder:
        config = Path(folder) / "gateway.yaml"
        config.write_text(yaml.safe_dump(gateway_config(f"http://127.0.0.1:{sim_port}/v1")))
        try:
            children.append(subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", "--port",
                                              str(sim_port)], env=env, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
            _wait(f"http://127.0.0.1:{sim_port}/sim/stats")
            children.append(subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
                                              "--port", str(port), "--log-level", "error"], env=env,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            _wait(f"http://127.0.0.1:{port}/healthz")
            yield f"http://127.0.0.1:{port}"
        finally:
            for child in children:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()


def report(result: FuzzResult, examples: int, seconds: float) -> str:
    lines = [
        "# Schema-driven fuzzing of the gateway",
        "",
        f"`python -m benchmarks.fuzz --examples {examples}`: schemathesis {_version()} against `switchyard serve`",
        "(simulated models, one tenant, an admin key, in-memory store), every operation of its /openapi.json,",
        "positive and negative cases, one in five without the key, half of the bodies naming a model the key",
        "may call.",
        "",
        f"- generated cases sent: **{result.cases}** in {seconds:.0f} s",
        f"- findings (5xx, stack trace in a body, 2xx not matching its response model): **{len(result.findings)}**",
        f"- 504 `upstream_timeout` to cases that set their own deadline (`x-switchyard-timeout-ms`), as documented: "
        f"{result.own_deadline}",
        "",
        "| operation | cases |",
        "| --- | ---: |",
        *(f"| `{op}` | {n} |" for op, n in sorted(result.by_operation.items())),
        "",
        "| status | responses |",
        "| --- | ---: |",
        *(f"| {status} | {n} |" for status, n in sorted(result.statuses.items())),
    ]
    if result.findings:
        lines += ["", "## Findings", ""]
        lines += [f"- `{f.operation}` → {f.status}: {f.what}\n  `{f.request}`" for f in result.findings[:50]]
    return "\n".join(lines) + "\n"


def _version() -> str:
    import schemathesis

    return str(schemathesis.SCHEMATHESIS_VERSION)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=count, default=300, help="cases per operation and mode (default 300)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="report file (default: benchmarks/results/fuzz.md)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    phase("starting the simulated models and the gateway")
    with running_stack() as url:
        phase(f"fuzzing every operation, {args.examples} cases per operation and mode")
        result = fuzz(url, args.examples)
    text = report(result, args.examples, time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 1 if result.findings else 0


if __name__ == "__main__":
    sys.exit(main())
