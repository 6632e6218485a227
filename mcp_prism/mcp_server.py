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

from mcp_prism import __version__
from mcp_prism.config import Settings, is_loopback
from mcp_prism.core.rules import RULE_SCHEMA
from mcp_prism.errors import ConfigError, PrismError, UnknownName
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
Status = Literal["ok", "rate_limited", "timeout", "provider_error", "invalid_request", "cancelled", "error"]
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
Typical loop: call route_task before a model call (it names the model to use), make the call with
that model, then call record_usage with the tokens, latency and the rule_id/rule_version route_task
returned (cost is computed server-side), and record_quality once the output has been judged.
cost_report shows spend and savings; compare_models prices alternatives for a task type;
update_routing_rule / rollback_routing_rule change routing (versioned and audited, dry_run first).
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
    "The new routing rule for one task type, a JSON object. Required: task_type, primary (model name or "
    "alias). Optional: fallbacks (ordered models tried when the primary does not fit), complexity_upgrades "
    "([{min_boost: 1|2, model}] used when route_task sees a harder request), context_upgrade (bool, move to "
    "a model whose window fits the prompt), required_capabilities (subset of tools, vision, json, "
    "reasoning, fim; every model named must have them), min_context (every model must accept this many "
    "tokens). Example: {\"task_type\": \"test_generation\", \"primary\": \"gpt-5-mini\", \"fallbacks\": "
    "[\"claude-haiku-4-5\"]}. The full JSON Schema is this parameter's schema; list_models gives valid "
    "model names and capabilities."
)


