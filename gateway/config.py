"""Gateway settings: the gateway YAML (deployments, tenants, default policy) plus environment overrides.

Every file is validated with pydantic (`extra="forbid"`), and a bad file fails with a message that
names the file and the field: `gateway.yaml: deployments[1].price.input_per_mtok: Input should be a
valid number`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError

ENV_CONFIG = "SWITCHYARD_CONFIG"
ENV_REDIS_URL = "SWITCHYARD_REDIS_URL"
ENV_POLICIES_DIR = "SWITCHYARD_POLICIES_DIR"
ENV_ADMIN_KEY_SHA256 = "SWITCHYARD_ADMIN_KEY_SHA256"
ENV_VIEWER_KEY_SHA256 = "SWITCHYARD_VIEWER_KEY_SHA256"
# The fields a host's environment sets over the file (`with_env_overrides`).
ENV_OVERRIDES = ((ENV_REDIS_URL, "redis_url"), (ENV_POLICIES_DIR, "policies_dir"),
                 (ENV_ADMIN_KEY_SHA256, "admin_api_key_sha256"), (ENV_VIEWER_KEY_SHA256, "viewer_api_key_sha256"))

OutageSetting = Literal["fail_closed", "fail_open"]
# The longest a stored entry may be kept (a cached answer, a request record): Redis refuses an expiry
# past its clock's range, so an answer of a policy with `ttl_s: 1e16` was never cached (the refusal fails
# that write alone, `gateway.state._refused_command`), and a ttl past 64 bits ended start-up in a traceback.
MAX_TTL_S = 10 * 365 * 24 * 3600  # ten years


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or any(_takes_bool(a) for a in get_args(annotation))


class NoBooleanNumbers(BaseModel):
    """A file's `true`, `yes` or `on` is no number: pydantic reads it as 1 for a number field, so
    `strong_share: yes` sent every request to the strong plan and `max_retries: true` retried once. A field
    that takes a boolean still does."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None \
                and not _takes_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"got {str(value).lower()}, which is no value of this field (YAML reads yes, no, on "
                             "and off as true and false)")
        return value


