"""The MCP adapter: MCP tools and resources over `PrismService`, served on stdio or Streamable HTTP.

It only translates: arguments in, `PrismService` call, pydantic result out (the result models are the
tools' output schemas, so clients get structured content). `PrismError` becomes a `ToolError` whose
message says what was wrong and how to fix it; anything else is logged to stderr and the client gets a
generic message. Nothing but protocol messages is written to stdout.

Run as `python -m mcp_prism.mcp_server` for a stdio server configured from the environment
(`PRISM_HOME`, `PRISM_DB`, `PRISM_CONFIG`); the CLI's `mcp-prism serve` is the usual entry point.
"""

import copy
import hmac
import importlib
import inspect
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import anyio
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism import __version__, install_sync, mcp_toolsets
from mcp_prism.config import Settings, is_loopback
from mcp_prism.core.rules import RULE_SCHEMA
from mcp_prism.errors import ConfigError, PrismError, UnknownName
from mcp_prism.file_access import FileRoots
from mcp_prism.limits import clip_message, harden_tools
from mcp_prism.results import (
    CompareResult,
    CostReport,
    ModelList,
    QualityResult,
    RecordResult,
    RouteResult,
    RuleChange,
    RuleHistory,
)
from mcp_prism.service import PrismService, UsageInput

log = logging.getLogger(__name__)

T = TypeVar("T")

# Kept in step with mcp_prism.core.usage (STATUSES, QUALITY_SOURCES) and store.sqlite.GROUP_COLUMNS;
# tests/test_mcp_server.py checks that they match.
Status = Literal["ok", "rate_limited", "timeout", "provider_error", "invalid_request", "cancelled", "error",
                 "invalid_usage"]
QualitySource = Literal["human", "judge", "automated"]
GroupColumn = Literal["task_type", "model", "provider", "team", "user", "project", "day"]
TierName = Literal["simple", "standard", "complex"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# Each holds `register_tools(mcp, get_service, tool)`: the tools of one area of the optimisation loop.
LOOP_TOOL_MODULES = ("mcp_prism.mcp_experiments", "mcp_prism.mcp_evaluate", "mcp_prism.mcp_analysis",
                     "mcp_prism.mcp_data", "mcp_prism.mcp_team", "mcp_prism.mcp_routers")
MCP_PATH = "/mcp"

INSTRUCTIONS = """\
mcp-prism routes each AI task to the cheapest model that does it well, and measures the result.
Call route_task before a model call, then record_usage with its tokens and the rule_id/rule_version
route_task returned (skip it for requests through the mcp-prism gateway), and record_quality once
the output is judged. cost_report shows spend and savings.
Resources: prism://rules, prism://rules/{task_type}, prism://catalog (JSON)."""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)


def _rule_param_schema() -> dict[str, Any]:
    """RULE_SCHEMA, inlined into the `rule` argument's schema (without the draft marker and title)."""
    schema = copy.deepcopy(RULE_SCHEMA)
    schema.pop("$schema", None)
    schema.pop("title", None)
    return schema


RULE_DESCRIPTION = (
    "The rule, e.g. {\"task_type\": \"test_generation\", \"primary\": \"gpt-5-mini\", \"fallbacks\": "
    "[\"claude-haiku-4-5\"]}. complexity_upgrades: models for harder requests; context_upgrade: move to a "
    "model whose window fits; required_capabilities / min_context: every model named must meet them. "
    "list_models gives valid names."
)


# ---------------------------------------------------------------------------------------- shared service
class _SharedService:
    """One `PrismService` per server, opened by the first session's lifespan and closed by the last.

    The SDK enters the lifespan once for stdio and Streamable HTTP, and once per connection for in-process
    clients; sharing keeps one store connection and rule cache per server either way. Static resources
    get no `Context`, so tools and resources all reach the service through this object."""

    def __init__(self, settings: Settings, file_roots: FileRoots) -> None:
        self.settings = settings
        self.file_roots = file_roots
        self.service: PrismService | None = None
        self.users = 0
        self.lock = anyio.Lock()

    @asynccontextmanager
    async def lifespan(self, _server: MCPServer[Any]) -> AsyncIterator[PrismService]:
        async with self.lock:
            if self.service is None:
                self.service = await PrismService.open(self.settings)
                self.service.file_roots = self.file_roots  # tools taking a path read only under these
            self.users += 1
            service = self.service
        try:
            yield service
        finally:
            async with self.lock:
                self.users -= 1
                if self.users == 0 and self.service is not None:
                    closing, self.service = self.service, None
                    await closing.close()

    def get(self) -> PrismService:
        if self.service is None:  # only when called outside a session
            raise PrismError("the mcp-prism service is not running (no MCP session is open); restart the server")
        return self.service


