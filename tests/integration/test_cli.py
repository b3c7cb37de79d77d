"""The `switchyard` command as a user runs it: help, demo (its printed examples work as printed), route,
policy check, and configuration errors that name the culprit."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.messages import count_messages
from gateway.router.model import DEFAULT_ARTIFACT
from tests.support.processes import ROOT, free_port
from tests.support.routers import MISMATCHES, copy_default, mismatched

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-m", "gateway.cli"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def test_help_explains_every_command() -> None:
    out = _run("--help").stdout
    for command in ("serve", "demo", "simulate", "route", "train", "router", "policy", "bench"):
        assert command in out


@pytest.mark.parametrize("command", [["route", "hi"], ["policy", "check", "routing_policies"], ["--help"]])
def test_quick_commands_import_neither_the_web_stack_nor_litellm(command: list[str]) -> None:
    """Setting logging up imported the litellm backend, and with it aiohttp and httpx: half a second of every
    `switchyard route`."""
    heavy = ("aiohttp", "httpx", "litellm", "fastapi", "starlette", "uvicorn", "gateway.providers.litellm_backend")
    probe = ("import runpy, sys\nsys.argv = ['switchyard', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('gateway.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             f"print('IMPORTED', sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env=ENV)
    assert "IMPORTED []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]


def _undocumented(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Every command without a description and every argument without help, by the words a user types."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if not child.description:
                    yield " ".join((*path, name))
                yield from _undocumented(child, (*path, name))
        elif action.help is None:
            yield " ".join((*path, action.option_strings[-1] if action.option_strings else action.dest))


def test_every_command_and_argument_says_what_it_is_in_its_help() -> None:
    assert list(_undocumented(build_parser())) == []


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with _running_demo("--port", str(free_port())) as started:
        yield started


@contextlib.contextmanager
def _running_demo(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`switchyard demo ARGS`, with what it printed up to "Press Ctrl-C" (or its exit)."""
    proc = subprocess.Popen([*CLI, "demo", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT, env=ENV)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("Press Ctrl-C") or (not line and proc.poll() is not None):
            break
    try:
        yield "".join(lines), proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _printed_command(text: str, starts: str) -> str:
    """The example command as printed, with its backslash-newline continuations joined."""
    block = text[text.index(starts):]
    command = ""
    for line in block.splitlines():
        command += line.strip() if not command else " " + line.strip()
        if not command.endswith("\\"):
            break
        command = command[:-1].rstrip()
    return command


def test_demo_prints_curl_and_python_examples_that_work_as_printed(demo: tuple[str, subprocess.Popen[str]]) -> None:
    text, _ = demo
    assert "Switchyard is up on" in text, text
    curl = _printed_command(text, "curl ")
    result = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
    assert "HTTP/1.1 200" in result.stdout and "x-switchyard-plan" in result.stdout
    python = _printed_command(text, "python -c")
    args = shlex.split(python)
    result = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    plan, cost = result.stdout.split()[:2]
    assert plan.startswith("single:") and float(cost) > 0


def test_route_explains_a_prompt() -> None:
    result = _run("route", "--json", "hi")
    explained = json.loads(result.stdout)
    assert (explained["policy"], explained["plan"]) == ("balanced", "single:small")
    assert [c["plan"] for c in explained["candidates"] if c["chosen"]] == ["single:small"]
    assert explained["signal"]["prompt_tokens_estimate"] == count_messages([{"role": "user", "content": "hi"}])
    readable = _run("route", "--policy", "quality-first", "Prove Fermat's little theorem.").stdout
    assert readable.startswith("policy quality-first → ")


@pytest.mark.parametrize("damage", MISMATCHES)
def test_route_refuses_an_artifact_whose_meta_and_arrays_disagree_in_one_line(tmp_path: Path, damage: str) -> None:
    """Checked as serve and promote check it: each of these loads and answers the smoke prompts."""
    router = copy_default(tmp_path / "my-router")
    assert _run("route", "--artifact", str(router), "hi").returncode == 0  # whole, it routes
    mismatched(router, damage)
    for args in (["hi"], ["--batch", str(ROOT / "tests/fixtures/router_small.jsonl"), "--out", str(tmp_path / "o")]):
        result = _run("route", "--artifact", str(router), *args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"switchyard route: {router}: "), line
        assert not (tmp_path / "o").exists()


def test_route_explains_with_the_router_its_config_serves(tmp_path: Path) -> None:
    """A gateway started with --config serves its router_artifact: route explains with that one, not the shipped
    one (a damaged router there is refused as serve refuses it), unless --artifact names another."""
    router = copy_default(tmp_path / "my-router")
    mismatched(router, "one model more than its arrays")
    config = tmp_path / "gateway.yaml"
    config.write_text("".join(f"  - {{name: {tier}, tier: {tier}, model: openai/x, api_base: 'http://127.0.0.1:9/v1', "
                              "price: {input_per_mtok: 1, output_per_mtok: 1}}\n" for tier in ("small", "large"))
                      .join(("deployments:\n", "")) + f"router_artifact: {router}\n")
    for args in (["hi"], ["--batch", str(ROOT / "tests/fixtures/router_small.jsonl"), "--out", str(tmp_path / "o")]):
        result = _run("route", "--config", str(config), *args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"switchyard route: {router}: "), line
    chosen = _run("route", "--config", str(config), "--artifact", str(DEFAULT_ARTIFACT), "--json", "hi")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["plan"] == "single:small"


def test_route_batch_scores_a_file(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    rows = [{"id": f"q{i}", "prompt": p, "models": {"Meta-Llama-3.1-8B-Instruct": {"score": 1.0},
                                                     "never-seen-model": {"score": 0.0}}}
            for i, p in enumerate(["hi", "Prove that sqrt(2) is irrational.", "What is 2 + 2?"])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    result = _run("route", "--batch", str(data), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["id"] for s in scored] == ["q0", "q1", "q2"]
    for s in scored:
        assert 0 <= s["difficulty"] <= 1
        # every model of the row, the unseen one at the mean ability (and the router's known ones)
        assert {"Meta-Llama-3.1-8B-Instruct", "never-seen-model"} <= set(s["predicted"])
        assert all(0 <= p <= 1 for p in s["predicted"].values())


def test_policy_check_passes_on_the_shipped_policies_and_names_a_bad_field(tmp_path: Path) -> None:
    assert _run("policy", "check", "routing_policies").returncode == 0
    (tmp_path / "oops.yaml").write_text("candidates:\n  - single: huge\n")
    bad = _run("policy", "check", str(tmp_path))
    assert bad.returncode == 1
    assert "oops.yaml: candidates[0].single 'huge' is not a deployment or tier" in bad.stderr


def test_policy_check_without_a_folder_checks_the_one_the_gateway_reads(tmp_path: Path) -> None:
    """It checked ./routing_policies whatever $SWITCHYARD_POLICIES_DIR named, the gateway's policy folder."""
    (tmp_path / "oops.yaml").write_text("candidates:\n  - single: huge\n")
    out = subprocess.run([*CLI, "policy", "check"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={**ENV, "SWITCHYARD_POLICIES_DIR": str(tmp_path)})
    assert out.returncode == 1 and "oops.yaml: candidates[0].single 'huge'" in out.stderr


def test_policy_check_fails_on_a_folder_without_policies(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("policies live elsewhere\n")
    out = _run("policy", "check", str(tmp_path))
    assert out.returncode == 1 and f"{tmp_path}: no policy files (*.yaml, *.yml) to check" in out.stderr


def test_serve_refuses_an_invalid_config_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("deployments:\n  - name: a\n    model: openai/x\n"
                      "    price: {input_per_mtok: cheap, output_per_mtok: 1}\n")
    result = _run("serve", "--config", str(config), "--port", str(free_port()))
    assert result.returncode == 2
    assert re.search(r"gateway.yaml: deployments\[0\].price.input_per_mtok: Input should be a valid number",
                     result.stderr), result.stderr


def test_serve_on_a_port_in_use_refuses_in_one_line_before_starting_up(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("".join(f"  - {{name: {tier}, tier: {tier}, model: openai/x, api_base: 'http://127.0.0.1:9/v1', "
                              "price: {input_per_mtok: 1, output_per_mtok: 1}}\n" for tier in ("small", "large"))
                      .join(("deployments:\n", "")))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            result = _run("serve", "--config", str(config), "--port", str(port), "--workers", workers)
            assert result.returncode == 1, result.stderr
            assert result.stderr.splitlines() == [  # nothing of a start-up: it was never begun
                f"switchyard serve: 127.0.0.1:{port} is in use; pick another with --port"], result.stderr


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_serve_and_demo_listen_on_an_ipv6_host_and_its_examples_work_as_printed() -> None:
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("demo", "--host", "::1", "--port", str(port))
        assert result.returncode == 1 and result.stderr.splitlines() == [
            f"switchyard demo: [::1]:{port} is in use; pick another with --port"], result.stderr
    with _running_demo("--host", "::1", "--port", str(port)) as (text, _):
        assert f"Switchyard is up on http://[::1]:{port}" in text, text
        curl = subprocess.run(shlex.split(_printed_command(text, "curl ")), capture_output=True, text=True,
                              timeout=30)
        assert "HTTP/1.1 200" in curl.stdout, curl.stdout + curl.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_a_configured_router_whose_meta_and_arrays_disagree_in_one_line(
        tmp_path: Path, workers: str) -> None:
    router = copy_default(tmp_path / "my-router")
    mismatched(router, "one model more than its arrays")  # it loads and answers the smoke prompts
    config = tmp_path / "gateway.yaml"
    config.write_text("".join(f"  - {{name: {tier}, tier: {tier}, model: openai/x, api_base: 'http://127.0.0.1:9/v1', "
                              "price: {input_per_mtok: 1, output_per_mtok: 1}}\n" for tier in ("small", "large"))
                      .join(("deployments:\n", "")) + f"router_artifact: {router}\n")
    result = _run("serve", "--config", str(config), "--port", str(free_port()), "--workers", workers,
                  "--log-level", "warning")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"switchyard serve: {router}: router.npz holds abilities (theta) of shape"), line


@pytest.mark.parametrize(("damage", "says"), [
    ("router.json not JSON", "not a loadable router: JSONDecodeError"),
    ("truncated router.npz", "not a loadable router: BadZipFile"),
    ("router.json without hash_spec", "not a loadable router: KeyError: 'hash_spec'"),
    ("router.json a list", "router.json: not a JSON object"),
    ("one model more than its arrays", "router.npz holds abilities (theta) of shape"),  # it wrote a router nobody loads
])
def test_train_refuses_a_damaged_or_inconsistent_base_in_one_line(tmp_path: Path, damage: str, says: str) -> None:
    base = copy_default(tmp_path / "base")
    meta = json.loads((base / "router.json").read_text())
    if damage == "router.json not JSON":
        (base / "router.json").write_text("{models: [")
    elif damage == "truncated router.npz":
        npz = (base / "router.npz").read_bytes()
        (base / "router.npz").write_bytes(npz[:len(npz) // 2])
    elif damage == "router.json without hash_spec":
        del meta["hash_spec"]
        (base / "router.json").write_text(json.dumps(meta))
    elif damage == "router.json a list":
        (base / "router.json").write_text("[1, 2]")
    else:
        mismatched(base, damage)
    out = tmp_path / "adapted"
    result = _run("train", "--data", str(ROOT / "tests/fixtures/router_small.jsonl"), "--base", str(base),
                  "--out", str(out), "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"switchyard train: --base refused: {base}") and says in line, line
    assert not out.exists()


_RECORD = {"kind": "request", "tenant": "a", "request_id": "bad", "time": 1, "deployment": "small", "prompt": "hi"}
_LABEL = {"kind": "feedback", "tenant": "a", "request_id": "bad", "source": "user", "score": 1}
# (a request-log line, what the error says of it): each was a traceback, or passed into the routing data
# that `switchyard train` then refused
MALFORMED_LOG_LINES = [
    ({**_RECORD, "tenant": ["a"]}, "'tenant' must be a string"),
    ({**_LABEL, "request_id": {"x": 1}}, "'request_id' must be a string"),
    ({k: v for k, v in _RECORD.items() if k != "request_id"}, "'request_id' must be a string"),
    ({k: v for k, v in _LABEL.items() if k != "tenant"}, "'tenant' must be a string"),
    ({**_RECORD, "deployment": ["small"]}, "a request record needs its 'deployment' (a string)"),
    ({k: v for k, v in _RECORD.items() if k != "deployment"}, "a request record needs its 'deployment'"),
    ({**_RECORD, "prompt_tokens_estimate": "many"}, "a request record's 'prompt_tokens_estimate' must be a number"),
    ({**_RECORD, "cost_usd": "abc"}, "a request record's 'cost_usd' must be a number"),
    ({**_RECORD, "cost_usd_by_deployment": {"small": "abc"}}, "'cost_usd_by_deployment' must map deployments to"),
    ({**_RECORD, "prompt": 12345}, "a request record's 'prompt' must be a string"),
    ({**_LABEL, "origin": ["client"]}, "a feedback line's 'origin' must be a string"),
]


@pytest.mark.parametrize(("line", "says"), MALFORMED_LOG_LINES, ids=[s for _, s in MALFORMED_LOG_LINES])
def test_logs_export_refuses_a_malformed_request_log_line_in_one_line_and_keeps_the_earlier_export(
        tmp_path: Path, line: dict[str, object], says: str) -> None:
    log = tmp_path / "requests.jsonl"
    fine = [{**_RECORD, "request_id": "ok"}, {**_LABEL, "request_id": "ok"}]
    log.write_text("".join(json.dumps(x) + "\n" for x in [*fine, line, _LABEL]))
    out = tmp_path / "traffic.jsonl"
    out.write_text('{"id": "an earlier export"}\n')
    result = _run("logs", "export", "--from-jsonl", str(log), "--out", str(out), "--origin", "gateway,client")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    [error] = result.stderr.splitlines()
    assert error.startswith(f"switchyard logs export: {log}: line 3: ") and says in error, error
    assert out.read_text() == '{"id": "an earlier export"}\n'


def test_logs_export_without_a_config_says_its_models_are_named_by_deployment(tmp_path: Path) -> None:
    """Without --config the rows name the model "small", not the deployment's router_profile, and nothing said
    so: a router trained on them learnt a model no deployment is scored as."""
    log = tmp_path / "requests.jsonl"
    log.write_text("".join(json.dumps(x) + "\n" for x in [{**_RECORD, "request_id": "ok"},
                                                          {**_LABEL, "request_id": "ok"}]))
    out = tmp_path / "traffic.jsonl"
    bare = _run("logs", "export", "--from-jsonl", str(log), "--out", str(out), "--origin", "client")
    assert bare.returncode == 0, bare.stderr
    assert list(json.loads(out.read_text())["models"]) == ["small"]
    assert "no --config: each model is named by its deployment, not by its router_profile" in bare.stdout
    config = tmp_path / "gw.yaml"
    config.write_text("deployments:\n  - {name: small, model: openai/x, api_base: 'http://127.0.0.1:9/v1', "
                      "router_profile: Meta-Llama-3.1-8B-Instruct, price: {input_per_mtok: 1, output_per_mtok: 1}}\n")
    named = _run("logs", "export", "--from-jsonl", str(log), "--out", str(out), "--origin", "client",
                 "--config", str(config))
    assert named.returncode == 0, named.stderr
    assert list(json.loads(out.read_text())["models"]) == ["Meta-Llama-3.1-8B-Instruct"]
    assert "no --config" not in named.stdout


def _bad_files(tmp: Path) -> dict[str, Path]:
    (tmp / "not-json.jsonl").write_text("not json\n")
    (tmp / "no-prompt.jsonl").write_text('{"id": 1, "text": "hi"}\n')
    (tmp / "not-a-router").mkdir()
    (tmp / "log.jsonl").write_text("[1, 2]\n")
    (tmp / "models.yaml").write_text("foo: 1\n")
    (tmp / "null-messages.jsonl").write_text('{"messages": [null]}\n' * 60)
    (tmp / "latin1-policies").mkdir()
    (tmp / "latin1-policies" / "cafe.yaml").write_bytes("# caf\u00e9\ncandidates: [{single: small}]\n".encode("cp1252"))
    (tmp / "empty.jsonl").write_text("")
    labelled = {"id": "r", "prompt": "q", "models": {"a": {"score": "high"}, "b": {"score": 1.0}}}
    (tmp / "score-text.jsonl").write_text(json.dumps(labelled) + "\n")
    (tmp / "score-out-of-range.jsonl").write_text(
        json.dumps({"id": "r", "prompt": "q", "models": {"a": {"score": 2.5}, "b": {"score": 1.0}}}) + "\n")
    (tmp / "cost-negative.jsonl").write_text(
        json.dumps({"id": "r", "prompt": "q", "models": {"a": {"score": 1, "cost_usd": -1}}}) + "\n")
    (tmp / "unlabelled.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"q {i}"}) + "\n"
                                                  for i in range(40)))
    (tmp / "deep.jsonl").write_text('{"id": "a", "prompt": "hi", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (tmp / "feedback-no-source.jsonl").write_text('{"kind": "feedback", "tenant": "t", "request_id": "r"}\n')
    (tmp / "time-text.jsonl").write_text('{"kind": "request", "tenant": "t", "request_id": "r", "time": "now"}\n')
    (tmp / "rows.jsonl").write_text('{"id": "a", "prompt": "hi"}\n')
    (tmp / "redis-typo.yaml").write_text("redis_url: redis//u:s3cret@host:6379\ndeployments:\n  - {name: small, model: "
                                         "openai/m, api_base: 'http://127.0.0.1:9/v1', tier: small, "
                                         "price: {input_per_mtok: 1, output_per_mtok: 1}}\n")
    (tmp / "redis-down.yaml").write_text("redis_url: redis://127.0.0.1:9/0\ndeployments:\n  - {name: small, model: "
                                         "openai/m, api_base: 'http://127.0.0.1:9/v1', tier: small, "
                                         "price: {input_per_mtok: 1, output_per_mtok: 1}}\n")
    (tmp / "broken-policies").mkdir()
    (tmp / "broken-policies" / "broken.yaml").write_text("candidates: [\n  - single: small\n")
    (tmp / "broken-policies.yaml").write_text(f"policies_dir: {tmp / 'broken-policies'}\ndeployments:\n"
                                              "  - {name: small, model: openai/m, api_base: 'http://127.0.0.1:9/v1', "
                                              "tier: small, price: {input_per_mtok: 1, output_per_mtok: 1}}\n")
    (tmp / "lone-surrogate.jsonl").write_text('{"id": "a", "prompt": "caf\\ud800", "models": {"m": {"score": 1}}}\n')
    (tmp / "cp1252.jsonl").write_bytes('{"id": "a", "prompt": "caf\u00e9"}\n'.encode("cp1252"))
    (tmp / "validation-only.jsonl").write_text('{"id": "a", "prompt": "hi", "split": "validation", '
                                               '"models": {"m": {"score": 1, "cost_usd": 0.1}}}\n')
    (tmp / "tokens-text.jsonl").write_text('{"id": "a", "prompt": "hi", "prompt_tokens": "many", '
                                           '"models": {"m": {"score": 1}}}\n')
    (tmp / "split-test.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"q {i}", "split": "test",
                                                             "models": {"m": {"score": 1}}}) + "\n" for i in range(5)))
    return {"missing": tmp / "missing.jsonl", **{p.stem: p for p in tmp.iterdir()}}


# (arguments, what the one error line must say); {name} is a file from _bad_files
BAD_INVOCATIONS = [
    ("policy calibrate balanced --traffic {missing}", "switchyard policy calibrate: [Errno 2] No such file"),
    ("policy calibrate balanced --traffic {null-messages}",
     "switchyard policy calibrate: {null-messages}: line 1 has neither a 'prompt' (a string) nor 'messages'"),
    ("route --batch {not-json} --out {missing}", "switchyard route: {not-json}: line 1 is not JSON"),
    ("route hello --artifact {not-a-router}", "switchyard route: {not-a-router}: not a loadable router"),
    ("train --data {no-prompt} --out {not-a-router}", "switchyard train: {no-prompt}: line 1 needs an 'id' and a"),
    ("train --data {missing} --out {not-a-router}", "switchyard train: [Errno 2] No such file"),
    ("logs export --out {missing} --from-jsonl {log}", "switchyard logs export: {log}: line 1 is not a request-log"),
    ("policy check {latin1-policies}", "cafe.yaml: not UTF-8 text (byte 5: invalid continuation byte)"),
    ("route --batch {cp1252} --out {missing}", "switchyard route: {cp1252}: line 1 is not UTF-8 text (byte 26"),
    ("train --data {cp1252} --out {missing}", "switchyard train: {cp1252}: line 1 is not UTF-8 text (byte 26"),
    ("route --batch {lone-surrogate} --out {missing}",
     "switchyard route: {lone-surrogate}: line 1: 'prompt' has an unpaired surrogate escape"),  # a traceback
    ("train --data {lone-surrogate} --out {missing}",
     "switchyard train: {lone-surrogate}: line 1: 'prompt' has an unpaired surrogate escape"),
    ("train --data {empty} --out {missing}", "switchyard train: {empty}: no rows to train on"),
    # said "[Errno 17] File exists" once the whole fit was done, a minute or an hour later
    ("train --data {rows} --out {rows}", "switchyard train: --out {rows} is a file; name a directory"),
    ("train --data {validation-only} --out {missing}", "switchyard train: {validation-only}: no rows to train on"),
    ("train --data {score-text} --out {missing}",
     "switchyard train: {score-text}: line 1: models.a.score must be a number or null, got \"high\""),
    # both trained without complaint, into heads and costs no one meant
    ("train --data {score-out-of-range} --out {missing}",
     "switchyard train: {score-out-of-range}: line 1: models.a.score must be from 0 to 1, got 2.5"),
    ("train --data {cost-negative} --out {missing}",
     "switchyard train: {cost-negative}: line 1: models.a.cost_usd must be 0 or more, got -1"),
    ("train --data {unlabelled} --out {missing}", "switchyard train: {unlabelled}: no scores to train on"),
    # every row left out, and the error said they all were in the validation split
    ("train --data {split-test} --out {missing}",
     "switchyard train: {split-test}: line 1: 'split' must be \"train\", \"validation\" or absent"),
    ("train --data {tokens-text} --out {missing}",  # a traceback
     "switchyard train: {tokens-text}: line 1: 'prompt_tokens' must be a number, 0 or more, or null, got \"many\""),
    ("train --data {deep} --out {missing}", "switchyard train: {deep}: line 1 is nested too deeply to read"),
    ("route --batch {deep} --out {missing}", "switchyard route: {deep}: line 1 is nested too deeply to read"),
    ("route --batch {rows} --out {rows}", "switchyard route: --out {rows} is the input file"),  # it emptied it
    # both printed an explanation (or scored the file) with exit 0: no file written, or the prompt dropped
    ("route hello --out {missing}", "switchyard route: --out is for --batch IN.jsonl"),
    ("route hello --batch {rows} --out {missing}", "switchyard route: give a prompt or --batch IN.jsonl, not both"),
    ("logs export --out {missing} --from-jsonl {feedback-no-source}",
     "{feedback-no-source}: line 1: a feedback line needs its 'source'"),
    ("logs export --out {missing} --from-jsonl {time-text}", "{time-text}: line 1: a request record's 'time' must"),
    ("logs export --out {log} --from-jsonl {log}", "switchyard logs export: --out {log} is the request log it reads"),
    ("router evaluate {not-a-router} --data {missing} --policy broken --config {broken-policies}",
     "switchyard router evaluate: broken.yaml: not valid YAML: while parsing a flow node"),  # as `route` says it
    ("spend --config {redis-typo}", "redis_url: Value error, not a Redis URL: it starts with redis://"),
    ("simulate --models {models}", "switchyard simulate: {models}: models: Field required"),
    ("bench nosuch", "switchyard bench: no benchmark 'nosuch'"),
    ("demo --port 99999", "argument --port: a port is 0-65535, got 99999"),  # it bound 34463, or a traceback
    ("serve --config {models} --log-level verbose", "argument --log-level: invalid choice: 'verbose' (choose from"),
    ("demo --log-level trace", "argument --log-level: invalid choice: 'trace' (choose from"),  # both a traceback
    # both said "is in use"
    ("demo --host 192.0.2.1", "switchyard demo: cannot listen on 192.0.2.1: it is not an address of this machine"),
    ("serve --config {models} --port 0 --host no-such-host.invalid",
     "switchyard serve: unknown host 'no-such-host.invalid'"),
    ("router evaluate {not-a-router} --data {missing} --share 5", "argument --share: must be from 0 to 1, got '5'"),
    ("router evaluate {not-a-router} --data {missing} --threshold nan", "argument --threshold: must be a finite"),
    ("router evaluate {not-a-router} --data {missing} --weak m --strong m",  # a table of m against itself
     "switchyard router evaluate: --weak and --strong are both m: give two models"),
    ("router evaluate {not-a-router} --data {missing} --split bogus",
     "argument --split: invalid choice: 'bogus' (choose from 'validation', 'train', 'all')"),
    ("keys create --tenant t --budget abc --admin-key k", "argument --budget: not a number of USD: 'abc'"),
    ("keys create --tenant t --budget nan --admin-key k", "argument --budget: must be a finite number of USD"),
    ("keys create --tenant t --metadata owner --admin-key k", "argument --metadata: expected KEY=VALUE, got 'owner'"),
    # the key was made, with no budget at all
    ("keys create --tenant t --period day --admin-key k", "switchyard keys create: --period day needs --budget USD"),
]


@pytest.mark.parametrize(("args", "says"), BAD_INVOCATIONS, ids=[a for a, _ in BAD_INVOCATIONS])
def test_a_bad_argument_or_file_is_an_error_naming_it_not_a_traceback(tmp_path: Path, args: str, says: str) -> None:
    files = {k: str(v) for k, v in _bad_files(tmp_path).items()}
    argv = shlex.split(args.format(**files))
    out = _run(*argv, *(["--url", "http://127.0.0.1:9"] if argv[0] == "keys" else []))
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert says.format(**files) in out.stderr, out.stderr
    assert "s3cret" not in out.stderr  # a Redis URL's password is never echoed


@pytest.mark.parametrize("pair", [[], ["--weak", "a", "--strong", "c"]])
def test_evaluating_on_a_file_whose_pair_has_no_scores_is_an_error_not_a_table_of_nan(tmp_path: Path,
                                                                                      pair: list[str]) -> None:
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": f"q {i}", "models": {
        "a": {"score": None}, "c": {}}}) + "\n" for i in range(20)))
    out = _run("router", "evaluate", str(DEFAULT_ARTIFACT), "--data", str(data), "--split", "all",
               "--against", str(DEFAULT_ARTIFACT), "--quiet", *pair)
    assert out.returncode == 1 and out.stdout == "", out.stdout  # it printed nan, with RuntimeWarnings
    [line] = out.stderr.splitlines()
    assert line.startswith(f"switchyard router evaluate: no row of {data} has a score for both "), line


