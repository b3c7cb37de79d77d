"""Start-up checks: which policies load (shipped vs the user's own), reloads of deleted files,
tenant keys and names, and litellm's loggers kept away from prompts."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.api.app import build_services
from gateway.auth import Authenticator, hash_key
from gateway.cli import _setup_logging
from gateway.config import ENV_REDIS_URL, GatewayConfig, embedded_config, load_config, parse_config
from gateway.errors import ConfigError
from gateway.logs import LITELLM_LOGGERS
from gateway.policy import PolicySet
from gateway.policy.sources import shipped_policies_dir
from gateway.state import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "routing_policies"
DEPLOYMENTS = embedded_config("http://127.0.0.1:9/v1").deployments
SMALL_ONLY = [d for d in DEPLOYMENTS if d.tier == "small"]


def _config(**extra: object) -> GatewayConfig:
    raw = {"deployments": [{"name": "small", "model": "openai/sim-small", "api_base": "http://127.0.0.1:9/v1",
                            "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.1}}], **extra}
    return parse_config(raw, "gw.yaml")


def _user_folder(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "routing_policies"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def test_the_shipped_policies_are_found_from_a_source_checkout() -> None:
    assert shipped_policies_dir() == SHIPPED


def test_shipped_policies_naming_a_missing_tier_are_skipped_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n")
    with caplog.at_level(logging.WARNING, logger="switchyard.policy"):
        services = build_services(_config(default_policy="mine"), policies_dir=folder)
    assert set(services.policies.policies) == {"mine"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert all(name in warnings[0] for name in ("balanced", "cost-saver", "quality-first", "latency-sla"))


def test_a_users_own_policy_naming_a_missing_tier_is_fatal(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: large\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: candidates\[0\].single 'large' is not a deployment or tier"):
        PolicySet(folder, SMALL_ONLY, shipped=SHIPPED)


def test_a_copy_of_a_shipped_policy_counts_as_shipped(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n")
    shutil.copy(SHIPPED / "balanced.yaml", folder / "balanced.yaml")
    assert set(PolicySet(folder, SMALL_ONLY, shipped=SHIPPED).skipped) >= {"balanced"}


def test_a_default_policy_that_is_shipped_but_does_not_fit_says_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"default_policy: 'balanced' is shipped but does not fit this config"):
        build_services(_config(), policies_dir=_user_folder(tmp_path, mine="candidates:\n  - single: small\n"))


def test_a_users_file_overrides_the_shipped_policy_of_the_same_name(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, balanced="candidates:\n  - single: large\n")
    policies = PolicySet(folder, DEPLOYMENTS, shipped=SHIPPED)
    assert [p.label for p in policies.policies["balanced"].plans] == ["single:large"]
    assert "cost-saver" in policies.policies  # the other shipped ones are still there


def test_the_shipped_policies_load_without_a_user_folder() -> None:
    policies = PolicySet(None, DEPLOYMENTS, shipped=SHIPPED)
    assert {"balanced", "cost-saver", "quality-first", "latency-sla"} <= set(policies.policies)


def test_a_deleted_policy_file_is_unloaded_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n", other="candidates:\n  - single: small\n")
    policies = PolicySet(folder, DEPLOYMENTS, default_policy="mine")
    (folder / "other.yaml").unlink()
    with caplog.at_level(logging.INFO, logger="switchyard.policy"):
        assert policies.reload_changed() == ["other"]
    assert set(policies.policies) == {"mine"}
    assert any("other unloaded" in r.getMessage() for r in caplog.records)


def test_deleting_the_default_policys_file_keeps_its_last_good_version_and_logs_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n", other="candidates:\n  - single: small\n")
    policies = PolicySet(folder, DEPLOYMENTS, default_policy="mine")
    (folder / "mine.yaml").unlink()
    with caplog.at_level(logging.INFO, logger="switchyard.policy"):
        assert policies.reload_changed() == []
    assert "mine" in policies.policies
    assert [r.levelno for r in caplog.records] == [logging.ERROR] and "default policy" in caplog.records[0].message
    # an `event` as every other policy line has (it had none: a filter on events never saw it)
    assert {k: getattr(caplog.records[0], k, None) for k in ("event", "policy", "file")} == {
        "event": "policy_rejected", "policy": "mine", "file": "mine.yaml"}


def test_deleting_a_tenants_default_policy_file_keeps_its_last_good_version(tmp_path: Path) -> None:
    # the tenant's `auto` and pinned calls use it: unloaded, every one of them was a 404
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n", other="candidates:\n  - single: small\n")
    policies = PolicySet(folder, DEPLOYMENTS, default_policy="other", kept=["mine"])
    (folder / "mine.yaml").unlink()
    assert policies.reload_changed() == [] and "mine" in policies.policies


def test_a_tenants_default_policy_that_is_not_loaded_stops_start_up(tmp_path: Path) -> None:
    tenant = {"name": "team-a", "api_key_sha256": hash_key("sk-a"), "default_policy": "nope"}
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n")
    with pytest.raises(ConfigError, match=re.escape("tenants[0].default_policy: 'nope' is not a policy")):
        build_services(_config(default_policy="mine", tenants=[tenant]), policies_dir=folder)


def test_an_allow_list_naming_a_policy_that_is_not_loaded_is_a_warning_naming_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a file may define it later; one unloaded while the gateway ran must not stop every tenant's next start
    tenant = {"name": "team-a", "api_key_sha256": hash_key("sk-a"), "policies": ["mine", "nope"]}
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n")
    with caplog.at_level(logging.WARNING, logger="switchyard"):
        build_services(_config(default_policy="mine", tenants=[tenant]), policies_dir=folder)
    assert [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "policy_not_loaded"] == [
        "tenants[0].policies: 'nope' is not a policy (mine); tenant team-a cannot use it until a file defines it"]


@pytest.mark.parametrize("value", [None, ""])
def test_a_metrics_token_variable_that_is_unset_is_a_warning_naming_it(
        value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing said why every scrape from another host was a 401: the variable metrics_token_env names was not
    set (a secret left out of a deployment), and /metrics answered loopback callers only."""
    if value is None:
        monkeypatch.delenv("SY_TEST_METRICS_TOKEN", raising=False)
    else:
        monkeypatch.setenv("SY_TEST_METRICS_TOKEN", value)
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n")
    config = _config(default_policy="mine", metrics_token_env="SY_TEST_METRICS_TOKEN")
    with caplog.at_level(logging.WARNING, logger="switchyard"):
        build_services(config, policies_dir=folder)
    assert [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "metrics_token_unset"] == [
        "metrics_token_env: the variable SY_TEST_METRICS_TOKEN is unset or empty; /metrics answers loopback "
        "callers only until it is set and the gateway restarted"]
    monkeypatch.setenv("SY_TEST_METRICS_TOKEN", "scrape-secret")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="switchyard"):
        build_services(config, policies_dir=folder)
    assert not [r for r in caplog.records if getattr(r, "event", None) == "metrics_token_unset"]


