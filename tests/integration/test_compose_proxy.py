"""The compose stack's nginx (deploy/nginx.conf) in front of a real gateway: what a client gets through it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.api.app import create_app
from tests.integration.conftest import sim_config
from tests.support.processes import ROOT, GatewayServer, Simulator, free_port, terminate, wait_until

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx)")


@pytest.fixture(scope="module")
def proxy(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gateway = GatewayServer(create_app(sim_config(simulator.url))).start()
    folder: Path = tmp_path_factory.mktemp("nginx")
    port = free_port()
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    # `gateway` resolves only inside the compose network; the rest of the file is as deployed.
    text = text.replace("server gateway:8080", f"server 127.0.0.1:{gateway.port}")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    text = text.replace("worker_processes 1;", f"worker_processes 1;\npid {folder}/nginx.pid;\n"
                        f"error_log {folder}/error.log;\ndaemon off;\n"
                        # one process, as the user running the tests: it writes request bodies in `folder`
                        "master_process off;")
    text = text.replace("http {", f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n"
                        f"  proxy_temp_path {folder}/proxy;")
    (folder / "nginx.conf").write_text(text)
    nginx = subprocess.Popen([shutil.which("nginx") or "nginx", "-c", str(folder / "nginx.conf"), "-p", str(folder),
                              "-e", str(folder / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/healthz", timeout=2).status_code == 200, what="nginx")
        yield url
    finally:
        terminate(nginx)
        gateway.stop()


@pytest.mark.parametrize("size", [2_200_000, 5_000_000])
def test_a_body_over_the_limit_is_an_openai_413_through_the_proxy(proxy: str, size: int) -> None:
    # nginx's client_max_body_size was the gateway's own 2 MiB, so nginx answered every body over it first,
    # with its HTML page: the gateway's JSON 413 never reached a client behind the compose stack.
    client = openai.OpenAI(base_url=proxy + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="small", messages=[{"role": "user", "content": "x" * size}])
    assert raised.value.status_code == 413
    assert raised.value.response.headers["content-type"].startswith("application/json")
    error = raised.value.response.json()["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
