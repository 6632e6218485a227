"""The one typed config: every table and key `config.toml` may hold, with its type and range.

`parse_config` is the only reader of the user's config: unknown keys are refused with their path and the
valid names (a typo like `[gatway]` or `discont` would otherwise be ignored silently), wrong types and
out-of-range values name the key and what it must be. The areas that use a table (catalog, task types,
gateway retries, cache, batch, analysis/monitoring/alerts) take it from here, already checked; they add only
the checks that need other tables (a cache TTL for a task type that is not cached, a fallback above its cap).

`config_json_schema()` is the JSON Schema of this model; it ships as `mcp_prism/data/config.schema.json`
(for editors: Taplo / Even Better TOML read `#:schema` or a `$schema` association) and
`mcp-prism config schema` prints it. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections import defaultdict
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from mcp_prism.errors import ConfigError

MAX_TTL_SECONDS = 365 * 86400
MIN_SEMANTIC_THRESHOLD = 0.95
# A price or discount: a decimal string ("0.15") or a TOML number; turned into Decimal by the catalog.
DecimalText = Union[str, int, float]  # noqa: UP007 - pydantic reads this at run time


def _num(lo: float, hi: float, what: str, *, integer: bool = False, gt: bool = False) -> Any:
    kind = int if integer else float
    bounds = {"gt": lo} if gt else {"ge": lo}
    return Annotated[kind, Field(le=hi, description=what, **bounds)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# ---------------------------------------------------------------- catalog layers
class PriceConfig(_Table):
    """USD per million tokens."""

    input: DecimalText = Field(description="USD per million input tokens, e.g. \"0.10\"")
    output: DecimalText = Field(description="USD per million output tokens")
    cached_input: DecimalText | None = Field(None, description="USD per million cached input tokens")
    cache_write: DecimalText | None = Field(None, description="USD per million cache-write tokens (5-minute)")
    cache_write_1h: DecimalText | None = Field(None, description="USD per million one-hour cache-write tokens")
    reasoning: DecimalText | None = Field(None, description="USD per million reasoning tokens")


class ModelConfig(_Table):
    """A model of your own, or settings over a shipped one (e.g. only `discount`)."""

    provider: str | None = Field(None, description="a provider name from [providers]")
    tier: str | None = Field(None, description="simple, standard or complex")
    context_window: Annotated[int, Field(gt=0, description="a positive whole number of tokens")] | None = None
    capabilities: list[str] | None = Field(None, description='a list like ["tools", "json"]')
    family: str | None = Field(None, description="a family name, e.g. claude")
    prices: str | None = Field(None, description="the genai-prices model id, when it differs from the name")
    prices_provider: str | None = Field(None, description="the genai-prices provider id")
    price: PriceConfig | None = None
    discount: DecimalText | None = Field(None, description='a fraction off list price, e.g. "0.15"')
    api: Literal["chat", "responses"] | None = Field(
        None, description='"responses" for a model that accepts only OpenAI\'s Responses API (codex family)')


class ProviderConfig(_Table):
    format: Literal["openai", "anthropic", "gemini"] | None = Field(
        None, description="openai, anthropic or gemini")
    base_url: str | None = Field(None, description="an http:// or https:// API root")
    api_key_env: str | None = Field(None, description="the environment variable holding the key")
    batch_discount: DecimalText | None = Field(None, description='a fraction off for batch requests, e.g. "0.5"')
    local: bool | None = Field(None, description="true or false")
    responses_api: bool | None = Field(None, description="true when the provider serves OpenAI's Responses API")

    @model_validator(mode="before")
    @classmethod
    def _no_keys_in_files(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "api_key" in data:  # keys live in the environment, never in a shared file
            raise ValueError("put the key in an environment variable and name it with api_key_env, not api_key")
        return data


class TaskTypeConfig(_Table):
    tier: str | None = Field(None, description="simple, standard or complex")
    keywords: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, description="a list of non-empty strings")
    description: str | None = Field(None, description="a short description")
    capture_samples: bool | None = Field(None, description="true or false")


class RoutingConfig(_Table):
    default_task_type: str | None = Field(None, description="a task type name, used when the classifier is unsure")
    classifier_threshold: _num(0, 1, "a number between 0 and 1") | None = None


# ---------------------------------------------------------------- gateway
class RetriesConfig(_Table):
    attempts: _num(1, 10, "a whole number from 1 to 10", integer=True) | None = None
    backoff_base_seconds: _num(0, 60, "a number from 0 to 60") | None = None
    backoff_max_seconds: _num(0, 600, "a number from 0 to 600") | None = None
    max_retry_after_seconds: _num(0, 600, "a number from 0 to 600") | None = None


class CircuitConfig(_Table):
    failures: _num(1, 1000, "a whole number from 1 to 1000", integer=True) | None = None
    cooldown_seconds: _num(0, 3600, "a number above 0 up to 3600", gt=True) | None = None


class GatewayConfig(_Table):
    upstream_timeout_seconds: _num(0, 3600, "a number of seconds between 0 and 3600", gt=True) | None = None
    retries: RetriesConfig | None = None
    circuit: CircuitConfig | None = None
    budget_lease_seconds: _num(1, 3600, "a number of seconds from 1 to 3600") | None = None


class CacheConfig(_Table):
    task_types: list[str] | None = Field(None, description='a list of task type names, e.g. ["ticket_classification"]')
    ttl_seconds: _num(1, MAX_TTL_SECONDS, f"a whole number of seconds between 1 and {MAX_TTL_SECONDS} (a year)",
                      integer=True) | None = None
    ttl: dict[str, _num(1, MAX_TTL_SECONDS, f"a whole number of seconds between 1 and {MAX_TTL_SECONDS} (a year)",
                        integer=True)] | None = None
    cache_sampled: bool | None = Field(None, description="true or false")
    max_entry_bytes: _num(1, 64 * 1024 * 1024, "a whole number of bytes between 1 and 67108864",
                          integer=True) | None = None
    semantic: bool | None = Field(None, description="false (semantic matching is not available in this version)")
    semantic_threshold: _num(MIN_SEMANTIC_THRESHOLD, 1, f"a number between {MIN_SEMANTIC_THRESHOLD} and 1: lower "
                             "thresholds serve answers to different questions") | None = None

    @field_validator("semantic")
    @classmethod
    def _semantic_is_not_wired(cls, value: bool | None) -> bool | None:
        # Refused rather than accepted and ignored: nothing in the gateway matches by meaning yet.
        if value:
            raise ValueError("semantic matching is not available in this version; only exact-match caching is. "
                             "Set semantic = false or remove it")
        return value


class BatchConfig(_Table):
    task_types: list[str] | None = Field(None, description="a list of task type names")
    interval_seconds: _num(1, 86400, "a number of seconds from 1 to 86400") | None = None


# ---------------------------------------------------------------- the optimisation loop
class AnalysisConfig(_Table):
    acceptable_score: _num(0, 1, "a number between 0 and 1") | None = None
    min_rated: _num(1, 100_000, "a whole number between 1 and 100000", integer=True) | None = None
    max_error_share: _num(0, 1, "a number between 0 and 1") | None = None
    rework_minutes: _num(0, 1440, "a number of minutes between 0 and 1440") | None = None
    rework_burst: _num(2, 1000, "a whole number between 2 and 1000", integer=True) | None = None
    rework_share: _num(0, 1, "a number between 0 and 1") | None = None


class MonitoringConfig(_Table):
    acceptable_score: _num(0, 1, "a number between 0 and 1") | None = None
    min_rated: _num(1, 100_000, "a whole number between 1 and 100000", integer=True) | None = None
    review_after_days: _num(1, 3660, "a whole number of days between 1 and 3660", integer=True) | None = None
    baseline_days: _num(1, 3660, "a whole number of days between 1 and 3660", integer=True) | None = None
    regression_test: Literal["upper_bound", "lower_bound"] | None = Field(
        None, description="upper_bound or lower_bound")


class AlertsConfig(_Table):
    webhook_url: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=2048)] | None = Field(
        None, description="an http:// or https:// URL (a Slack incoming webhook)")
    timeout_seconds: _num(0.1, 120, "a number of seconds between 0.1 and 120") | None = None


class McpConfig(_Table):
    file_roots: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        None, description="a list of folders the MCP server may read files from (default: the working directory "
                          "and PRISM_HOME over stdio, none over HTTP)")
    toolsets: list[Annotated[str, Field(min_length=1, max_length=64)]] | str | None = Field(
        None, description='MCP toolsets on besides core: a list like ["loop", "team"], or "all"')


class PrismConfig(_Table):
    """The whole `config.toml`. Every table is optional; an empty file is a valid config."""

    models: dict[str, ModelConfig] | None = None
    aliases: dict[str, str] | None = None
    providers: dict[str, ProviderConfig] | None = None
    task_types: dict[str, TaskTypeConfig] | None = None
    routing: RoutingConfig | None = None
    gateway: GatewayConfig | None = None
    cache: CacheConfig | None = None
    batch: BatchConfig | None = None
    analysis: AnalysisConfig | None = None
    monitoring: MonitoringConfig | None = None
    alerts: AlertsConfig | None = None
    mcp: McpConfig | None = None

    def layer(self) -> dict[str, Any]:
        """What the file set, as plain data (unset keys left out, so each area applies its own defaults)."""
        return self.model_dump(exclude_none=True)


# ---------------------------------------------------------------- reading
def parse_config(data: Mapping[str, Any], source: str = "the config file") -> PrismConfig:
    """Check `data` (a parsed TOML document) against the typed config; ConfigError lists every problem."""
    try:
        return PrismConfig.model_validate(dict(data))
    except ValidationError as e:
        problems = describe_errors(e)
        if len(problems) == 1:
            raise ConfigError(f"{source}: {problems[0]}") from None
        raise ConfigError(f"{source} has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
                          ) from None


def checked(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The plain layer of an already-parsed config mapping, after the typed check (areas call this so that a
    mapping handed to them directly is held to the same rules as the file)."""
    return parse_config(data or {}).layer()


