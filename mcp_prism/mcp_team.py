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
            "Create or change a USD budget (and rate limits) of a virtual key, user, team or project per UTC "
            "day, week or month. The gateway refuses (429) requests that could pass the hard limit; the soft "
            "limit raises an alert once a window. Spend so far is kept."
        ),
    )
    async def set_budget(
        scope: Annotated[ScopeName, Field(description="What the budget is for.")],
        subject: Annotated[str, Field(description="Key id (`mcp-prism keys list`), user, team or project.")],
        period: Annotated[PeriodName, Field(description="Budget window.")] = "month",
        soft_limit_usd: Annotated[Decimal | None, Field(ge=0, description="Alert above this.")] = None,
        hard_limit_usd: Annotated[Decimal | None, Field(ge=0, description="Refuse requests above this.")] = None,
        rpm: Annotated[int | None, Field(ge=1, description="Requests per minute per replica.")] = None,
        tpm: Annotated[int | None, Field(ge=1, description="Tokens per minute per replica.")] = None,
        downgrade: Annotated[bool, Field(description="Near the soft limit, route to the rule's next cheaper "
                                                     "model.")] = False,
    ) -> BudgetView:
        return await tool("set_budget", lambda: budgets().set_budget(
            scope, subject, period, soft_limit_usd=soft_limit_usd, hard_limit_usd=hard_limit_usd, rpm=rpm, tpm=tpm,
            downgrade=downgrade))

    @mcp.tool(
        title="Budget status",
        annotations=READ_ONLY,
        description=(
            "Budgets in their current window: spent, reserved in flight, remaining, reset time and state (ok, "
            "soft_exceeded, exhausted). No filter = all."
        ),
    )
    async def budget_status(
        scope: Annotated[ScopeName | None, Field(description="Only this scope.")] = None,
        subject: Annotated[str | None, Field(description="Only this key id, user, team or project.")] = None,
        period: Annotated[PeriodName | None, Field(description="Only this period.")] = None,
    ) -> BudgetList:
        return await tool("budget_status", lambda: budgets().budget_status(scope=scope, subject=subject,
                                                                             period=period))