# ---------------------------------------------------------------------------------------- shared service
class _SharedService:
    """One `PrismService` per server, opened by the first session's lifespan and closed by the last.

    The SDK enters the lifespan once for stdio and Streamable HTTP, and once per connection for in-process
    clients; sharing keeps one store connection and rule cache per server either way. Static resources
    get no `Context`, so tools and resources all reach the service through this object."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: PrismService | None = None
        self.users = 0
        self.lock = anyio.Lock()

    @asynccontextmanager
    async def lifespan(self, _server: MCPServer[Any]) -> AsyncIterator[PrismService]:
        async with self.lock:
            if self.service is None:
                self.service = await PrismService.open(self.settings)
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
        raise ToolError(str(e)) from None
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
def build_server(settings: Settings) -> MCPServer[Any]:
    """The MCP server over one `PrismService` (opened by the lifespan, closed with it). No transport."""
    return _create_server(settings)


def _create_server(settings: Settings, *, auth: AuthSettings | None = None,
                   token_verifier: "StaticTokenVerifier | None" = None) -> MCPServer[Any]:
    shared = _SharedService(settings)
    mcp: MCPServer[Any] = MCPServer(
        "mcp-prism",
        title="mcp-prism model router",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=shared.lifespan,
        auth=auth,
        token_verifier=token_verifier,
    )

    # ------------------------------------------------------------------ route_task
    @mcp.tool(
        title="Route a task to a model",
        annotations=READ_ONLY,
        description=(
            "Choose the model for one AI task before you make the model call. Give a short description of "
            "the task (it is classified into a task type) or a task_type directly, plus context_tokens when "
            "the prompt is large. Returns the model and provider to use, its tier, the task type and the "
            "classifier's confidence, the reasons and signals behind the choice, the estimated cost of a "
            "typical request, cheaper/stronger alternatives, and rule_id/rule_version: pass those two to "
            "record_usage after the call. Reads only and cheap (no model call, no network): call it for every task."
        ),
    )
    async def route_task(
        description: Annotated[str | None, Field(
            description="What the task is, in a sentence (e.g. 'write unit tests for the parser'). "
                        "Not the prompt itself: send a summary and pass the prompt size as context_tokens.")] = None,
        task_type: Annotated[str | None, Field(
            description="The task type, when you know it (e.g. code_review, test_generation, bug_investigation); "
                        "skips the classifier. See list of types in prism://rules.")] = None,
        context_tokens: Annotated[int, Field(
            ge=0, description="Size of the prompt in tokens, if known; a prompt larger than a model's context "
                              "window moves the choice to a model that fits. 0 = unknown/typical.")] = 0,
    ) -> RouteResult:
        return await _tool("route_task", lambda: shared.get().route_task(description, task_type,
                                                                         context_tokens=context_tokens))

    # ------------------------------------------------------------------ compare_models
    @mcp.tool(
        title="Compare model costs",
        annotations=READ_ONLY,
        description=(
            "Price candidate models side by side before changing a routing rule. Give a task_type (uses its "
            "observed token profile and monthly volume, and marks the model the current rule routes to with "
            "current=true), and/or an explicit list of models, and/or token counts per request. Returns "
            "candidates sorted by cost per request with monthly cost at the observed volume, observed "
            "quality and latency where usage was recorded, and a markdown table."
        ),
    )
    async def compare_models(
        task_type: Annotated[str | None, Field(
            description="Task type to compare for (e.g. code_review); its current model is marked current.")] = None,
        models: Annotated[list[str] | None, Field(
            description="Models or aliases to compare (e.g. ['gpt-5-mini', 'claude-haiku-4-5']); default: the "
                        "rule's models plus the cheapest few of each tier.")] = None,
        input_tokens: Annotated[int | None, Field(
            ge=0, description="Prompt tokens per request (cached ones included); default: the task type's "
                              "observed or typical profile.")] = None,
        output_tokens: Annotated[int | None, Field(
            ge=0, description="Output tokens per request (reasoning included); default: the profile's.")] = None,
        cached_input_tokens: Annotated[int, Field(
            ge=0, description="How many of input_tokens are cache reads (cheaper on most providers).")] = 0,
    ) -> CompareResult:
        return await _tool("compare_models", lambda: shared.get().compare_models(
            task_type, models, input_tokens=input_tokens, output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens))

    # ------------------------------------------------------------------ cost_report
    @mcp.tool(
        title="Cost report",
        annotations=READ_ONLY,
        description=(
            "Report recorded AI spend for a period, grouped as asked, with the monthly projection, what the "
            "current routing rules would cost instead (monthly_saving_usd), and the top savings opportunities "
            "with their evidence. Period: the last `days` days, or since/until (ISO dates, until exclusive). "
            "Filter by team, user, project, task_type or model. Amounts are USD decimal strings; the "
            "markdown field is a ready-to-show summary."
        ),
    )
    async def cost_report(
        days: Annotated[int, Field(ge=1, le=3660, description="Look back this many days (ignored when since is "
                                                            "given).")] = 30,
        since: Annotated[str | None, Field(description="First day, ISO date like 2026-11-01 (inclusive).")] = None,
        until: Annotated[str | None, Field(description="End day, ISO date (exclusive); default tomorrow.")] = None,
        group_by: Annotated[list[GroupColumn], Field(
            description="Columns to group by, in order.")] = ["task_type"],  # noqa: B006 - pydantic copies it
        team: Annotated[str | None, Field(description="Only this team's usage.")] = None,
        user: Annotated[str | None, Field(description="Only this user's usage.")] = None,
        project: Annotated[str | None, Field(description="Only this project's usage.")] = None,
        task_type: Annotated[str | None, Field(description="Only this task type.")] = None,
        model: Annotated[str | None, Field(description="Only this model (canonical name).")] = None,
    ) -> CostReport:
        filters = {k: v for k, v in {"team": team, "user": user, "project": project, "task_type": task_type,
                                     "model": model}.items() if v}
        return await _tool("cost_report", lambda: shared.get().cost_report(
            days=days, since=since, until=until, group_by=group_by, filters=filters))

    # ------------------------------------------------------------------ update_routing_rule
    @mcp.tool(
        title="Update a routing rule",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Replace the active routing rule of one task type with a new version (all later route_task calls "
            "use it). Validated against the schema and the model catalog (unknown models, missing "
            "capabilities, too-small context windows are refused with the reason). Call with dry_run=true "
            "first: it returns the projected cost change over the last 30 days of recorded usage and notes "
            "(e.g. a tier downgrade without evidence) and writes nothing. A real change is versioned and "
            "audited with author, reason and evidence; undo it with rollback_routing_rule."
        ),
    )
    async def update_routing_rule(
        rule: Annotated[dict[str, Any], Field(description=RULE_DESCRIPTION,
                                              json_schema_extra=_rule_param_schema())],
        author: Annotated[str, Field(description="Who makes the change (name or email); kept in the audit log.")],
        reason: Annotated[str, Field(description="Why (e.g. 'experiment 12: haiku matched sonnet quality').")],
        evidence: Annotated[str | None, Field(
            description="Link or summary of the evidence (experiment id, report); shown in cost reports.")] = None,
        dry_run: Annotated[bool, Field(description="Only validate and project the cost change; write "
                                                   "nothing.")] = False,
    ) -> RuleChange:
        return await _tool("update_routing_rule", lambda: shared.get().update_routing_rule(
            rule, author=author, reason=reason, evidence=evidence, dry_run=dry_run))

    # ------------------------------------------------------------------ rollback_routing_rule
    @mcp.tool(
        title="Roll back a routing rule",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Make an earlier version of a task type's routing rule active again, as a new version (history "
            "is never rewritten). Version 0 is the shipped default; routing_rule_history lists the versions. "
            "dry_run=true shows the change and its projected cost without writing."
        ),
    )
    async def rollback_routing_rule(
        task_type: Annotated[str, Field(description="The task type whose rule to roll back (e.g. code_review).")],
        to_version: Annotated[int, Field(ge=0, description="The version to restore; 0 = the shipped default.")],
        author: Annotated[str, Field(description="Who makes the change; kept in the audit log.")],
        reason: Annotated[str, Field(description="Why the rollback (e.g. 'quality dropped after v3').")],
        dry_run: Annotated[bool, Field(description="Only show what would change; write nothing.")] = False,
    ) -> RuleChange:
        return await _tool("rollback_routing_rule", lambda: shared.get().rollback_rule(
            task_type, to_version, author=author, reason=reason, dry_run=dry_run))

    # ------------------------------------------------------------------ routing_rule_history
    @mcp.tool(
        title="Routing rule history",
        annotations=READ_ONLY,
        description=(
            "Every version of one task type's routing rule (version 0 = shipped default) with author, reason, "
            "evidence and time, plus the audit log of updates and rollbacks. Use it to find the version "
            "to pass to rollback_routing_rule."
        ),
    )
    async def routing_rule_history(
        task_type: Annotated[str, Field(description="The task type (e.g. code_review).")],
    ) -> RuleHistory:
        return await _tool("routing_rule_history", lambda: shared.get().rule_history(task_type))

    # ------------------------------------------------------------------ record_usage
    @mcp.tool(
        title="Record model usage",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Record one model request after it finished, so cost reports and routing profiles reflect it. "
            "Send the token counts as the provider reported them (input_tokens includes cached reads and "
            "cache writes; output_tokens includes reasoning tokens), latency, status, and the "
            "rule_id/rule_version route_task returned. Do NOT send a cost: it is computed server-side from "
            "the catalog prices in force at the request's time. Give request_id to make retries safe "
            "(a repeat is not stored twice; duplicate=true). Returns the event id (for record_quality), the "
            "task type, the canonical model and the computed cost_usd (null if the model has no known price)."
        ),
    )
    async def record_usage(
        model: Annotated[str, Field(description="Model that served the request (name or alias).")],
        task_type: Annotated[str | None, Field(
            description="Task type (from route_task); required unless description is given.")] = None,
        description: Annotated[str | None, Field(
            description="Short task description, classified when task_type is not given.")] = None,
        provider: Annotated[str | None, Field(
            description="Provider; required only for a model not in the catalog (recorded as unpriced).")] = None,
        input_tokens: Annotated[int, Field(ge=0, description="All prompt tokens, cached ones included.")] = 0,
        cached_input_tokens: Annotated[int, Field(ge=0, description="Prompt tokens read from cache.")] = 0,
        cache_write_tokens: Annotated[int, Field(ge=0, description="Prompt tokens written to cache.")] = 0,
        output_tokens: Annotated[int, Field(ge=0, description="All generated tokens, reasoning included.")] = 0,
        reasoning_tokens: Annotated[int, Field(ge=0, description="Reasoning tokens (part of output).")] = 0,
        latency_ms: Annotated[float, Field(ge=0, description="Total request time in milliseconds.")] = 0.0,
        ttft_ms: Annotated[float | None, Field(ge=0, description="Time to first token, ms.")] = None,
        status: Annotated[Status, Field(description="How the request ended.")] = "ok",
        batch: Annotated[bool, Field(description="Sent through the provider's batch API (discounted).")] = False,
        quality: Annotated[float | None, Field(
            ge=0, le=1, description="Quality score 0..1 if already known (else use record_quality later).")] = None,
        quality_source: Annotated[QualitySource | None, Field(
            description="Who scored the quality; required with quality.")] = None,
        user: Annotated[str | None, Field(description="User who made the request.")] = None,
        team: Annotated[str | None, Field(description="Team, for cost reports.")] = None,
        project: Annotated[str | None, Field(description="Project, for cost reports.")] = None,
        rule_id: Annotated[str | None, Field(description="rule_id returned by route_task.")] = None,
        rule_version: Annotated[int | None, Field(ge=0, description="rule_version returned by route_task.")] = None,
        router_version: Annotated[int | None, Field(
            ge=1, description="router_version returned by route_task (a mixed rule's learned router).")] = None,
        router_score: Annotated[float | None, Field(description="router_score returned by route_task.")] = None,
        request_id: Annotated[str | None, Field(
            description="Your id for this request; makes retries idempotent and can be used by "
                        "record_quality.")] = None,
        timestamp: Annotated[str | None, Field(
            description="When the request was made, ISO 8601 (e.g. 2026-11-25T10:00:00Z); default now.")] = None,
        prompt: Annotated[str | None, Field(
            description="The prompt; stored only for task types configured with capture_samples.")] = None,
        response: Annotated[str | None, Field(
            description="The response; stored only for task types configured with capture_samples.")] = None,
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
    @mcp.tool(
        title="Record output quality",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Score the output of a recorded request, 0 (unusable) to 1 (perfect), once a human, a judge "
            "model or an automated check (tests passed, schema valid) has assessed it. Replaces any earlier "
            "score of that request (previous_quality is returned). Quality per model and task type is what "
            "justifies moving a task type to a cheaper model."
        ),
    )
    async def record_quality(
        event_id: Annotated[str, Field(description="The id record_usage returned, or your request_id.")],
        score: Annotated[float, Field(ge=0, le=1, description="Quality, 0 (unusable) to 1 (perfect).")],
        source: Annotated[QualitySource, Field(description="Who judged it.")],
    ) -> QualityResult:
        return await _tool("record_quality", lambda: shared.get().record_quality(event_id, score, source))

    # ------------------------------------------------------------------ list_models
    @mcp.tool(
        title="List models",
        annotations=READ_ONLY,
        description=(
            "The model catalog: every model with provider, tier (simple/standard/complex), context window, "
            "capabilities, current prices per million tokens (input, output, cached input) and aliases. "
            "Filter by tier and/or provider. Use it to pick valid model names for rules and comparisons."
        ),
    )
    async def list_models(
        tier: Annotated[TierName | None, Field(description="Only models of this tier.")] = None,
        provider: Annotated[str | None, Field(description="Only this provider's models (e.g. openai).")] = None,
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
        importlib.import_module(module).register_tools(mcp, shared.get, _tool)
    importlib.import_module("mcp_prism.mcp_prompts").register_prompts(mcp)
    return mcp


# ---------------------------------------------------------------------------------------- transports
def _log_to_stderr() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def serve_stdio(settings: Settings) -> None:
    """Serve MCP on stdin/stdout until the client closes the pipe. Logs go to stderr only."""
    _log_to_stderr()
    build_server(settings).run()


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
                      allowed_hosts: Sequence[str] = ()) -> tuple[MCPServer[Any], TransportSecuritySettings]:
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
    return _create_server(settings, auth=auth, token_verifier=verifier), security


def serve_http(settings: Settings, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
               allowed_hosts: Sequence[str] = ()) -> None:
    """Serve MCP over Streamable HTTP at http://host:port/mcp until interrupted. Logs go to stderr."""
    _log_to_stderr()
    server, security = build_http_server(settings, host=host, port=port, token=token, allowed_hosts=allowed_hosts)
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