def test_deleting_an_override_brings_the_shipped_policy_back(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, balanced="candidates:\n  - single: large\n")
    policies = PolicySet(folder, DEPLOYMENTS, shipped=SHIPPED, default_policy="balanced")
    (folder / "balanced.yaml").unlink()
    assert policies.reload_changed() == ["balanced"]
    assert policies.policies["balanced"].source == "balanced.yaml"
    assert [p.label for p in policies.policies["balanced"].plans] == ["single:small", "single:large"]


def test_two_tenants_with_the_same_key_hash_are_a_config_error() -> None:
    digest = hash_key("sk-shared")
    with pytest.raises(ConfigError, match=r"tenants 'team-a' and 'team-b' have the same api_key_sha256"):
        _config(tenants=[{"name": "team-a", "api_key_sha256": digest}, {"name": "team-b", "api_key_sha256": digest}])


def test_two_tenants_with_the_same_env_key_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_TEST_KEY_ONE", "sk-shared")
    monkeypatch.setenv("SY_TEST_KEY_TWO", "sk-shared")
    config = _config(tenants=[{"name": "team-a", "api_key_env": "SY_TEST_KEY_ONE"},
                              {"name": "team-b", "api_key_env": "SY_TEST_KEY_TWO"}])
    with pytest.raises(ConfigError, match=r"tenants 'team-a' and 'team-b' have the same API key"):
        Authenticator(config.tenants, MemoryStore())


