"""Upstream spans name the provider and model as the GenAI semantic conventions do."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import DeploymentConfig
from gateway.providers.genai import UpstreamNames, upstream_names


def _names(model: str, api_base: str | None = None, **kw: Any) -> UpstreamNames:
    return upstream_names(DeploymentConfig(name="d", model=model, api_base=api_base, **kw))


def test_an_openai_compatible_server_is_openai_with_its_address_and_port() -> None:
    names = _names("openai/meta-llama/Llama-3.1-8B-Instruct", "http://vllm-small:8000/v1")
    assert names == UpstreamNames("openai", "meta-llama/Llama-3.1-8B-Instruct", "vllm-small", 8000)
    assert names.span_name == "chat meta-llama/Llama-3.1-8B-Instruct"
    assert dict(names.attributes("small")) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "meta-llama/Llama-3.1-8B-Instruct", "switchyard.deployment": "small",
        "server.address": "vllm-small", "server.port": 8000}


@pytest.mark.parametrize(("model", "api_base", "provider", "request_model"), [
    ("anthropic/claude-3-5-sonnet", None, "anthropic", "claude-3-5-sonnet"),
    ("bedrock/anthropic.claude-3", None, "aws.bedrock", "anthropic.claude-3"),
    ("azure/my-gpt4o", "https://acme.openai.azure.com", "azure.ai.openai", "my-gpt4o"),
    ("mistral/mistral-large", None, "mistral_ai", "mistral-large"),
    ("hosted_vllm/qwen", "http://10.0.0.5:8000/v1", "hosted_vllm", "qwen"),
    ("gpt-4o", None, "openai", "gpt-4o"),
    ("claude-3-5-haiku", None, "anthropic", "claude-3-5-haiku"),
    ("claude-3-5-haiku", "https://api.anthropic.com", "anthropic", "claude-3-5-haiku"),
    ("meta-llama/Llama-3.1-8B", "http://vllm:8000/v1", "openai", "meta-llama/Llama-3.1-8B"),
])
def test_the_provider_comes_from_the_model_prefix_or_api_base_never_the_backend(
        model: str, api_base: str | None, provider: str, request_model: str) -> None:
    for backend in ("direct", "litellm"):
        names = _names(model, api_base, backend=backend)
        assert (names.provider, names.model) == (provider, request_model)


def _server(names: UpstreamNames) -> tuple[str | None, int | None]:
    return names.server_address, names.server_port


def test_the_server_port_defaults_to_the_schemes() -> None:
    assert _server(_names("openai/gpt-4o", "https://api.openai.com/v1")) == ("api.openai.com", 443)
    assert _server(_names("openai/x", "http://gpu-box/v1")) == ("gpu-box", 80)
    assert _server(_names("gpt-4o")) == (None, None)
    assert "server.address" not in _names("gpt-4o").attributes("d")
