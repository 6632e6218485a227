"""MCP tools for team scale: budgets (`set_budget`, `budget_status`).

Keys are created on the command line only (`mcp-prism keys create`): a secret shown once belongs in a
terminal, not in an agent's context. No `from __future__ import annotations` here, as in mcp_server.py:
the SDK reads the tools' signatures at registration, from real annotation objects.
"""

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism.mcp_server import READ_ONLY
from mcp_prism.team.budgets import BudgetList, BudgetService, BudgetView

ScopeName = Literal["key", "user", "team", "project"]
PeriodName = Literal["day", "week", "month"]


def register_tools(mcp: Any, get_service: Callable[[], Any], tool: Callable[..., Any]) -> None:
    """Add this area's tools to `mcp`; `tool(name, call)` runs a service call with the shared error handling."""

    def budgets() -> BudgetService:
        return BudgetService(get_service().store)

    @mcp.tool(
        title="Set a budget",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Create or change the USD budget (and optional rate limits) of a virtual key, user, team or project "
            "per day, week or month (UTC windows; weeks start Monday). The gateway reserves each request's "
            "estimated cost before calling the provider and answers 429 when the hard limit would be passed; "
            "crossing the soft limit raises an alert once per window. Spend already in the window is kept."
        ),
    )
    async def set_budget(
        scope: Annotated[ScopeName, Field(description="What the budget is for: key, user, team or project.")],
        subject: Annotated[str, Field(description="The key id (from `mcp-prism keys list`), user, team or "
                                                  "project name.")],
        period: Annotated[PeriodName, Field(description="The window the limits apply to.")] = "month",
        soft_limit_usd: Annotated[Decimal | None, Field(ge=0, description="Alert when spend passes this.")] = None,
        hard_limit_usd: Annotated[Decimal | None, Field(ge=0, description="Refuse requests that could pass "
                                                                          "this (429).")] = None,
        rpm: Annotated[int | None, Field(ge=1, description="Requests per minute, per gateway replica.")] = None,
        tpm: Annotated[int | None, Field(ge=1, description="Tokens per minute, per gateway replica.")] = None,
        downgrade: Annotated[bool, Field(description="Near the soft limit, route rule-routed requests to the "
                                                     "rule's next cheaper model.")] = False,
    ) -> BudgetView:
        return await tool("set_budget", lambda: budgets().set_budget(
            scope, subject, period, soft_limit_usd=soft_limit_usd, hard_limit_usd=hard_limit_usd, rpm=rpm, tpm=tpm,
            downgrade=downgrade))

    @mcp.tool(
        title="Budget status",
        annotations=READ_ONLY,
        description=(
            "Where budgets stand in their current window: spent, reserved by requests in flight, remaining, "
            "when the window resets, and the state (ok, soft_exceeded, exhausted). Without filters: every budget."
        ),
    )
    async def budget_status(
        scope: Annotated[ScopeName | None, Field(description="Only budgets of this scope.")] = None,
        subject: Annotated[str | None, Field(description="Only budgets of this key id, user, team or project.")] = None,
        period: Annotated[PeriodName | None, Field(description="Only budgets of this period.")] = None,
    ) -> BudgetList:
        return await tool("budget_status", lambda: budgets().budget_status(scope=scope, subject=subject,
                                                                             period=period))