async def _run(call: Callable[[], T | Awaitable[T]]) -> T:
    """Call a sync or async service method and return its result."""
    result = call()
    if inspect.isawaitable(result):
        result = await result
    return result  # type: ignore[return-value]


async def _tool(name: str, call: Callable[[], T | Awaitable[T]]) -> T:
    """Run a service call; PrismError → ToolError (shown to the client), anything else → logged + generic."""
    try:
        return await _run(call)
    except PrismError as e:
        raise ToolError(clip_message(str(e))) from None
    except ToolError:
        raise
    except Exception:
        log.exception("tool %s failed unexpectedly", name)
        raise ToolError(f"{name} failed with an internal error (a bug, logged on the server's stderr); "
                        "retry once, then report it if it persists") from None


async def _resource(uri: str, call: Callable[[], T | Awaitable[T]]) -> T:
    """Like `_tool` for resources: an unknown name → ResourceNotFoundError (-32602), other PrismError → -32603."""
    try:
        return await _run(call)
    except UnknownName as e:
        raise ResourceNotFoundError(str(e)) from None
    except PrismError as e:
        raise ResourceError(str(e)) from None
    except ResourceError:
        raise
    except Exception:
        log.exception("resource %s failed unexpectedly", uri)
        raise ResourceError(f"reading {uri} failed with an internal error (logged on the server)") from None


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------------------------------- the server
class PrismMCPServer(MCPServer[Any]):
    """MCPServer whose tool list is sent with compact schemas (same constraints, fewer characters):
    agents send that list with every model request."""

    _listed: list[Any] | None = None

    async def list_tools(self) -> list[Any]:
        if self._listed is None:
            self._listed = [t.model_copy(update={
                "input_schema": mcp_toolsets.compact_input(t.input_schema),
                "output_schema": mcp_toolsets.compact_output(t.output_schema) if t.output_schema else None,
            }) for t in await super().list_tools()]
        return self._listed


def build_server(settings: Settings, toolsets: Sequence[str] | str | None = None) -> MCPServer[Any]:
    """The MCP server over one `PrismService` (opened by the lifespan, closed with it). No transport.
    `toolsets`: names (or `all`); None = `[mcp] toolsets` from the config, else the default (core)."""
    return _create_server(settings, toolsets=toolsets)


def _instructions(enabled: Sequence[str]) -> str:
    off = [n for n in mcp_toolsets.TOOLSETS if n not in enabled]
    if not off:
        return INSTRUCTIONS
    return (INSTRUCTIONS + f"\nToolsets off: {', '.join(off)} (rules administration, optimisation loop, outcome "
            "data, team budgets); `mcp-prism serve --toolsets NAME,...` or PRISM_TOOLSETS turns them on.")