class _Strict(NoBooleanNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """USD per million tokens; overrides litellm's cost map (needed for self-hosted models)."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(
        default=None, ge=0, description="prompt tokens read from the provider's prompt cache; default: input price")
    cache_write_per_mtok: float | None = Field(
        default=None, ge=0, description="prompt tokens written to the provider's prompt cache; default: input price")
    cache_write_1h_per_mtok: float | None = Field(
        default=None, ge=0, description="prompt tokens written to the provider's prompt cache to live an hour "
        "(Anthropic's `ttl: \"1h\"`, 2x the input price); default: cache_write_per_mtok")
    audio_input_per_mtok: float | None = Field(
        default=None, ge=0, description="audio prompt tokens (`input_audio` parts); default: unknown, so a request "
        "with audio is refused under a budget or cost cap (set it to input_per_mtok where audio costs as text)")
    audio_output_per_mtok: float | None = Field(
        default=None, ge=0, description="audio output tokens (`modalities: [\"audio\"]`); default: unknown, so a "
        "request asking for audio is refused under a budget or cost cap")


class BudgetConfig(_Strict):
    """A spend limit in USD per calendar period (UTC); `total` never resets."""

    usd: float = Field(ge=0, allow_inf_nan=False)
    period: Literal["day", "week", "month", "total"] = "total"


def _number_is_total(value: Any) -> Any:
    """A plain number is a `total` budget, validated as its `usd` (a negative one would pass as a bare
    float and fail every request that checks it)."""
    return {"usd": value} if isinstance(value, int | float) and not isinstance(value, bool) else value


Budget = Annotated[BudgetConfig, BeforeValidator(_number_is_total)]
"""A tenant's or key's budget as given: {usd, period}, or a plain number of USD (a total)."""


class DeploymentConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:-]+$")
    model: str = Field(min_length=1, description="litellm model string, e.g. openai/gpt-4o-mini")
    api_base: str | None = None
    api_key_env: str | None = Field(default=None, description="name of the env var holding the key")
    backend: Literal["auto", "direct", "litellm"] = "auto"
    tier: str = "small"
    price: Price | None = None
    router_profile: str | None = Field(
        default=None, description="a model the router learned, whose predicted quality this one borrows (in any "
        "spelling of its name: 'meta-llama/Llama-3.1-70B-Instruct' is the router's 'Meta-Llama-3.1-70B-Instruct')")
    ability: float | None = Field(default=None, description="router ability (logit scale) if no profile")
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    expected_output_tokens: int = Field(default=256, gt=0)
    max_output_tokens: int = Field(
        default=4096, gt=0, description="the most a call may generate when the client sets no max_tokens "
        "(then sent with the call): sizes budget reservations and cost caps")
    expected_ttft_ms: float = Field(default=500.0, ge=0)
    expected_tokens_per_s: float = Field(default=50.0, gt=0)
    supports_n: bool = Field(
        default=True, description="answers several choices from one call (`n`): when false, best-of and "
        "cascade samples are one call each, a request for n > 1 is never sent to it as one call (not as a single "
        "plan, nor as a fallback), and pinning it with n > 1 is a 400; unset, false through litellm to a provider "
        "litellm sends no `n` (Anthropic, Bedrock, Mistral)")
    supports_prefill: bool = Field(
        default=False, description="accepts a trailing assistant message as the start of its answer and "
        "continues it: a stream that breaks after its first tokens may resume here (the simulated models do; "
        "set it for OpenAI-compatible servers that document assistant prefill)")
    requests_per_minute: int | None = Field(
        default=None, gt=0, description="the provider's request quota for this deployment, across replicas: "
                                        "at it, the deployment is skipped like an open circuit")
    tokens_per_minute: int | None = Field(
        default=None, gt=0, description="the provider's token quota (prompt + max output, settled on completion)")
    whole_answers_as_streams: Literal["when_needed", "always", "never"] = Field(
        default="when_needed", description="on the direct path, when a whole (non-streamed) answer is asked "
        "for as a stream and rebuilt, so that its first token shows whether the deployment answers however "
        "long the answer is: when_needed, for a half-open circuit's trial and after a whole answer's timeout "
        "that no other answer explains, until a first token (or none) settles it (one client's long answers "
        "then never open a circuit); always (about 1 ms of CPU more per call); never, for a server or model "
        "that cannot stream (OpenAI streams some models only for verified organisations): a timeout that "
        "nothing explains then counts. A deployment that refuses such a stream for streaming is asked for whole "
        "answers whole from then on until restart, with a warning")

    isolate_prefix_cache: bool = Field(
        default=False, description="send every call a `cache_salt` keyed to its tenant, so that the server's "
        "prefix cache is shared within a tenant only (vLLM); OpenAI and most providers refuse the field")

    @model_validator(mode="after")
    def _salt_goes_to_a_server_of_ours(self) -> DeploymentConfig:
        if self.isolate_prefix_cache and not self.api_base:
            raise ValueError("isolate_prefix_cache needs the api_base of a server that takes cache_salt "
                             "(vLLM); hosted providers refuse it")
        return self


class TenantConfig(_Strict):
    name: str = Field(min_length=1)
    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    api_key_env: str | None = None
    policies: list[str] | None = Field(default=None, description="allowed policies; None = all")
    deployments: list[str] | None = Field(
        default=None, description="deployments the tenant may pin by name; None = all when `policies` is "
                                  "None, none when it is a list")
    default_policy: str | None = None
    budget_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False,
                                     description="a total budget (same as budget: N)")
    budget: Budget | None = Field(
        default=None, description="{usd, period: day|week|month|total}, or a plain number (total)")
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(
        default=None, gt=0, description="prompt + max output tokens reserved per request, settled on completion")
    log_prompts: bool = Field(
        default=False, description="keep prompt text in request records (else its keyed digest): needed to "
                                   "export this tenant's traffic as training data")
    max_concurrent_requests: int | None = Field(
        default=None, gt=0, description="requests in flight at once per worker; default: the gateway's "
                                        "max_concurrent_requests_per_tenant")

    @field_validator("name")
    @classmethod
    def _no_braces(cls, name: str) -> str:
        # The name is its keys' hash tag (`sy:req:{name}:<request id>`): tenant `a` asking about request
        # `b}:x` named the key of tenant `a}:b`'s request `x`, and labelled it. Keys made through the admin
        # API are held to the same (`gateway.keys.NAME_PATTERN`).
        if "{" in name or "}" in name:
            raise ValueError(f"'{name}': a tenant name cannot hold {{ or }} (it is the hash tag of its Redis keys)")
        return name

    @model_validator(mode="after")
    def _has_a_key(self) -> TenantConfig:
        if not (self.api_key_sha256 or self.api_key_env):
            raise ValueError("a tenant needs api_key_sha256 or api_key_env")
        if self.budget is not None and self.budget_usd is not None:
            raise ValueError("give budget or budget_usd, not both")
        return self

    @property
    def spend_budget(self) -> BudgetConfig | None:
        if self.budget is not None:
            return self.budget
        return None if self.budget_usd is None else BudgetConfig(usd=self.budget_usd)


class RequestLogSettings(_Strict):
    """Where completed requests are recorded (for feedback, shadow labels and `switchyard logs export`)."""

    enabled: bool = True
    max_records: int = Field(default=100_000, gt=0, description="the stream's cap (approximate on Redis); in "
                             "memory also each tenant's cap on records that take feedback")
    ttl_s: int = Field(default=7 * 24 * 3600, gt=0, le=MAX_TTL_S, description="how long a request accepts feedback")
    queue_size: int = Field(default=10_000, gt=0, description="records waiting to be written; beyond: dropped")
    path: str | None = Field(default=None, description="also append records and feedback to this JSONL file")
    shadow_concurrency: int = Field(default=4, gt=0, le=64, description="shadow answers in flight at once")
    shadow_queue_size: int = Field(default=64, gt=0, description="shadow jobs waiting; beyond: dropped")
    shadow_tenant_concurrency: int | None = Field(
        default=None, gt=0, le=64, description="shadow answers of one tenant in flight at once (default: half of "
        "shadow_concurrency, rounded up, so that one tenant's jobs leave workers for the others)")


class GatewayConfig(_Strict):
    deployments: list[DeploymentConfig] = Field(min_length=1)
    tenants: list[TenantConfig] = Field(default_factory=list)
    default_policy: str = "balanced"
    policies_dir: str | None = None
    redis_url: str | None = None
    router_artifact: str | None = Field(default=None, description="directory made by `switchyard train`")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    # Checked before the body is validated, which costs ~10 µs of event loop per message or part:
    # 2048 is the bound OpenAI-compatible APIs enforce on `messages` (Azure OpenAI refuses more).
    max_messages: int = Field(default=2048, gt=0, description="messages in one chat request; beyond: 400")
    max_message_parts: int = Field(
        default=4096, gt=0, description="content parts and tool calls of all messages of one chat request; beyond: 400")
    max_tools: int = Field(default=128, gt=0, description="tools (or functions) of one chat request; beyond: 400 "
                           "(OpenAI's documented maximum)")
    cache_namespace: str = "default"
    on_store_outage: OutageSetting = Field(
        default="fail_closed", description="budgets and rate limits when the store is down: refuse or let through")
    request_log: RequestLogSettings = RequestLogSettings()
    admin_api_key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the one admin key: it sees every tenant's spend (env SWITCHYARD_ADMIN_KEY_SHA256)")
    metrics_token_env: str | None = Field(
        default=None, description="env var holding the bearer token that may read /metrics from other hosts "
                                  "when tenants are configured (loopback callers need none)")
    budget_alerts: list[Annotated[float, Field(gt=0, le=10)]] = Field(
        default=[0.8, 1.0], description="fractions of a budget that log a warning and count in "
                                        "switchyard.budget.alerts, once per period")
    viewer_api_key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="sha256 of a key that may read the dashboard and nothing else (env SWITCHYARD_VIEWER_KEY_SHA256)")
    # A quarter of a worker's 512 upstream connections: no one tenant's long or slowly read answers can
    # hold them all (gateway.inflight).
    max_concurrent_requests_per_tenant: int | None = Field(
        default=128, gt=0, description="requests one tenant may have in flight at once per worker, unless the "
                                        "tenant sets its own; null: no cap. Not applied on a gateway without keys")
    digest_secret_env: str | None = Field(
        default=None, min_length=1,
        description="env var holding the secret that keys prompt digests in request records and prefix-cache "
                    "salts; default: one generated once and kept in the store")

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, url: str | None) -> str | None:
        return checked_redis_url(url) if url else None  # "": no store of its own, as before

    @field_validator("deployments")
    @classmethod
    def _unique_names(cls, deployments: list[DeploymentConfig]) -> list[DeploymentConfig]:
        if dupes := _repeated(d.name for d in deployments):
            raise ValueError(f"deployment names must be unique, repeated: {', '.join(dupes)}")
        return deployments

    @field_validator("tenants")
    @classmethod
    def _distinct_tenants(cls, tenants: list[TenantConfig]) -> list[TenantConfig]:
        """Names key budgets and spend; a key names one tenant. (Keys from env vars: `Authenticator`.)"""
        if dupes := _repeated(t.name for t in tenants):
            raise ValueError(f"tenant names must be unique, repeated: {', '.join(dupes)}")
        owner: dict[str, str] = {}
        for t in tenants:
            if t.api_key_sha256 in owner:
                raise ValueError(f"tenants '{owner[t.api_key_sha256]}' and '{t.name}' have the same api_key_sha256")
            if t.api_key_sha256:
                owner[t.api_key_sha256] = t.name
        return tenants


def _repeated(names: Iterable[str]) -> list[str]:
    """The names given more than once, sorted."""
    return sorted(n for n, count in Counter(names).items() if count > 1)


def describe_validation_error(source: str, exc: ValidationError) -> str:
    """`file.yaml: deployments[1].price: message` for each error, one per line."""
    lines = []
    for err in exc.errors():
        where = ""
        for part in err["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        lines.append(f"{source}: {where or '(top level)'}: {err['msg']}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping: PyYAML keeps the last one silently, so a
    second `target:` further down a policy (or a second `budget:` of a tenant) replaced the first without
    a word. Keys a merge (`<<: *base`) brings in may still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # refused by PyYAML's own construct_mapping below
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:  # a ValueError: uncaught, it stopped every later file's hot reload
        raise ConfigError(f"{path.name}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {_yaml_problem(exc)}") from exc
    except RecursionError:  # PyYAML recurses per level: `[[[...]]]` a few thousand deep is no config, and
        # uncaught it was a traceback at start-up and stopped every later policy file's hot reload
        raise ConfigError(f"{path.name}: not valid YAML: nested too deeply") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line, at the line and column of the file: its own text spans four lines, names
    the file `"<unicode string>"` (it parsed the text) and ends in a caret under a copy of the line."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return str(exc)
    mark = exc.problem_mark
    what = ", ".join(part for part in (exc.context, exc.problem) if part)
    return f"{what} (line {mark.line + 1}, column {mark.column + 1})"


def parse_config(raw: Any, source: str) -> GatewayConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from None
    check_tenant_deployments(config, source)
    return config


def check_tenant_deployments(config: GatewayConfig, source: str) -> None:
    """Every deployment a tenant may pin exists (a typo would otherwise silently forbid it)."""
    names = [d.name for d in config.deployments]
    for i, tenant in enumerate(config.tenants):
        for j, name in enumerate(tenant.deployments or ()):
            if name not in names:
                raise ConfigError(f"{source}: tenants[{i}].deployments[{j}]: '{name}' is not a deployment "
                                  f"({', '.join(names)})")


# What the store opens: redis-py's schemes, and a cluster's (`gateway.state.cluster_seed_url`).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


def checked_redis_url(url: str) -> str:
    """`url` if redis-py can open it, else a ValueError (a typo such as `host:6379` was a traceback from
    deep in redis-py at the first command that opened the store)."""
    if not url.startswith(REDIS_SCHEMES):
        # not echoed: a URL holds its password (redis://user:secret@host)
        raise ValueError(f"not a Redis URL: it starts with {', '.join(REDIS_SCHEMES)} (redis://host:6379/0)")
    from gateway.state import redis_url_problem  # deferred: it imports redis-py, only for a config that names one

    if (problem := redis_url_problem(url)) is not None:
        raise ValueError(problem)
    return url


def load_config(path: str | Path) -> GatewayConfig:
    """Read the gateway YAML, then let the environment override what ops set per host."""
    p = Path(path)
    raw = read_yaml(p)
    if isinstance(raw, dict):
        # The host's values replace the file's before the file is checked: a bad or stale one in a shared
        # config must not stop a host that sets its own (it was a ConfigError about the file's).
        overridden = [f for env, f in ENV_OVERRIDES if os.environ.get(env)]
        raw = {k: v for k, v in raw.items() if k not in overridden}
    return with_env_overrides(parse_config(raw, p.name))


def env_redis_url() -> str | None:
    """$SWITCHYARD_REDIS_URL, checked as the config's redis_url is (a ConfigError naming it)."""
    url = os.environ.get(ENV_REDIS_URL)
    if not url:
        return None
    try:
        return checked_redis_url(url)
    except ValueError as exc:
        raise ConfigError(f"{ENV_REDIS_URL}: {exc}") from None


def _env_value(env: str) -> str | None:
    """$env, checked as the field it sets is checked in the file (a ConfigError naming the variable)."""
    if env == ENV_REDIS_URL:
        return env_redis_url()
    value = os.environ[env]
    if env in (ENV_ADMIN_KEY_SHA256, ENV_VIEWER_KEY_SHA256):
        value = value.strip().lower()
        if len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
            raise ConfigError(f"{env}: expected the 64 hex digits of a sha256")
    return value


def with_env_overrides(config: GatewayConfig) -> GatewayConfig:
    updates = {name: _env_value(env) for env, name in ENV_OVERRIDES if os.environ.get(env)}
    return config.model_copy(update=updates) if updates else config


def embedded_config(simulator_url: str) -> GatewayConfig:
    """The embedded default: the built-in simulated small and large models, in-memory cache."""
    raw = {
        "deployments": [
            {"name": "small", "model": "openai/sim-small", "api_base": simulator_url, "tier": "small",
             "price": {"input_per_mtok": 0.18, "output_per_mtok": 0.18},
             "router_profile": "Meta-Llama-3.1-8B-Instruct",
             "expected_output_tokens": 60, "expected_ttft_ms": 20, "expected_tokens_per_s": 200,
             "supports_prefill": True},
            {"name": "large", "model": "openai/sim-large", "api_base": simulator_url, "tier": "large",
             "price": {"input_per_mtok": 0.88, "output_per_mtok": 0.88},
             "router_profile": "Meta-Llama-3.1-70B-Instruct",
             "expected_output_tokens": 80, "expected_ttft_ms": 60, "expected_tokens_per_s": 80,
             "supports_prefill": True},
        ],
        "default_policy": "balanced",
    }
    return with_env_overrides(parse_config(raw, "embedded default"))
