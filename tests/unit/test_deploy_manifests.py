"""deploy/: the compose stack and the Kubernetes manifests, checked against their published schemas.

Kubernetes objects go through `kubernetes-validate` (the API's own OpenAPI schemas, strict: an
unknown field is an error); the compose file through the Compose Specification's JSON schema
(`check-jsonschema`, which ships it), and through `docker compose config` where that plugin exists.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import parse_config
from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
KUBE_VERSION = "1.30.0"


def _objects() -> list[tuple[str, dict[str, Any]]]:
    names = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    return [(name, doc) for name in names for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]


def _kind(kind: str) -> dict[str, Any]:
    return next(doc for _, doc in _objects() if doc["kind"] == kind)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("name", sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_each_kubernetes_manifest_matches_the_api_schema(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for doc in yaml.safe_load_all((KUBE / name).read_text()):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    broken = yaml.safe_load((KUBE / "deployment.yaml").read_text())
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_the_deployment_probes_readiness_and_liveness_and_scales_on_cpu() -> None:
    container = _kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation is a share of this
    hpa = _kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _kind("Deployment")["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert {e["secretRef"]["name"] for e in container["envFrom"]} == {_kind("Secret")["metadata"]["name"]}


def test_the_kubernetes_gateway_config_is_valid_and_its_keys_come_from_the_secret() -> None:
    raw = yaml.safe_load(_kind("ConfigMap")["data"]["gateway.yaml"])
    config = parse_config(raw, "configmap.yaml")
    secret = set(_kind("Secret")["stringData"])
    wanted = {d.api_key_env for d in config.deployments} | {t.api_key_env for t in config.tenants}
    assert wanted | {config.metrics_token_env} <= secret


def test_the_policies_configmap_is_routing_policies_as_it_is() -> None:
    spec = importlib.util.spec_from_file_location("render_policies", KUBE / "render_policies.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (KUBE / "policies-configmap.yaml").read_text() == module.render(), \
        "run: python deploy/kubernetes/render_policies.py"


def test_compose_file_matches_the_compose_specification() -> None:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.skip("pip install check-jsonschema (it ships the Compose Specification's schema)")
    got = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                          str(DEPLOY / "docker-compose.yaml")], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    got = subprocess.run([docker, "compose", "-f", str(DEPLOY / "docker-compose.yaml"), "config", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr


def test_compose_runs_three_replicas_behind_nginx_with_redis_otel_and_prometheus() -> None:
    services = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())["services"]
    assert {"gateway", "nginx", "redis", "otel-collector", "prometheus"} <= set(services)
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 3
    assert gateway["environment"]["SWITCHYARD_REDIS_URL"].startswith("redis://redis:")
    assert gateway["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector:")
    assert "server gateway:8080" in (DEPLOY / "nginx.conf").read_text()
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["dns_sd_configs"][0]["names"] == ["gateway"] and scrape["metrics_path"] == "/metrics"


def test_the_compose_redis_keeps_its_data_across_a_restart() -> None:
    # Budgets' spend, the keys made with the admin API, the spend ledger, policy versions and the promoted
    # router live only in Redis: run without persistence, a restarted Redis container (restart: unless-stopped)
    # came back empty, every tenant's total budget was whole again and every admin-made key refused.
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in redis["volumes"]}
    assert mounts["/data"] in compose["volumes"]  # a named volume: kept when the container is replaced


def test_every_deployment_gives_a_stopping_gateway_the_time_its_shutdown_takes() -> None:
    # uvicorn's 10 s for open requests, then up to 12 s reading on calls given up on (billed as they end),
    # a cut call's 2 s and the ledger's last write (`gateway.api.app.SHUTDOWN_DRAIN_S`): Docker's default
    # grace is 10 s, after which those bills were lost
    from gateway.api.app import SHUTDOWN_DRAIN_S

    needed = 10 + SHUTDOWN_DRAIN_S + 2 + 2
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())["services"]["gateway"]
    assert int(compose["stop_grace_period"].removesuffix("s")) >= needed
    deployment = _kind("Deployment")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed


def test_the_compose_gateway_config_is_valid() -> None:
    config = parse_config(yaml.safe_load((DEPLOY / "gateway.yaml").read_text()), "deploy/gateway.yaml")
    assert {d.api_base for d in config.deployments} == {"http://simulator:9000/v1"}


def test_nginx_accepts_its_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed")
    # `gateway` resolves only inside the compose network: check the syntax with a loopback stand-in.
    text = (DEPLOY / "nginx.conf").read_text().replace("server gateway:8080", "server 127.0.0.1:8080")
    text = text.replace("worker_processes 1;", f"worker_processes 1;\npid {tmp_path}/nginx.pid;\n"
                        f"error_log {tmp_path}/error.log;")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    got = subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")],
                         capture_output=True, text=True, timeout=30)
    assert got.returncode == 0, got.stderr