def _create_server(settings: Settings, *, auth: AuthSettings | None = None,
                   token_verifier: "StaticTokenVerifier | None" = None,
                   toolsets: Sequence[str] | str | None = None, http: bool = False) -> MCPServer[Any]:
    enabled = mcp_toolsets.resolve(toolsets, config=settings.user_config)
    mcp_conf = settings.config.mcp
    roots = FileRoots.for_transport(mcp_conf.file_roots if mcp_conf else None, http=http, home=settings.home)
    shared = _SharedService(settings, roots)
    mcp: MCPServer[Any] = PrismMCPServer(
        "mcp-prism",
        title="mcp-prism model router",
        version=__version__,
        instructions=_instructions(enabled),
        lifespan=shared.lifespan,
        auth=auth,
        token_verifier=token_verifier,
    )
    tools = _ToolFilter(mcp, mcp_toolsets.tools_of(enabled))

    # ------------------------------------------------------------------ route_task
    @tools.tool(
        title="Route a task to a model",
        annotations=READ_ONLY,
        description=(
            "Pick the model for an AI task before calling one, from a one-line description or a task_type. "
            "Returns model, provider, tier, reasons, estimated cost, alternatives, and the ids for record_usage. "
            "Makes no model call."
        ),
    )
    async def route_task(
        description: Annotated[str | None, Field(
            description="The task in one sentence (a summary, not the prompt).")] = None,
        task_type: Annotated[str | None, Field(
            description="Task type if known (e.g. code_review, test_generation); skips the classifier.")] = None,
        context_tokens: Annotated[int, Field(
            ge=0, description="Prompt size in tokens when large (picks a model whose window fits); 0 = "
                              "typical.")] = 0,
    ) -> RouteResult:
        return await _tool("route_task", lambda: shared.get().route_task(description, task_type,
                                                                         context_tokens=context_tokens))

    # ------------------------------------------------------------------ compare_models
    @tools.tool(
        title="Compare model costs",
        annotations=READ_ONLY,
        description=(
            "Price candidate models side by side before changing a routing rule: cost per request and per "
            "month at a task type's observed token profile and volume (its current model marked), with "
            "observed quality and latency, and a markdown table."
        ),
    )
    async def compare_models(
        task_type: Annotated[str | None, Field(description="Task type whose profile to use.")] = None,
        models: Annotated[list[str] | None, Field(
            description="Models to compare; default: the rule's plus the cheapest of each tier.")] = None,
        input_tokens: Annotated[int | None, Field(
            ge=0, description="Prompt tokens per request, cached included; default: the profile's.")] = None,
        output_tokens: Annotated[int | None, Field(
            ge=0, description="Output tokens per request; default: the profile's.")] = None,
        cached_input_tokens: Annotated[int, Field(ge=0, description="Of input_tokens, cache reads.")] = 0,
    ) -> CompareResult:
        return await _tool("compare_models", lambda: shared.get().compare_models(
            task_type, models, input_tokens=input_tokens, output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens))

    # ------------------------------------------------------------------ cost_report
    @tools.tool(
        title="Cost report",
        annotations=READ_ONLY,
        description=(
            "Recorded AI spend for a period, grouped as asked: totals, monthly projection, what the current "
            "rules would save (monthly_saving_usd), top savings with evidence. USD strings; markdown is a "
            "ready summary."
        ),
    )
    async def cost_report(
        days: Annotated[int, Field(ge=1, le=3660, description="Last N days (unless since).")] = 30,
        since: Annotated[str | None, Field(description="First day, ISO date, inclusive.")] = None,
        until: Annotated[str | None, Field(description="End day, ISO date, exclusive.")] = None,
        group_by: Annotated[list[GroupColumn], Field(
            description="Group by, in order.")] = ["task_type"],  # noqa: B006 - pydantic copies it
        team: Annotated[str | None, Field(description="Only this team.")] = None,
        user: Annotated[str | None, Field(description="Only this user.")] = None,
        project: Annotated[str | None, Field(description="Only this project.")] = None,
        task_type: Annotated[str | None, Field(description="Only this task type.")] = None,
        model: Annotated[str | None, Field(description="Only this model.")] = None,
    ) -> CostReport:
        filters = {k: v for k, v in {"team": team, "user": user, "project": project, "task_type": task_type,
                                     "model": model}.items() if v}
        return await _tool("cost_report", lambda: shared.get().cost_report(
            days=days, since=since, until=until, group_by=group_by, filters=filters))

    # ------------------------------------------------------------------ update_routing_rule
    @tools.tool(
        title="Update a routing rule",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Replace a task type's routing rule with a new, audited version (validated against the catalog). "
            "Call with dry_run=true first: it shows the projected cost change over 30 days and notes, writing "
            "nothing. Undo with rollback_routing_rule."
        ),
    )
    async def update_routing_rule(
        rule: Annotated[dict[str, Any], Field(description=RULE_DESCRIPTION,
                                              json_schema_extra=_rule_param_schema())],
        author: Annotated[str, Field(description="Who changes it (name or email), for the audit log.")],
        reason: Annotated[str, Field(description="Why (e.g. 'experiment 12 qualified haiku').")],
        evidence: Annotated[str | None, Field(description="Experiment id, link or summary.")] = None,
        dry_run: Annotated[bool, Field(description="Validate and project only; write nothing.")] = False,
    ) -> RuleChange:
        async def update() -> RuleChange:
            svc = shared.get()
            change = await svc.update_routing_rule(rule, author=author, reason=reason, evidence=evidence,
                                                   dry_run=dry_run)
            return await install_sync.noted(svc, change)  # installed agents' models follow the rule

        return await _tool("update_routing_rule", update)

    # ------------------------------------------------------------------ rollback_routing_rule
    @tools.tool(
        title="Roll back a routing rule",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Make an earlier version of a task type's routing rule active again, as a new audited version. "
            "0 = shipped default; routing_rule_history lists versions. dry_run=true writes nothing."
        ),
    )
    async def rollback_routing_rule(
        task_type: Annotated[str, Field(description="Task type (e.g. code_review).")],
        to_version: Annotated[int, Field(ge=0, description="Version to restore; 0 = shipped default.")],
        author: Annotated[str, Field(description="Who rolls back, for the audit log.")],
        reason: Annotated[str, Field(description="Why (e.g. 'quality dropped after v3').")],
        dry_run: Annotated[bool, Field(description="Show the change only; write nothing.")] = False,
    ) -> RuleChange:
        async def rollback() -> RuleChange:
            svc = shared.get()
            change = await svc.rollback_rule(task_type, to_version, author=author, reason=reason, dry_run=dry_run)
            return await install_sync.noted(svc, change)

        return await _tool("rollback_routing_rule", rollback)

    # ------------------------------------------------------------------ routing_rule_history
    @tools.tool(
        title="Routing rule history",
        annotations=READ_ONLY,
        description=(
            "Every version of a task type's routing rule (0 = shipped default) with author, reason, evidence "
            "and time, and the audit log: find the version for rollback_routing_rule."
        ),
    )
    async def routing_rule_history(
        task_type: Annotated[str, Field(description="Task type (e.g. code_review).")],
    ) -> RuleHistory:
        return await _tool("routing_rule_history", lambda: shared.get().rule_history(task_type))

    # ------------------------------------------------------------------ record_usage
    @tools.tool(
        title="Record model usage",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Record a finished model request (not one sent through the mcp-prism gateway: it records those). "
            "Cost is computed server-side: never send it. Returns the event id for record_quality and "
            "cost_usd (null = unpriced)."
        ),
    )
    async def record_usage(
        model: Annotated[str, Field(description="Model that served it.")],
        task_type: Annotated[str | None, Field(description="From route_task; else give description.")] = None,
        description: Annotated[str | None, Field(description="Task in a sentence, if no task_type.")] = None,
        provider: Annotated[str | None, Field(description="Only for a model not in the catalog.")] = None,
        input_tokens: Annotated[int, Field(ge=0, description="All prompt tokens, cached included.")] = 0,
        cached_input_tokens: Annotated[int, Field(ge=0, description="Prompt tokens read from cache.")] = 0,
        cache_write_tokens: Annotated[int, Field(ge=0, description="Prompt tokens written to cache.")] = 0,
        output_tokens: Annotated[int, Field(ge=0, description="All output tokens, reasoning included.")] = 0,
        reasoning_tokens: Annotated[int, Field(ge=0, description="Reasoning part of output.")] = 0,
        latency_ms: Annotated[float, Field(ge=0, description="Duration, ms.")] = 0.0,
        ttft_ms: Annotated[float | None, Field(ge=0, description="Time to first token, ms.")] = None,
        status: Annotated[Status, Field(description="How it ended.")] = "ok",
        batch: Annotated[bool, Field(description="Sent via a batch API.")] = False,
        quality: Annotated[float | None, Field(ge=0, le=1, description="Score 0-1 if known now.")] = None,
        quality_source: Annotated[QualitySource | None, Field(description="Who scored quality.")] = None,
        user: Annotated[str | None, Field(description="User, for reports.")] = None,
        team: Annotated[str | None, Field(description="Team, for reports.")] = None,
        project: Annotated[str | None, Field(description="Project, for reports.")] = None,
        rule_id: Annotated[str | None, Field(description="From route_task.")] = None,
        rule_version: Annotated[int | None, Field(ge=0, description="From route_task.")] = None,
        router_version: Annotated[int | None, Field(ge=1, description="From route_task.")] = None,
        router_score: Annotated[float | None, Field(description="From route_task.")] = None,
        request_id: Annotated[str | None, Field(description="Your unique id; a repeat is stored once.")] = None,
        timestamp: Annotated[str | None, Field(description="ISO 8601 time; default now.")] = None,
        prompt: Annotated[str | None, Field(description="Stored only if capture is on.")] = None,
        response: Annotated[str | None, Field(description="Stored only if capture is on.")] = None,
    ) -> RecordResult:
        usage = UsageInput(
            model=model, task_type=task_type, description=description, provider=provider,
            input_tokens=input_tokens, cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens, output_tokens=output_tokens,
            reasoning_tokens=reasoning_tokens, latency_ms=latency_ms, ttft_ms=ttft_ms, status=status,
            batch=batch, quality=quality, quality_source=quality_source, user=user, team=team,
            project=project, source="mcp", rule_id=rule_id, rule_version=rule_version,
            request_id=request_id, timestamp=timestamp, prompt=prompt, response=response,
            router_version=router_version, router_score=router_score,
        )
        return await _tool("record_usage", lambda: shared.get().record_usage(usage))

    # ------------------------------------------------------------------ record_quality
    @tools.tool(
        title="Record output quality",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Score a recorded request's output once a human, a judge model or a check (tests, schema) assessed "
            "it; replaces an earlier score. Quality per model and task type justifies cheaper routing."
        ),
    )
    async def record_quality(
        event_id: Annotated[str, Field(description="Id from record_usage, or your request_id.")],
        score: Annotated[float, Field(ge=0, le=1, description="0 (unusable) to 1 (perfect).")],
        source: Annotated[QualitySource, Field(description="Who judged it.")],
    ) -> QualityResult:
        return await _tool("record_quality", lambda: shared.get().record_quality(event_id, score, source))

    # ------------------------------------------------------------------ list_models
    @tools.tool(
        title="List models",
        annotations=READ_ONLY,
        description=(
            "The model catalog: provider, tier, context window, capabilities, family, prices per million tokens "
            "and aliases of each model. Valid names for rules and comparisons."
        ),
    )
    async def list_models(
        tier: Annotated[TierName | None, Field(description="Only this tier.")] = None,
        provider: Annotated[str | None, Field(description="Only this provider (e.g. openai).")] = None,
    ) -> ModelList:
        return await _tool("list_models", lambda: shared.get().list_models(tier=tier, provider=provider))

    # ------------------------------------------------------------------ resources
    @mcp.resource("prism://rules", name="rules", title="Active routing rules", mime_type="application/json",
                  description="Every task type's active routing rule with version, author and reason.")
    async def rules_resource() -> str:
        views = await _resource("prism://rules", lambda: shared.get().list_rules())
        return _json([v.model_dump(mode="json") for v in views])

    @mcp.resource("prism://rules/{task_type}", name="rule", title="One routing rule and its history",
                  mime_type="application/json",
                  description="The active rule of one task type, its versions and audit log.")
    async def rule_resource(task_type: str) -> str:
        uri = f"prism://rules/{task_type}"
        active = await _resource(uri, lambda: shared.get().show_rule(task_type))
        history = await _resource(uri, lambda: shared.get().rule_history(task_type))
        return _json({"active": active.model_dump(mode="json"), **history.model_dump(mode="json")})

    @mcp.resource("prism://catalog", name="catalog", title="Model catalog", mime_type="application/json",
                  description="Models (tier, window, capabilities, prices) and aliases.")
    async def catalog_resource() -> str:
        models = await _resource("prism://catalog", lambda: shared.get().list_models())
        return _json(models.model_dump(mode="json"))

    # The optimisation loop's tools live beside their services, one adapter module per area.
    for module in LOOP_TOOL_MODULES:
        importlib.import_module(module).register_tools(tools, shared.get, _tool)
    harden_tools(mcp)  # every argument bounded: lengths, integer ranges, real booleans (mcp_prism/limits.py)
    importlib.import_module("mcp_prism.mcp_prompts").register_prompts(mcp)
    return mcp


