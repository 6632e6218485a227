"""MCP tools of the optimisation loop's analysis end: analyze, check_monitors, list_alerts,
acknowledge_alert, review_due."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism.loop.analysis import AnalysisResult, AnalysisService
from mcp_prism.loop.monitoring import AlertList, AlertView, CheckResult, MonitorService, ReviewDue
from mcp_prism.mcp_server import READ_ONLY
from mcp_prism.service import PrismService

# Checking may roll a rule back (with auto_rollback) and posts alerts to the team's webhook.
# may roll a rule back, and posts alerts to the configured webhook (outside this server)
CHECK = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
WRITES_ALERTS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                open_world_hint=False)


def _config(svc: PrismService) -> dict[str, Any]:
    """The service's own (already checked) config; a service built without settings has none."""
    settings = getattr(svc, "settings", None)
    return settings.user_config if settings else {}


def register_tools(mcp: Any, get_service: Callable[[], Any], tool: Callable[..., Any]) -> None:
    """Add this area's tools to `mcp`; `tool(name, call)` runs a service call with the shared error handling."""

    def analysis() -> AnalysisService:
        svc = get_service()
        return AnalysisService(svc, _config(svc))

    def monitor() -> MonitorService:
        svc = get_service()
        return MonitorService(svc, _config(svc))

    @mcp.tool(
        title="Analyse the task-model matrix",
        annotations=READ_ONLY,
        description=(
            "Per task type with usage: models used, the rule's and the recommended model, monthly cost and "
            "saving (negative = upgrade) with evidence, strongest first (qualified experiment, observed quality, "
            "errors or rework; a tier mismatch alone is a hypothesis with the experiment to test it, not a "
            "recommendation). Totals now vs after deployable changes. markdown is ready to show."
        ),
    )
    async def analyze(
        days: Annotated[int, Field(ge=1, le=3660, description="Days of usage to read.")] = 30,
        quality_target: Annotated[float | None, Field(gt=0, le=1, description=(
            "Team-level target: keep this share (e.g. 0.95) of the strong models' quality overall at the lowest "
            "cost; returns team_plan (types to move, chosen on half the outcome data, certified on the other)."))
        ] = None,
        budget: Annotated[Decimal | None, Field(ge=0, description=(
            "Dual of quality_target: best quality spending at most this many USD over the outcome items."))] = None,
    ) -> AnalysisResult:
        return await tool("analyze", lambda: analysis().analyze(days=days, quality_target=quality_target,
                                                                budget=budget))

    @mcp.tool(
        title="Check monitored rule versions",
        annotations=CHECK,
        description=(
            "Check watched (recently promoted) rule versions: acceptable share of rated requests vs the "
            "threshold and the baseline version. A regression raises an alert and, with auto_rollback, restores "
            "the baseline. Posts pending alerts to the [alerts] webhook_url (failures retried next check)."
        ),
    )
    async def check_monitors(
        deliver: Annotated[bool, Field(description="Post pending alerts to the webhook.")] = True,
    ) -> CheckResult:
        return await tool("check_monitors", lambda: monitor().check_monitors(deliver=deliver))

    @mcp.tool(
        title="List alerts",
        annotations=READ_ONLY,
        description=(
            "Alerts, newest first: regressions of promoted rules, automatic rollbacks, rules due for review; "
            "whether each was delivered and acknowledged (see acknowledge_alert)."
        ),
    )
    async def list_alerts(
        include_acknowledged: Annotated[bool, Field(description="Also list acknowledged alerts.")] = False,
    ) -> AlertList:
        return await tool("list_alerts", lambda: monitor().alerts(open_only=not include_acknowledged))

    @mcp.tool(
        title="Acknowledge an alert",
        annotations=WRITES_ALERTS,
        description=(
            "Acknowledge an alert (id from list_alerts): it leaves the open list and is no longer posted to "
            "the webhook. Repeating is harmless."
        ),
    )
    async def acknowledge_alert(
        alert_id: Annotated[int, Field(ge=1, description="Alert id, from list_alerts.")],
    ) -> AlertView:
        return await tool("acknowledge_alert", lambda: monitor().ack_alert(alert_id))

    @mcp.tool(
        title="Rules due for re-evaluation",
        annotations=WRITES_ALERTS,
        description=(
            "Rules no experiment evaluated within [monitoring] review_after_days (default 90; shipped defaults "
            "never were) and untried cheaper same-tier models, as proposed experiments with candidates, reasons, "
            "monthly saving if they qualify and the command to start each. One review_due alert per task type a day."
        ),
    )
    async def review_due(
        raise_alerts: Annotated[bool, Field(description="Raise review_due alerts.")] = True,
    ) -> ReviewDue:
        return await tool("review_due", lambda: monitor().review_due(raise_alerts=raise_alerts))
