"""Policy files: validation that names the file and the field, binding to deployments, hot reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway.config import DeploymentConfig, embedded_config
from gateway.errors import ConfigError
from gateway.plans import BestOfN, Cascade, Single
from gateway.policy import BoundPolicy, PolicySet, load_policy_file

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENTS = embedded_config("http://127.0.0.1:9/v1").deployments


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_every_shipped_policy_is_valid() -> None:
    policies = PolicySet(ROOT / "routing_policies", DEPLOYMENTS)
    assert {"balanced", "cost-saver", "quality-first", "latency-sla"} <= set(policies.policies)


def test_unknown_tier_names_the_file_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "cost-saver.yaml", "candidates:\n  - single: small\n  - single: huge\n")
    expected = r"cost-saver.yaml: candidates\[1\].single 'huge' is not a deployment or tier"
    with pytest.raises(ConfigError, match=expected):
        load_policy_file(path, DEPLOYMENTS)


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\nobjective:\n  value: 3\n")
    with pytest.raises(ConfigError, match=r"p.yaml: objective.value: Extra inputs are not permitted"):
        load_policy_file(path, DEPLOYMENTS)


@pytest.mark.parametrize(("text", "field"), [
    ("objective:\n  value_usd: .inf\n", "objective.value_usd"),  # every utility inf: the cheapest won the tie
    ("target:\n  usd_per_1k_requests: .inf\n", "target.usd_per_1k_requests"),
    ("constraints:\n  max_cost_usd: .inf\n", "constraints.max_cost_usd"),
    ("constraints:\n  min_quality: .nan\n", "constraints.min_quality")])
def test_an_infinite_or_nan_number_is_rejected_with_its_path(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\n  - single: large\n" + text)
    with pytest.raises(ConfigError, match=rf"p.yaml: {field}: Input should be a finite number"):
        load_policy_file(path, DEPLOYMENTS)


@pytest.mark.parametrize(("text", "field"), [
    ("target:\n  strong_share: yes\n", "target.strong_share"),  # read as 1: every request to the strong plan
    ("constraints:\n  min_quality: true\n", "constraints.min_quality"),
    ("timeout_s: on\n", "timeout_s"),
    ("cache:\n  ttl_s: true\n", "cache.ttl_s"),
    ("candidates:\n  - best_of: {deployment: small, n: true}\n", r"candidates\[0\].best_of.n"),
    ("candidates:\n  - cascade: {steps: [small, large], threshold: yes}\n", r"candidates\[0\].cascade.threshold")])
def test_a_yes_or_true_is_no_number(tmp_path: Path, text: str, field: str) -> None:
    body = text if text.startswith("candidates") else "candidates:\n  - single: small\n  - single: large\n" + text
    path = _write(tmp_path, "p.yaml", body)
    with pytest.raises(ConfigError, match=rf"p.yaml: {field}: Value error, got true, which is no value"):
        load_policy_file(path, DEPLOYMENTS)
    assert load_policy_file(_write(tmp_path, "q.yaml", "candidates:\n  - single: small\ncache: {enabled: no}\n"),
                            DEPLOYMENTS).spec.cache.enabled is False  # a field that takes a boolean still does


@pytest.mark.parametrize("value", ["1e-300", "0.05", "0"])
def test_a_timeout_too_short_for_any_call_is_rejected_with_its_path(tmp_path: Path, value: str) -> None:
    """A policy with `timeout_s: 1e-300` loaded, and every request under it was a 504."""
    path = _write(tmp_path, "p.yaml", f"candidates:\n  - single: small\ntimeout_s: {value}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: timeout_s: Input should be greater than or equal to 0.1"):
        load_policy_file(path, DEPLOYMENTS)
    _write(tmp_path, "p.yaml", "candidates:\n  - single: small\ntimeout_s: 0.1\n")
    assert load_policy_file(path, DEPLOYMENTS).spec.timeout_s == 0.1


@pytest.mark.parametrize("value", ["10000000000000000", "100000000000000000000"])
def test_a_cache_ttl_past_what_the_store_can_expire_is_rejected_with_its_path(tmp_path: Path, value: str) -> None:
    """Redis refused the cache write of `ttl_s: 1e16`, which opened the store's breaker for every tenant;
    a ttl past 64 bits ended `policy check` in a traceback."""
    path = _write(tmp_path, "p.yaml", f"candidates:\n  - single: small\ncache:\n  ttl_s: {value}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: cache.ttl_s: Input should be less than or equal to 315360000"):
        load_policy_file(path, DEPLOYMENTS)


def test_wrong_type_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\nconstraints:\n  latency_slo_ms: fast\n")
    with pytest.raises(ConfigError, match=r"p.yaml: constraints.latency_slo_ms: Input should be a valid number"):
        load_policy_file(path, DEPLOYMENTS)


def test_a_candidate_must_be_exactly_one_kind(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "candidates:\n  - {single: small, cascade: {steps: [small, large]}}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: candidates\[0\]: Value error, a candidate is exactly one of"):
        load_policy_file(path, DEPLOYMENTS)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", "candidates: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_policy_file(path, DEPLOYMENTS)


def test_invalid_yaml_is_one_line_with_the_files_line_and_column(tmp_path: Path) -> None:
    """PyYAML's own text spanned four lines (a JSON log line's `error` held them, with a caret under a copy of
    the line) and said the file was "<unicode string>"."""
    path = _write(tmp_path, "broken.yaml", "description: x\ncandidates: [{single: small}\n")
    with pytest.raises(ConfigError) as raised:
        load_policy_file(path, DEPLOYMENTS)
    assert str(raised.value) == ("broken.yaml: not valid YAML: while parsing a flow sequence, expected ',' or ']', "
                                 "but got '<stream end>' (line 3, column 1)")


def test_a_key_given_twice_is_refused_naming_it(tmp_path: Path) -> None:
    """PyYAML kept the last of two `target:` keys, silently: the policy ran on a target nobody read."""
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\n  - single: large\n"
                                      "target: {strong_share: 0.3}\nfallbacks: {}\ntarget: {quality: 0.9}\n")
    with pytest.raises(ConfigError, match=r"(?s)p.yaml: not valid YAML: .*found duplicate key 'target'"):
        load_policy_file(path, DEPLOYMENTS)
    # a merge's keys may still be overridden, and other mappings may reuse a key
    _write(tmp_path, "p.yaml", "candidates:\n  - &first {single: small}\n  - {<<: *first, single: large}\n")
    assert [p.label for p in load_policy_file(path, DEPLOYMENTS).plans] == ["single:small", "single:large"]


def test_yaml_nested_too_deeply_is_refused_and_later_files_still_reload(tmp_path: Path) -> None:
    """A file of a few thousand nested `[` raised RecursionError out of the YAML parser: a traceback from
    `policy check` and at start-up, and on a running gateway every watch step stopped there, so no later
    file's edit was ever reloaded (and no version published)."""
    deep = "candidates: " + "[" * 5000 + "]" * 5000 + "\n"
    path = _write(tmp_path, "deep.yaml", deep)
    with pytest.raises(ConfigError, match=r"^deep.yaml: not valid YAML: nested too deeply$"):
        load_policy_file(path, DEPLOYMENTS)
    path.unlink()
    later = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\n")
    policies = PolicySet(tmp_path, DEPLOYMENTS)
    _write(tmp_path, "a-deep.yaml", deep)
    later.write_text("candidates:\n  - single: large\n")
    os.utime(later, (time.time() + 5, time.time() + 5))
    assert policies.reload_changed() == ["p"]
    assert policies.get("p").plans == (Single("large"),)  # type: ignore[union-attr]
    assert policies.get("a-deep") is None