def config_json_schema() -> dict[str, Any]:
    schema = PrismConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mcp_prism config.toml"
    return schema


def config_json_schema_text() -> str:
    return json.dumps(config_json_schema(), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------- error messages
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_TABLE_ERRORS = {"dict_type", "model_type", "model_attributes_type"}


def describe_errors(e: ValidationError) -> list[str]:
    out: list[str] = []
    unknown: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for err in e.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            unknown[loc[:-1]].append(str(loc[-1]))
            continue
        path = _path(loc)
        if err["type"] in _TABLE_ERRORS:
            out.append(f"{path} must be a table ([{path}] in the config file), not {_show(err.get('input'))}")
        elif err["type"] == "value_error":
            out.append(f"{path}: {err.get('ctx', {}).get('error', err['msg'])}")
        else:
            what = _description(loc)
            out.append(f"{path} must be {what}, not {_show(err.get('input'))}" if what
                       else f"{path}: {err['msg'][:1].lower() + err['msg'][1:]}, not {_show(err.get('input'))}")
    for parent, names in unknown.items():
        known = _fields_at(parent)
        where = _path(parent) or "the top level"
        hints = [m for n in names for m in difflib.get_close_matches(n, known, n=1)]
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        out.append(f"{where}: unknown setting(s) {', '.join(_show_key(n) for n in sorted(names))}; "
                   f"known: {', '.join(known)}{hint}")
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_key(key: str) -> str:
    return key if len(key) <= 60 and _BARE_KEY.match(key) else _show(key)


def _path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + (p if _BARE_KEY.match(str(p)) else json.dumps(str(p))[:62]))
    return "".join(parts)


def _unwrap(tp: Any) -> tuple[Any, FieldInfo | None]:
    info = None
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            args = get_args(tp)
            info = next((m for m in args[1:] if isinstance(m, FieldInfo)), info)
            tp = args[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp, info
            tp = rest[0]
        else:
            return tp, info


def _walk(loc: tuple[Any, ...]) -> tuple[Any, FieldInfo | None]:
    """The type and field info at `loc` in the model (dict keys and list indexes step into their values)."""
    tp: Any = PrismConfig
    info: FieldInfo | None = None
    for part in loc:
        tp, inner = _unwrap(tp)
        info = inner if inner is not None and inner.description else info
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None, None
            tp, info = field.annotation, field
        elif get_origin(tp) is dict:
            tp, info = get_args(tp)[1], None
        elif get_origin(tp) is list:  # an item: the list's description says what items must be
            tp = get_args(tp)[0]
        else:
            return None, None
    tp, inner = _unwrap(tp)
    return tp, inner if inner is not None and inner.description else info


def _description(loc: tuple[Any, ...]) -> str | None:
    _, info = _walk(loc)
    return info.description if info is not None else None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    tp, _ = _walk(loc)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return sorted(tp.model_fields)
    return []
