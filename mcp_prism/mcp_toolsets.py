"""Which MCP tools a server offers (toolsets), and the compact schemas it lists them with.

Every agent request carries the tool list (OpenCode sends it with each model call), so a cost tool must
keep it small: by default only `core` is on (route, record usage and quality, the cost report); the
rule administration, the optimisation loop, outcome data and team budgets are toolsets a user turns on
with `mcp-prism serve --toolsets loop,team` (or `all`), `PRISM_TOOLSETS`, or `[mcp] toolsets` in
config.toml, in that order of precedence. A tool that is off is not registered, so it cannot be called.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mcp_prism.errors import ConfigError
from mcp_prism.limits import INT_MAX

ENV = "PRISM_TOOLSETS"
CORE = "core"
ALL = "all"
TOOLSETS: dict[str, tuple[str, ...]] = {
    CORE: ("route_task", "record_usage", "record_quality", "cost_report"),
    "rules": ("compare_models", "list_models", "update_routing_rule", "rollback_routing_rule",
              "routing_rule_history"),
    "loop": ("start_experiment", "run_experiment", "experiment_report", "promote_candidate", "list_experiments",
             "evaluate_automated", "evaluate_with_judge", "next_rating", "submit_rating",
             "analyze", "check_monitors", "list_alerts", "acknowledge_alert", "review_due"),
    "data": ("import_outcomes", "evaluate_router", "train_router", "promote_router"),
    "team": ("set_budget", "budget_status"),
}
DEFAULT: tuple[str, ...] = (CORE,)
TOOLSET_OF = {tool: name for name, tools in TOOLSETS.items() for tool in tools}
VALID = ", ".join([*TOOLSETS, ALL])


def parse(value: str | Iterable[str], where: str) -> tuple[str, ...]:
    """Toolset names from a comma-separated string or a list, `core` first and always included;
    an unknown name is refused with the valid ones."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = [CORE]
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: toolset names are strings, not {str(item)[:40]!r}; valid: {VALID}")
        name = item.strip().lower()
        if not name:
            continue
        if name == ALL:
            return tuple(TOOLSETS)
        if name not in TOOLSETS:
            raise ConfigError(f"{where}: unknown toolset {item.strip()[:40]!r}; valid toolsets: {VALID} "
                              f"(e.g. --toolsets loop,team)")
        if name not in names:
            names.append(name)
    return tuple(names)


def resolve(flag: str | Iterable[str] | None = None, *, env: Mapping[str, str] | None = None,
            config: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The toolsets to serve: the `--toolsets` flag, else PRISM_TOOLSETS, else `[mcp] toolsets`, else core."""
    if flag is not None:
        return parse(flag, "--toolsets")
    if env and (env.get(ENV) or "").strip():
        return parse(env[ENV], ENV)
    section = (config or {}).get("mcp")
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError("[mcp] in config.toml must be a table, like [mcp] toolsets = [\"loop\"]")
    configured = (section or {}).get("toolsets")
    if configured is not None:
        if not isinstance(configured, list | str):
            raise ConfigError(f"[mcp] toolsets must be a list like [\"loop\", \"team\"]; valid: {VALID}")
        return parse(configured, "[mcp] toolsets in config.toml")
    return DEFAULT


def tools_of(toolsets: Iterable[str]) -> set[str]:
    return {tool for name in toolsets for tool in TOOLSETS[name]}


# ---------------------------------------------------------------------------------------- compact schemas
# Bounds `limits.harden_tools` puts on every argument: the server enforces them, so advertising them on
# every string and integer would only cost tokens (string lengths stay: a client can act on those).
_GENERIC_BOUNDS = {("pattern", r"^[^\x00]*$"), ("maximum", INT_MAX), ("minimum", -INT_MAX)}


def compact_input(schema: dict[str, Any]) -> dict[str, Any]:
    """The same arguments in fewer characters: no titles (pydantic names every field twice), `anyOf`
    of plain types as one type list, an optional argument (default null) typed without null, so
    it is left out instead of sent as null, and no generic bounds the server checks anyway."""
    return _compact(schema, keep_descriptions=True, strip_null=True)


def compact_output(schema: dict[str, Any]) -> dict[str, Any]:
    """Output schemas keep each field's name and type: nested models become plain objects, and
    descriptions and `required` go (agents read the result itself; the tool's description says what
    matters in it). Every result still validates against it."""
    schema = {k: v for k, v in schema.items() if k not in ("$defs", "required")}
    return _compact(_drop_refs(schema), keep_descriptions=False, drop=("default", "additionalProperties"))


def _compact(node: Any, *, keep_descriptions: bool, drop: tuple[str, ...] = (), strip_null: bool = False) -> Any:
    if isinstance(node, list):
        return [_compact(x, keep_descriptions=keep_descriptions, drop=drop, strip_null=strip_null) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if (key == "title" and isinstance(value, str)) or key in drop:
            continue
        if strip_null and key in ("pattern", "maximum", "minimum") and (key, value) in _GENERIC_BOUNDS:
            continue
        if key == "description" and isinstance(value, str) and not keep_descriptions:
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):  # keys here are names, not keywords
            out[key] = {n: _compact(s, keep_descriptions=keep_descriptions, drop=drop, strip_null=strip_null)
                        for n, s in value.items()}
        else:
            out[key] = _compact(value, keep_descriptions=keep_descriptions, drop=drop, strip_null=strip_null)
    optional = "default" in out and out["default"] is None
    if optional:
        del out["default"]
    any_of = out.get("anyOf")
    if isinstance(any_of, list):
        if strip_null and optional:  # an optional argument: leave it out rather than send null
            any_of = [s for s in any_of if s != {"type": "null"}]
        out = _merge_any_of(out, any_of)
    elif strip_null and optional and isinstance(out.get("type"), list) and "null" in out["type"]:
        types = [t for t in out["type"] if t != "null"]
        out["type"] = types[0] if len(types) == 1 else types
    return out


def _merge_any_of(node: dict[str, Any], any_of: list[Any]) -> dict[str, Any]:
    """`anyOf` written shorter where the meaning is the same: one branch merged into the node, plain
    types as a type list, and `X or null` as X with null added to its type (and enum)."""
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if not all(isinstance(s, dict) and isinstance(s.get("type"), str) for s in any_of):
        return {"anyOf": any_of, **rest}
    if len(any_of) == 1 and not set(any_of[0]) & set(rest):
        return {**any_of[0], **rest}
    if all(set(s) == {"type"} for s in any_of):
        return {"type": [s["type"] for s in any_of], **rest}
    if len(any_of) == 2 and any_of[1] == {"type": "null"} and not set(any_of[0]) & set(rest):
        first = {**any_of[0], "type": [any_of[0]["type"], "null"]}  # min/max apply to numbers only
        if "enum" in first:
            first["enum"] = [*first["enum"], None]
        return {**first, **rest}
    return {"anyOf": any_of, **rest}


def _drop_refs(node: Any) -> Any:
    if isinstance(node, list):
        return [_drop_refs(x) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"type": "object"}
    return {k: (_drop_refs(v) if k != "properties" else {n: _drop_refs(s) for n, s in v.items()})
            for k, v in node.items()}