@pytest.mark.parametrize("role", ["admin_api_key_sha256", "viewer_api_key_sha256"])
def test_a_tenants_key_that_is_also_the_admin_or_viewer_key_is_a_config_error(
        role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # that tenant would have been the admin of every tenant's keys and spend (or read the dashboard)
    monkeypatch.setenv("SY_TEST_KEY_ONE", "sk-team-a")
    for tenant in ({"name": "team-a", "api_key_sha256": hash_key("sk-team-a")},
                   {"name": "team-a", "api_key_env": "SY_TEST_KEY_ONE"}):
        config = _config(tenants=[tenant], **{role: hash_key("sk-team-a")})
        with pytest.raises(ConfigError, match=rf"{role} is the API key of tenant 'team-a'"):
            Authenticator(config.tenants, MemoryStore(), admin_sha256=config.admin_api_key_sha256,
                          viewer_sha256=config.viewer_api_key_sha256)


def test_one_key_for_admin_and_viewer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="are the same key"):
        Authenticator([], MemoryStore(), admin_sha256=hash_key("sk-x"), viewer_sha256=hash_key("sk-x"))


def test_an_env_key_equal_to_another_tenants_hash_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_TEST_KEY_ONE", "sk-shared")
    config = _config(tenants=[{"name": "team-a", "api_key_sha256": hash_key("sk-shared")},
                              {"name": "team-b", "api_key_env": "SY_TEST_KEY_ONE"}])
    with pytest.raises(ConfigError, match=r"tenants 'team-a' and 'team-b' have the same API key"):
        Authenticator(config.tenants, MemoryStore())


@pytest.mark.parametrize("budget", [-5, {"usd": -1, "period": "day"}, float("inf")])
def test_a_tenant_budget_below_zero_or_infinite_is_a_config_error(budget: object) -> None:
    with pytest.raises(ConfigError, match=r"gw.yaml: tenants\[0\].budget.usd: Input should be"):
        _config(tenants=[{"name": "team-a", "api_key_sha256": hash_key("sk-a"), "budget": budget}])


def test_a_request_record_ttl_past_what_the_store_can_expire_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"gw.yaml: request_log.ttl_s: Input should be less than or equal to"):
        _config(request_log={"ttl_s": 10**16})


def test_tenant_names_must_be_unique() -> None:
    with pytest.raises(ConfigError, match=r"gw.yaml: tenants: .*tenant names must be unique, repeated: team-a"):
        _config(tenants=[{"name": "team-a", "api_key_sha256": hash_key("sk-1")},
                         {"name": "team-a", "api_key_sha256": hash_key("sk-2")}])


def test_a_tenant_name_cannot_hold_braces() -> None:
    # `acme` labelling request `eu}:x1` stored the label on tenant `acme}:eu`'s request `x1`: one key
    with pytest.raises(ConfigError, match=r"gw.yaml: tenants\[1\].name: .*'acme}:eu': a tenant name cannot hold"):
        _config(tenants=[{"name": "acme", "api_key_sha256": hash_key("sk-1")},
                         {"name": "acme}:eu", "api_key_sha256": hash_key("sk-2")}])


@pytest.fixture
def litellm_loggers() -> Iterator[list[logging.Logger]]:
    loggers = [logging.getLogger(name) for name in LITELLM_LOGGERS]
    before = [lg.level for lg in loggers]
    root_level = logging.getLogger().level
    for lg in loggers:
        lg.setLevel(logging.NOTSET)
    yield loggers
    for lg, level in zip(loggers, before, strict=True):
        lg.setLevel(level)
    logging.getLogger().setLevel(root_level)


