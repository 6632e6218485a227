"""Routing rules: their JSON Schema, validation against the catalog, and the shipped defaults.

A rule maps a task type to a primary model, ordered fallbacks and optional conditions:
- `complexity_upgrades`: when the request's complexity boost reaches `min_boost`, use `model`;
- `context_upgrade`: when the prompt does not fit the chosen model, move to one that does;
- `required_capabilities`: every model named must have them (tools, vision, json, ...);
- `min_context`: every model named must accept at least this many tokens;
- `router` (a "mixed" rule): the primary is the cheap model, and a request the task type's learned
  router (version `version`) scores as hard goes to `strong` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from mcp_prism.core.catalog import KNOWN_CAPABILITIES, Catalog
from mcp_prism.core.tasks import TaskTypeSpec
from mcp_prism.errors import InvalidInput, UnknownName

RULE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mcp_prism routing rule",
    "type": "object",
    "additionalProperties": False,
    "required": ["task_type", "primary"],
    "properties": {
        "task_type": {"type": "string", "pattern": "^[a-z][a-z0-9_]{1,47}$"},
        "primary": {"type": "string", "minLength": 1, "maxLength": 200},
        "fallbacks": {
            "type": "array", "maxItems": 8, "uniqueItems": True,
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "complexity_upgrades": {
            "type": "array", "maxItems": 2,
            "items": {
                "type": "object", "additionalProperties": False, "required": ["min_boost", "model"],
                "properties": {
                    "min_boost": {"type": "integer", "minimum": 1, "maximum": 2},
                    "model": {"type": "string", "minLength": 1, "maxLength": 200},
                },
            },
        },
        "context_upgrade": {"type": "boolean"},
        "required_capabilities": {
            "type": "array", "uniqueItems": True, "items": {"enum": sorted(KNOWN_CAPABILITIES)},
        },
        "min_context": {"type": "integer", "minimum": 1},
        "router": {
            "type": "object", "additionalProperties": False, "required": ["version", "strong"],
            "description": "a mixed rule: requests the learned router scores as hard go to `strong`",
            "properties": {
                "version": {"type": "integer", "minimum": 1},
                "strong": {"type": "string", "minLength": 1, "maxLength": 200},
            },
        },
        "prompt_cache": {"type": "boolean", "description": "mark long stable prefixes (system, tools) for the "
                         "provider's prompt cache (Anthropic cache_control) when the client did not"},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(RULE_SCHEMA)


@dataclass(frozen=True, slots=True)
class RoutingRule:
    task_type: str
    primary: str
    fallbacks: tuple[str, ...] = ()
    complexity_upgrades: tuple[tuple[int, str], ...] = ()  # (min_boost, model), ascending
    context_upgrade: bool = True
    required_capabilities: frozenset[str] = field(default_factory=frozenset)
    min_context: int | None = None
    prompt_cache: bool = False
    router: tuple[int, str] | None = None  # (learned router version, strong model): a mixed rule

    def models(self) -> list[str]:
        return [self.primary, *self.fallbacks, *(m for _, m in self.complexity_upgrades),
                *([self.router[1]] if self.router else [])]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"task_type": self.task_type, "primary": self.primary,
                                "fallbacks": list(self.fallbacks)}
        if self.complexity_upgrades:
            data["complexity_upgrades"] = [{"min_boost": b, "model": m} for b, m in self.complexity_upgrades]
        data["context_upgrade"] = self.context_upgrade
        if self.required_capabilities:
            data["required_capabilities"] = sorted(self.required_capabilities)
        if self.min_context:
            data["min_context"] = self.min_context
        if self.prompt_cache:
            data["prompt_cache"] = True
        if self.router:
            data["router"] = {"version": self.router[0], "strong": self.router[1]}
        return data


def _path(error: jsonschema.ValidationError) -> str:
    return "rule" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)


def parse_rule(data: Any, catalog: Catalog, task_types: Mapping[str, TaskTypeSpec]) -> RoutingRule:
    """Validate `data` (schema, catalog, capabilities, windows) and build the rule.

    Raises InvalidInput listing every problem found, each with what to do about it."""
    if not isinstance(data, Mapping):
        raise InvalidInput("a routing rule must be a JSON object like "
                           '{"task_type": "code_review", "primary": "claude-sonnet-4-5"}')
    problems = [f"{_path(e)}: {e.message}" for e in sorted(_VALIDATOR.iter_errors(data), key=str)]
    if problems:
        raise InvalidInput("invalid routing rule: " + "; ".join(problems))
    if data["task_type"] not in task_types:
        raise UnknownName("task type", data["task_type"], list(task_types))

    caps = frozenset(data.get("required_capabilities", ()))
    min_context = data.get("min_context")
    upgrades = tuple(sorted((u["min_boost"], u["model"]) for u in data.get("complexity_upgrades", ())))
    if len({b for b, _ in upgrades}) != len(upgrades):
        problems.append("complexity_upgrades: each min_boost may appear once")
    canonical: dict[str, str] = {}
    router = data.get("router")
    for name in [data["primary"], *data.get("fallbacks", ()), *(m for _, m in upgrades),
                 *([router["strong"]] if router else [])]:
        try:
            spec = catalog.resolve(name)
        except UnknownName as e:
            problems.append(str(e))
            continue
        canonical[name] = spec.name
        if caps - spec.capabilities:
            problems.append(f"model {spec.name!r} lacks required capabilities {sorted(caps - spec.capabilities)}; "
                            "pick a model that has them or drop the requirement")
        if min_context and spec.context_window < min_context:
            problems.append(f"model {spec.name!r} has a {spec.context_window}-token context window, "
                            f"below min_context {min_context}")
    fallbacks = tuple(canonical.get(f, f) for f in data.get("fallbacks", ()))
    primary = canonical.get(data["primary"], data["primary"])
    if primary in fallbacks:
        problems.append(f"primary model {primary!r} is also listed as a fallback")
    if problems:
        raise InvalidInput("invalid routing rule: " + "; ".join(problems))
    return RoutingRule(
        task_type=data["task_type"],
        primary=primary,
        fallbacks=fallbacks,
        complexity_upgrades=tuple((b, canonical[m]) for b, m in upgrades),
        context_upgrade=bool(data.get("context_upgrade", True)),
        required_capabilities=caps,
        min_context=min_context,
        prompt_cache=bool(data.get("prompt_cache", False)),
        router=(int(router["version"]), canonical[router["strong"]]) if router else None,
    )


def _r(task: str, primary: str, fallbacks: Sequence[str], up1: str | None = None,
       up2: str | None = None) -> dict[str, Any]:
    ups = [{"min_boost": b, "model": m} for b, m in ((1, up1), (2, up2)) if m]
    return {"task_type": task, "primary": primary, "fallbacks": list(fallbacks), "complexity_upgrades": ups}


# The seed's task-model matrix: simple work on Flash/mini-class models, reviews on a
# Sonnet-class model, architecture and bug hunts upgraded to an Opus-class model.
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    _r("ticket_classification", "gemini-2.5-flash", ["gpt-4o-mini", "claude-haiku-4-5"],
       "claude-haiku-4-5", "claude-sonnet-4-5"),
    _r("code_autocomplete", "codestral-2508", ["gpt-4.1-mini"], "claude-haiku-4-5", "claude-sonnet-4-5"),
    _r("data_extraction", "gemini-2.5-flash", ["gpt-4o-mini", "claude-haiku-4-5"],
       "claude-haiku-4-5", "claude-sonnet-4-5"),
    _r("email_drafting", "claude-haiku-4-5", ["gpt-4o-mini"], "claude-sonnet-4-5"),
    _r("doc_generation", "claude-haiku-4-5", ["gpt-5-mini"], "claude-sonnet-4-5"),
    _r("test_generation", "claude-haiku-4-5", ["gpt-5-mini"], "claude-sonnet-4-5", "claude-opus-4-5"),
    _r("code_review", "claude-sonnet-4-5", ["gpt-5"], "claude-opus-4-5"),
    _r("security_audit", "claude-sonnet-4-5", ["gpt-5"], "claude-opus-4-5"),
    _r("deploy_check", "claude-sonnet-4-5", ["gpt-5"], "claude-opus-4-5"),
    _r("bug_investigation", "claude-opus-4-5", ["gpt-5.5", "claude-sonnet-4-5"]),
    _r("architecture_design", "claude-opus-4-5", ["gpt-5.5", "gemini-3-pro-preview"]),
    _r("general", "claude-sonnet-4-5", ["gpt-5"], "claude-opus-4-5"),
)