@pytest.mark.parametrize(("command", "says"), [
    (["logs", "export", "--out", "{out}"], "switchyard logs export: --since: not a duration: "),
    (["spend"], "switchyard spend: not a duration: ")])
def test_a_duration_too_long_for_any_log_is_an_error_naming_it(tmp_path: Path, command: list[str], says: str) -> None:
    """400 digits are an infinite float: the export stopped in an OverflowError on its way to the store."""
    files = _bad_files(tmp_path)
    out = _run(*(c.format(out=files["missing"]) for c in command), "--config", str(files["redis-down"]),
               "--since", "9" * 400)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines() == [f"{says}'99999999999999999999...' is over 100 years (use e.g. 30m, 24h, 7d)"]


# The plain install (`pip install -e .`) has no scipy: training needs the `train` extra.
_WITHOUT_SCIPY = """
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "scipy":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Absent())
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_refuses_an_empty_out_rather_than_writing_into_the_working_directory(tmp_path: Path) -> None:
    # `--out "$DIR"` with DIR unset: the router went into the current directory, and the advice printed
    # (`router_artifact: `) names no router, which a config reads as the shipped one
    out = subprocess.run([*CLI, "train", "--data", str(ROOT / "tests/fixtures/router_small.jsonl"), "--out", "",
                          "--quiet"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=ENV)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == ["switchyard train: --out is empty: name the directory to write the "
                                               "router to"], out.stderr
    assert list(tmp_path.iterdir()) == []


def test_train_without_scipy_names_the_extra_to_install_not_a_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _WITHOUT_SCIPY, "train", "--data",
                          str(ROOT / "tests/fixtures/router_small.jsonl"), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        "switchyard train: training needs scipy, which the plain install leaves out: "
        "pip install 'switchyard[train]' (in a checkout: pip install -e '.[train]')"], out.stderr


def test_calibrating_a_policy_whose_constraints_leave_no_choice_says_so_not_zeros(tmp_path: Path) -> None:
    # latency-sla's 800 ms objective removes the large model for every prompt of the embedded config:
    # the target never applies, and the figures were a threshold of inf and a quality and cost of 0
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("".join(p.read_text() for p in sorted((ROOT / "tests/fixtures/routing_small").iterdir())))
    out = _run("policy", "calibrate", "latency-sla", "--traffic", str(traffic), "--quiet")
    assert out.returncode == 1 and out.stdout == "", out.stdout
    assert out.stderr.startswith(f"switchyard policy calibrate: policy 'latency-sla': no prompt of {traffic} leaves "
                                 "it a choice between a cheaper and a stronger plan"), out.stderr


def test_calibrate_prints_an_infinite_threshold_as_valid_json_as_route_does(tmp_path: Path) -> None:
    (tmp_path / "routing_policies").mkdir()  # the user's folder, found in the working directory
    (tmp_path / "routing_policies" / "never-strong.yaml").write_text(
        "candidates: [{single: small}, {single: large}]\ntarget: {strong_share: 0}\n")
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("".join(p.read_text() for p in sorted((ROOT / "tests/fixtures/routing_small").iterdir())))
    for args in (["policy", "calibrate", "never-strong", "--traffic", str(traffic), "--json", "--quiet"],
                 ["route", "--policy", "never-strong", "--json", "Prove that sqrt(2) is irrational."]):
        out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=ENV)
        assert out.returncode == 0, out.stderr
        printed = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
        assert (printed if args[0] == "policy" else printed["calibration"])["threshold"] == "inf"


def test_output_piped_to_a_reader_that_leaves_early_is_no_error() -> None:
    # `switchyard route "..." --json | head -3`: head leaves, and the rest of the output has nowhere to go
    proc = subprocess.Popen([*CLI, "route", "Prove that sqrt(2) is irrational.", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=60)
    assert stderr == ""


def test_bench_help_says_where_each_benchmark_reads_its_data() -> None:
    out = _run("bench", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for words in ("routing_quality", "../shared/data beside the repository", "--data-dir DIR", "test_time_compute",
                  "mmlu_pro.jsonl", "--data FILE", "a line per phase"):
        assert words in text, words


@pytest.mark.parametrize(("args", "says"), [
    ("routing_quality --data-dir {tmp}/nowhere",
     "python -m benchmarks.routing_quality: no routing data folder at {tmp}/nowhere "
     "(the five shared files; pass --data-dir DIR)"),
    ("routing_quality --data-dir {tmp}",
     "python -m benchmarks.routing_quality: routing data folder {tmp} lacks mmlu_pro.jsonl, arena_chat.jsonl, "
     "cruxeval_code.jsonl, llmrouter_mixed.jsonl, theoremqa_stem.jsonl (pass --data-dir DIR)"),
    ("target_tracking --data-dir {tmp}/nowhere",
     "python -m benchmarks.target_tracking: no routing data folder at {tmp}/nowhere "
     "(the five shared files; pass --data-dir DIR)"),
    ("test_time_compute --data {tmp}/nowhere/mmlu_pro.jsonl",
     "python -m benchmarks.test_time_compute: no routing data at {tmp}/nowhere/mmlu_pro.jsonl (no folder "
     "{tmp}/nowhere): pass --data FILE (a JSONL file in the shared data schema)"),
])
def test_a_routing_benchmark_without_its_data_stops_in_one_line_naming_it(tmp_path: Path, args: str,
                                                                          says: str) -> None:
    out = _run("bench", *args.format(tmp=tmp_path).split())
    assert out.returncode == 2 and out.stdout == "", out.stdout
    assert out.stderr.splitlines() == [says.format(tmp=tmp_path)], out.stderr


def test_the_test_time_compute_benchmark_on_a_file_without_both_splits_stops_in_one_line(tmp_path: Path) -> None:
    """An empty file (or one of train rows alone) fitted on nothing and ended in a traceback from numpy."""
    data = tmp_path / "mmlu_pro.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "hi", "split": "train", "models": {}}) + "\n")
    out = _run("bench", "test_time_compute", "--data", str(data), "--quick")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines()[-1] == (
        f"python -m benchmarks.test_time_compute: {data} has 1 train and 0 validation rows; the benchmark fits on "
        "the first and measures on the second: pass --data FILE with both (e.g. mmlu_pro.jsonl)")

def test_a_routing_benchmark_says_what_it_is_doing_phase_by_phase(tmp_path: Path) -> None:
    # On the full files the first fit alone takes minutes: a line says so before each phase starts.
    out = _run("bench", "routing_quality", "--data-dir", str(ROOT / "tests/fixtures/routing_small"),
               "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--no-latency", timeout=300)
    assert out.returncode == 0, out.stderr
    phases = [line.split("] ", 1)[1] for line in out.stderr.splitlines() if re.match(r"\[ *\d+ s\] ", line)]
    assert phases[:3] == ["reading the five files from " + str(ROOT / "tests/fixtures/routing_small")
                          + " and featurising their prompts", "fitting the in_domain router",
                          "mmlu_pro (1/5): baselines, the in-domain router and TF-IDF ridges"], phases
    assert "theoremqa_stem: what adapting did to the other files" in phases
    assert phases[-1].startswith("the report:")


def test_route_batch_scores_prompts_whatever_their_labels_say(tmp_path: Path) -> None:
    """Labels out of range stop `train` (above), not scoring: `route --batch` reads no label."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "r", "prompt": "q", "models": {"a": {"score": 7, "cost_usd": -1}}}) + "\n")
    out = _run("route", "--batch", str(rows), "--out", str(tmp_path / "out.jsonl"), "--quiet")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "out.jsonl").read_text())["id"] == "r"


def test_route_batch_writes_its_scores_to_dev_stdout_when_that_is_a_pipe(tmp_path: Path) -> None:
    """`switchyard route --batch IN --out /dev/stdout | jq ...` failed: on a pipe /dev/stdout resolves to
    /proc/PID/fd/pipe:[N], which names no file, and the scores went to 'pipe:[N].partial' beside it."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i} + 1?"}) + "\n" for i in range(3)))
    out = _run("route", "--batch", str(data), "--out", "/dev/stdout", "--quiet")  # stdout: a pipe
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["id"] for line in out.stdout.splitlines()] == ["q0", "q1", "q2"]
    assert list(tmp_path.iterdir()) == [data]