def test_tiers_expand_and_fallbacks_resolve(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", """
candidates:
  - single: small
  - best_of: {deployment: small, n: 3}
  - cascade: {steps: [small, large], threshold: 0.5}
fallbacks:
  small: [large]
""")
    policy = load_policy_file(path, DEPLOYMENTS)
    assert policy.plans == (Single("small", ("large",)), BestOfN(("small",) * 3),
                            Cascade(("small", "large"), threshold=0.5))
    assert [p.label for p in policy.plans] == ["single:small", "best_of:3:small:vote", "cascade:small>large"]


def test_a_deployments_own_empty_fallbacks_are_not_its_tiers(tmp_path: Path) -> None:
    """`fallbacks: {small: []}` says small has none: the empty list was read as no entry, and small took
    its tier's fallbacks instead (here the `small` tier's, which name large)."""
    deployments = [*DEPLOYMENTS, DEPLOYMENTS[0].model_copy(update={"name": "tiny"})]  # a second of tier small
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: tiny\nfallbacks: {tiny: [], small: [large]}\n")
    assert load_policy_file(path, deployments).plans == (Single("tiny"),)


@pytest.mark.parametrize(("fallbacks", "expected"), [
    ("{smal: [large]}", r"p.yaml: fallbacks 'smal' is not a deployment or tier"),
    ("{large: [nowhere]}", r"p.yaml: fallbacks.large\[0\] 'nowhere' is not a deployment or tier")])
def test_every_name_in_fallbacks_is_checked_even_where_no_single_plan_calls_it(
        tmp_path: Path, fallbacks: str, expected: str) -> None:
    """A misspelt key left `small` without its fallback, and the file loaded and passed `policy check`."""
    path = _write(tmp_path, "p.yaml", f"candidates:\n  - single: small\nfallbacks: {fallbacks}\n")
    with pytest.raises(ConfigError, match=expected):
        load_policy_file(path, DEPLOYMENTS)


def test_allowed_deployments_that_leave_no_candidate_are_refused_naming_the_field(tmp_path: Path) -> None:
    """Such a policy answers every request with a 422: it loaded, passed `policy check`, and a hot
    reload of the edit put it in force in place of the last good version."""
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\n  - best_of: {deployment: small}\n"
                                      "constraints: {allowed_deployments: [large]}\n")
    expected = (r"p.yaml: constraints.allowed_deployments \(large\) leaves no candidate: single:small calls "
                r"small, best_of:3:small:vote calls small")
    with pytest.raises(ConfigError, match=expected):
        load_policy_file(path, DEPLOYMENTS)
    path.write_text("candidates:\n  - single: small\n  - single: large\nconstraints: {allowed_deployments: [large]}\n")
    assert load_policy_file(path, DEPLOYMENTS).allowed == {"large"}  # one candidate left is enough


def test_a_file_that_turns_bad_keeps_its_last_good_version(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\n")
    policies = PolicySet(tmp_path, DEPLOYMENTS)
    path.write_text("candidates:\n  - single: nowhere\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert policies.reload_changed() == []
    assert policies.get("p") is not None and policies.get("p").plans == (Single("small"),)  # type: ignore[union-attr]


def test_a_changed_file_is_reloaded(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\n")
    policies = PolicySet(tmp_path, DEPLOYMENTS)
    path.write_text("candidates:\n  - single: large\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert policies.reload_changed() == ["p"]
    assert policies.get("p").plans == (Single("large"),)  # type: ignore[union-attr]


def test_a_file_rewritten_within_one_tick_of_its_time_is_reloaded(tmp_path: Path) -> None:
    """Changes were told by the modification time alone: a file rewritten in place within the file system's
    clock tick (its time unchanged) kept its old version in force."""
    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\n")
    before = path.stat()
    policies = PolicySet(tmp_path, DEPLOYMENTS)
    path.write_text("candidates:\n  - single: small\n  - single: large\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same time, as within one tick
    assert policies.reload_changed() == ["p"]
    assert policies.get("p").plans == (Single("small"), Single("large"))  # type: ignore[union-attr]
    assert policies.reload_changed() == []  # and read once


def test_two_files_of_one_policy_name_are_refused_at_start_up_and_on_reload(tmp_path: Path) -> None:
    """`dup.yaml` and `dup.yml` both define `dup`: the one in force was the one read last, so the watcher
    flipped it a second after start with nothing edited, and deleting one unloaded the policy the other
    still defined."""
    first = _write(tmp_path, "dup.yaml", "candidates:\n  - single: small\n")
    second = _write(tmp_path, "dup.yml", "candidates:\n  - single: large\n")
    with pytest.raises(ConfigError, match="both define policy 'dup'"):
        PolicySet(tmp_path, DEPLOYMENTS)
    second.unlink()
    policies = PolicySet(tmp_path, DEPLOYMENTS)
    _write(tmp_path, "dup.yml", "candidates:\n  - single: large\n")
    assert policies.reload_changed() == [] and policies.reload_changed() == []  # refused, and said once
    assert policies.get("dup").plans == (Single("small"),)  # type: ignore[union-attr]
    first.unlink()  # the other file is the policy's now
    policies.reload_changed()
    assert policies.reload_changed() == ["dup"]
    assert policies.get("dup").plans == (Single("large"),)  # type: ignore[union-attr]


def test_deleting_a_yml_override_of_a_shipped_policy_brings_the_shipped_one_back(tmp_path: Path) -> None:
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    user.mkdir()
    shipped.mkdir()
    _write(shipped, "saver.yaml", "candidates:\n  - single: small\n")
    override = _write(user, "saver.yml", "candidates:\n  - single: large\n")
    policies = PolicySet(user, DEPLOYMENTS, shipped=shipped)
    assert policies.get("saver").plans == (Single("large"),)  # type: ignore[union-attr]
    override.unlink()
    assert policies.reload_changed() == ["saver"]
    assert policies.get("saver").plans == (Single("small"),)  # type: ignore[union-attr]


def test_policy_check_reports_two_files_of_one_policy_name(tmp_path: Path) -> None:
    """The check passed a folder with `dup.yaml` and `dup.yml`, which the gateway refuses to start with."""
    from gateway.explain import check_policies

    _write(tmp_path, "dup.yaml", "candidates:\n  - single: small\n")
    _write(tmp_path, "dup.yml", "candidates:\n  - single: large\n")
    assert check_policies(tmp_path, None) == [f"{tmp_path / 'dup.yaml'} and {tmp_path / 'dup.yml'} both define "
                                              "policy 'dup': keep one"]


def test_a_file_finished_while_its_half_written_version_was_being_refused_is_reloaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written in place (`cat > p.yaml`), a file can be read half written. The refusal noted the file's time
    as of after the read, so the finished file, written meanwhile, passed for the one refused and was never
    loaded: the gateway kept the old version of a file that was valid on disk."""
    from gateway.policy import loader

    path = _write(tmp_path, "p.yaml", "candidates:\n  - single: small\n")
    policies = PolicySet(tmp_path, DEPLOYMENTS)
    path.write_text("candidates:\n  - sing")  # the writer is half way
    os.utime(path, (time.time() + 5, time.time() + 5))
    real = loader.load_policy_file

    def read_while_the_writer_finishes(p: Path, deployments: list[DeploymentConfig]) -> BoundPolicy:
        try:
            return real(p, deployments)
        finally:
            path.write_text("candidates:\n  - single: large\n")
            os.utime(path, (time.time() + 10, time.time() + 10))

    monkeypatch.setattr(loader, "load_policy_file", read_while_the_writer_finishes)
    assert policies.reload_changed() == []  # the half-written file is refused
    monkeypatch.setattr(loader, "load_policy_file", real)
    assert policies.reload_changed() == ["p"]
    assert policies.get("p").plans == (Single("large"),)  # type: ignore[union-attr]