class _ToolFilter:
    """Stands in for the server when tools are registered: a tool whose toolset is off is never added,
    so it can be neither listed nor called."""

    def __init__(self, mcp: MCPServer[Any], wanted: set[str]) -> None:
        self.mcp, self.wanted = mcp, wanted

    def tool(self, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            name = kw.get("name") or fn.__name__
            if name not in mcp_toolsets.TOOLSET_OF:  # a new tool needs a toolset in mcp_toolsets.TOOLSETS
                raise RuntimeError(f"tool {name} belongs to no toolset")
            return self.mcp.tool(**kw)(fn) if name in self.wanted else fn
        return register


# ---------------------------------------------------------------------------------------- transports
def _log_to_stderr() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def env_toolsets(settings: Settings, flag: str | None = None) -> tuple[str, ...]:
    """The toolsets a served process offers: --toolsets, else PRISM_TOOLSETS, else the config's."""
    return mcp_toolsets.resolve(flag, env=os.environ, config=settings.user_config)


def serve_stdio(settings: Settings, toolsets: Sequence[str] | str | None = None) -> None:
    """Serve MCP on stdin/stdout until the client closes the pipe. Logs go to stderr only."""
    _log_to_stderr()
    build_server(settings, env_toolsets(settings) if toolsets is None else toolsets).run()


class StaticTokenVerifier:
    """Accepts exactly one bearer token, compared in constant time. Never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    def __repr__(self) -> str:
        return "StaticTokenVerifier(token=***)"

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode("utf-8"), self._token):
            return AccessToken(token="***", client_id="mcp-prism-bearer", scopes=[])
        return None


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _with_port(name: str, port: int) -> str:
    name = name.strip()
    if name.startswith("["):
        return name if "]:" in name else f"{name}:{port}"
    if name.count(":") == 1:  # host:port
        return name
    return _authority(name, port)


def build_http_server(settings: Settings, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                      allowed_hosts: Sequence[str] = (), toolsets: Sequence[str] | str | None = None,
                      ) -> tuple[MCPServer[Any], TransportSecuritySettings]:
    """The server and its transport security for Streamable HTTP on host:port (no socket is bound).

    A token is required on any non-loopback address; when given, every request must carry it as
    `Authorization: Bearer <token>`. Host and Origin headers are checked (DNS-rebinding protection):
    accepted are host:port, the loopback names, and `allowed_hosts` (names clients use to reach a
    server bound to a wildcard address, e.g. "prism.internal" or "10.0.0.5:8765")."""
    if token is not None and not token.strip():
        raise ConfigError("the bearer token is empty; set PRISM_TOKEN to a long random value "
                          "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if not is_loopback(host) and token is None:
        raise ConfigError(f"serving on {host} (not a loopback address) needs a bearer token: set PRISM_TOKEN "
                          "to a long random value, or bind to 127.0.0.1")
    if not 0 < port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, not {port}")
    hosts = dict.fromkeys([_authority(host, port), *(_authority(h, port) for h in LOOPBACK_NAMES),
                           *(_with_port(h, port) for h in allowed_hosts if h.strip())])
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(hosts),
        allowed_origins=[f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts],
    )
    auth = verifier = None
    if token is not None:
        base = f"http://{_authority(host, port)}"
        auth = AuthSettings(issuer_url=base, resource_server_url=base + MCP_PATH,  # type: ignore[arg-type]
                            validate_token_resource=False)
        verifier = StaticTokenVerifier(token)
    return _create_server(settings, auth=auth, token_verifier=verifier, toolsets=toolsets, http=True), security


def serve_http(settings: Settings, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
               allowed_hosts: Sequence[str] = (), toolsets: Sequence[str] | str | None = None) -> None:
    """Serve MCP over Streamable HTTP at http://host:port/mcp until interrupted. Logs go to stderr."""
    _log_to_stderr()
    server, security = build_http_server(settings, host=host, port=port, token=token, allowed_hosts=allowed_hosts,
                                         toolsets=env_toolsets(settings) if toolsets is None else toolsets)
    if host in ("0.0.0.0", "::") and not allowed_hosts:
        log.warning("bound to %s: requests are accepted only with a Host header of %s; pass allowed_hosts with "
                    "the names clients use to reach this machine", host, ", ".join(security.allowed_hosts))
    log.info("mcp-prism: Streamable HTTP on http://%s%s (bearer token %s)", _authority(host, port), MCP_PATH,
             "required" if token else "not required: loopback only")
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=security, host=host)
    # log_config=None: uvicorn's own loggers (access log included) go through ours, to stderr, not stdout.
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, server_header=False)).run()


if __name__ == "__main__":
    serve_stdio(Settings.from_env())