def test_litellm_loggers_stay_at_warning_at_debug_level(
        litellm_loggers: list[logging.Logger], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHYARD_LOG_PROMPTS", raising=False)
    _setup_logging("debug")
    assert not any(lg.isEnabledFor(logging.INFO) for lg in litellm_loggers)


def test_litellm_loggers_follow_the_log_level_when_prompts_may_be_logged(
        litellm_loggers: list[logging.Logger], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_LOG_PROMPTS", "1")
    _setup_logging("debug")
    assert all(lg.level == logging.NOTSET for lg in litellm_loggers)


def test_no_usable_policy_at_all_says_why_each_shipped_one_was_skipped() -> None:
    with pytest.raises(ConfigError, match=r"no usable policy files[\s\S]*balanced.yaml: .*'large' is not a deployment"):
        PolicySet(None, SMALL_ONLY, shipped=SHIPPED)


def test_the_hosts_redis_url_replaces_a_bad_one_in_the_config_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("redis_url: host:6379\n"
                    "deployments: [{name: small, model: openai/m, api_base: 'http://127.0.0.1:9/v1', tier: small}]\n")
    with pytest.raises(ConfigError, match="not a Redis URL"):
        load_config(path)
    monkeypatch.setenv(ENV_REDIS_URL, "redis://127.0.0.1:6390/2")
    assert load_config(path).redis_url == "redis://127.0.0.1:6390/2"
    monkeypatch.setenv(ENV_REDIS_URL, "127.0.0.1:6390")  # a bad one of its own still says whose it is
    with pytest.raises(ConfigError, match=ENV_REDIS_URL):
        load_config(path)


def test_the_hosts_admin_and_viewer_key_hashes_replace_stale_ones_in_the_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("admin_api_key_sha256: stale\nviewer_api_key_sha256: stale\n"
                    "deployments: [{name: small, model: openai/m, api_base: 'http://127.0.0.1:9/v1', tier: small}]\n")
    with pytest.raises(ConfigError, match="admin_api_key_sha256"):
        load_config(path)
    monkeypatch.setenv("SWITCHYARD_ADMIN_KEY_SHA256", hash_key("sk-admin"))
    monkeypatch.setenv("SWITCHYARD_VIEWER_KEY_SHA256", hash_key("sk-viewer"))
    config = load_config(path)
    assert (config.admin_api_key_sha256, config.viewer_api_key_sha256) == (hash_key("sk-admin"), hash_key("sk-viewer"))


def test_an_address_family_the_kernel_lacks_is_skipped_as_asyncio_skips_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # a host resolving to an IPv6 address on a kernel without IPv6: socket() itself fails (EAFNOSUPPORT)
    import errno
    import socket

    from gateway import cli

    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object, **kw: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cli.socket, "socket", no_ipv6)
    monkeypatch.setattr(cli.socket, "getaddrinfo", lambda *a, **kw: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))])
    assert cli._cannot_listen("localhost", 0) is None
    monkeypatch.setattr(cli.socket, "getaddrinfo", lambda *a, **kw: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0))])
    assert "no socket for its address family" in (cli._cannot_listen("::1", 0) or "")  # not "listening" on nothing


def test_the_workers_supervisor_checks_a_config_without_building_telemetry_metrics_or_a_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `serve --workers N` checks the config before it forks; building the services there started an OTLP
    # metrics reader and span processor in the supervisor for its whole life (a duplicate metric series)
    from gateway.api import app

    def refused(*args: object, **kw: object) -> None:
        raise AssertionError("built in the supervisor")

    for name in ("Telemetry", "Metrics", "open_store"):
        monkeypatch.setattr(app, name, refused)
    folder = _user_folder(tmp_path, mine="candidates:\n  - single: small\n")
    app.check_start_up(_config(default_policy="mine", policies_dir=str(folder)))
    tenant = {"name": "team-a", "api_key_sha256": hash_key("sk-a"), "default_policy": "nope"}
    with pytest.raises(ConfigError, match=re.escape("tenants[0].default_policy")):  # as a worker refuses it
        app.check_start_up(_config(default_policy="mine", policies_dir=str(folder), tenants=[tenant]))


@pytest.mark.parametrize(("url", "said"), [
    # a query parameter redis-py does not take was a TypeError deep in redis-py, "Application startup failed"
    ("redis://127.0.0.1:6379/0?cluster=maybe", "cluster"),
    ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "'ssl_cert_reqs'"),
    ("redis+cluster://127.0.0.1:7000?pool=5", "'pool'"),
    ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
    ("redis+cluster://127.0.0.1:7000/1", "db"),
])
def test_a_redis_url_redis_py_cannot_open_fails_the_config_naming_why_not_the_url(url: str, said: str) -> None:
    raw = {"redis_url": url, "deployments": [{"name": "small", "model": "openai/m",
                                              "api_base": "http://127.0.0.1:9/v1", "tier": "small"}]}
    with pytest.raises(ConfigError, match=r"redis_url") as raised:
        parse_config(raw, "gateway.yaml")
    assert said in str(raised.value) and "127.0.0.1" not in str(raised.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://u:pw@127.0.0.1:6380/0?ssl_cert_reqs=none",
                                 "redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:7000?cluster=true",
                                 "redis://127.0.0.1:7000?cluster=True", "unix:///run/redis.sock?db=2"])
def test_a_redis_url_redis_py_opens_is_taken(url: str) -> None:
    raw = {"redis_url": url, "deployments": [{"name": "small", "model": "openai/m",
                                              "api_base": "http://127.0.0.1:9/v1", "tier": "small"}]}
    assert parse_config(raw, "gateway.yaml").redis_url == url