def test_a_missing_policy_folder_says_whether_the_config_or_the_environment_named_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Set in the environment, the path was nowhere in the config file the operator then read for it.
    from gateway.policy.sources import policy_files

    missing = tmp_path / "nonexistent"
    monkeypatch.setenv("SWITCHYARD_POLICIES_DIR", str(missing))
    with pytest.raises(ConfigError, match=r"policy folder not found \(named by \$SWITCHYARD_POLICIES_DIR\)"):
        policy_files(missing)
    monkeypatch.delenv("SWITCHYARD_POLICIES_DIR")
    with pytest.raises(ConfigError, match=r"policy folder not found \(named by policies_dir\)"):
        policy_files(missing)


def test_policy_check_refuses_a_cascade_that_starts_with_the_dearer_model(tmp_path: Path) -> None:
    """Steps go cheapest first. `[large, small]` paid the large model on every request and answered the
    hard prompts with the small one; it was accepted, and under a strong_share target it became the strong
    choice (predicted worse and 16 times dearer than small alone), sent a share of traffic for nothing."""
    from gateway.explain import check_policies

    _write(tmp_path, "backwards.yaml", "candidates:\n  - single: small\n  - cascade: {steps: [large, small]}\n"
                                       "target: {strong_share: 0.3}\n")
    _write(tmp_path, "forwards.yaml", "candidates:\n  - single: small\n  - cascade: {steps: [small, large]}\n"
                                      "  - cascade: {steps: [small, small, large]}\n")
    assert check_policies(tmp_path, None) == [
        "backwards.yaml: cascade:large>small: step 'large' ($0.88/$0.88 per million input/output tokens) is "
        "dearer than the step after it, 'small' ($0.18/$0.18): cascade steps go cheapest first"]


def test_policy_check_of_one_file_checks_that_file_and_of_a_wrong_path_says_what_it_is(tmp_path: Path) -> None:
    """`policy check routing_policies/balanced.yaml` said "policy folder not found (named by policies_dir)":
    a file, not a missing folder, and named on the command line, not by any config."""
    from gateway.explain import check_policies

    _write(tmp_path, "good.yaml", "candidates:\n  - single: small\n")
    _write(tmp_path, "bad.yaml", "candidates:\n  - single: huge\n")
    assert check_policies(tmp_path / "good.yaml", None) == []
    [problem] = check_policies(tmp_path / "bad.yaml", None)
    assert problem.startswith("bad.yaml: candidates[0].single 'huge' is not a deployment or tier")
    (tmp_path / "notes.txt").write_text("hi\n")
    assert check_policies(tmp_path / "notes.txt", None) == [
        f"{tmp_path / 'notes.txt'}: not a policy file (*.yaml, *.yml) nor a folder of them"]
    assert check_policies(tmp_path / "nowhere", None) == [f"{tmp_path / 'nowhere'}: no such folder of policy files"]
