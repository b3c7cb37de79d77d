"""A deployment as OpenTelemetry's GenAI semantic conventions name it, worked out once at start-up.

`gen_ai.provider.name` is who serves the model, not which of our backends talks to it: the
provider litellm reads from the model string's prefix (`anthropic/claude-…` is anthropic), in the
conventions' spelling where they have one (`bedrock` → `aws.bedrock`), else litellm's own name.
A model without a known prefix is recognised by its `api_base` host (api.anthropic.com is
anthropic), or without an `api_base` by its name as litellm would (`claude-…` is anthropic), else
it is taken for what the direct path speaks: an OpenAI-compatible server (`openai`).
`gen_ai.request.model` is the model string without that prefix; `server.address` and
`server.port` come from `api_base`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from gateway.config import DeploymentConfig

OPENAI = "openai"

# litellm provider prefix → the conventions' well-known value, where they differ or where litellm
# has several names for one provider.
_CONVENTION_NAMES = {
    "openai": OPENAI, "text-completion-openai": OPENAI, "custom_openai": OPENAI, "local": OPENAI,
    "anthropic": "anthropic", "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock", "vertex_ai": "gcp.vertex_ai", "vertex_ai_beta": "gcp.vertex_ai",
    "gemini": "gcp.gemini", "cohere": "cohere", "cohere_chat": "cohere", "mistral": "mistral_ai",
    "groq": "groq", "deepseek": "deepseek", "perplexity": "perplexity", "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai", "watsonx_text": "ibm.watsonx.ai",
}
# Other litellm providers, named as litellm names them. A prefix outside both tables is part of
# the model's own name (`meta-llama/Llama-3.1-8B` on an OpenAI-compatible server).
_OTHER_PROVIDERS = frozenset({
    "hosted_vllm", "vllm", "ollama", "ollama_chat", "openrouter", "together_ai", "fireworks_ai",
    "huggingface", "replicate", "sagemaker", "sagemaker_chat", "databricks", "deepinfra", "anyscale",
    "cloudflare", "lm_studio", "llamafile", "nvidia_nim", "cerebras", "sambanova", "ai21", "ai21_chat",
    "friendliai", "github", "codestral", "dashscope", "moonshot", "volcengine", "novita", "nebius",
    "hyperbolic", "lambda_ai", "featherless_ai", "nscale", "predibase", "clarifai", "triton",
    "text-completion-codestral", "bedrock_converse", "infinity", "xinference", "litellm_proxy",
})
_HOSTS = {
    "api.openai.com": OPENAI, "api.anthropic.com": "anthropic", "api.mistral.ai": "mistral_ai",
    "api.groq.com": "groq", "api.deepseek.com": "deepseek", "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity", "api.cohere.com": "cohere", "api.cohere.ai": "cohere",
    "generativelanguage.googleapis.com": "gcp.gemini",
}
_HOST_SUFFIXES = ((".openai.azure.com", "azure.ai.openai"),)
_NAME_PREFIXES = (("claude", "anthropic"), ("gemini", "gcp.gemini"))  # litellm's guesses without a prefix
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class UpstreamNames:
    """What an upstream call's span is called and the attributes it starts with."""

    provider: str
    model: str
    server_address: str | None
    server_port: int | None

    @property
    def span_name(self) -> str:
        return f"chat {self.model}"

    def attributes(self, deployment: str) -> MappingProxyType[str, Any]:
        """The span's starting attributes (dotted names, no None values), shared by every call."""
        attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": self.provider,
                                 "gen_ai.request.model": self.model, "switchyard.deployment": deployment}
        if self.server_address is not None:
            attrs["server.address"] = self.server_address
        if self.server_port is not None:
            attrs["server.port"] = self.server_port
        return MappingProxyType(attrs)


def upstream_names(deployment: DeploymentConfig) -> UpstreamNames:
    prefix, slash, rest = deployment.model.partition("/")
    address, port = _server(deployment.api_base)
    if slash and rest and (prefix in _CONVENTION_NAMES or prefix in _OTHER_PROVIDERS):
        return UpstreamNames(_CONVENTION_NAMES.get(prefix, prefix), rest, address, port)
    if address is None:
        guessed = next((p for start, p in _NAME_PREFIXES if deployment.model.startswith(start)), OPENAI)
        return UpstreamNames(guessed, deployment.model, None, None)
    return UpstreamNames(_provider_of_host(address), deployment.model, address, port)


def _server(api_base: str | None) -> tuple[str | None, int | None]:
    if not api_base:
        return None, None
    try:
        parts = urlsplit(api_base)
        port = parts.port
    except ValueError:  # a malformed port: name the host alone
        return urlsplit(api_base).hostname, None
    if parts.hostname is None:
        return None, None
    return parts.hostname, port if port is not None else _DEFAULT_PORTS.get(parts.scheme)


def _provider_of_host(host: str) -> str:
    if host in _HOSTS:
        return _HOSTS[host]
    for suffix, provider in _HOST_SUFFIXES:
        if host.endswith(suffix):
            return provider
    return OPENAI
