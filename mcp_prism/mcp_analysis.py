"""MCP tools of the optimisation loop's analysis end: analyze, check_monitors, list_alerts,
acknowledge_alert, review_due."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism.config import Settings
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
    settings = getattr(svc, "settings", None) or Settings.from_env()
    return settings.user_config


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
            "For every task type with recorded usage: the model(s) it runs on, the rule's model, the recommended "
            "model, monthly volume and cost, the monthly saving (negative for an upgrade) and the evidence, "
            "strongest first: a qualified experiment, recorded quality of a cheaper model, under-provisioning "
            "signals (low quality, errors, rework), or a tier mismatch alone — a hypothesis with the experiment "
            "command to test it, never a recommendation to deploy. Totals: monthly cost now vs after the "
            "deployable recommendations, and the potential if the hypotheses hold. markdown is ready to show."
        ),
    )
    async def analyze(
        days: Annotated[int, Field(ge=1, le=3660, description="Look back this many days of usage.")] = 30,
        quality_target: Annotated[float | None, Field(gt=0, le=1, description=(
            "Team-level target: keep this share (like 0.95) of the strong models' quality overall at the lowest "
            "cost. Returns team_plan: the task types to move to cheaper models, chosen on half the outcome data "
            "and certified (lower bound) on the other half."))] = None,
        budget: Annotated[Decimal | None, Field(ge=0, description=(
            "The dual of quality_target: the best quality spending at most this many USD over the outcome "
            "items."))] = None,
    ) -> AnalysisResult:
        return await tool("analyze", lambda: analysis().analyze(days=days, quality_target=quality_target,
                                                                budget=budget))

    @mcp.tool(
        title="Check monitored rule versions",
        annotations=CHECK,
        description=(
            "Check every watched (recently promoted) rule version: the share of its rated requests that are "
            "acceptable against the monitor's threshold, with the baseline version's share for comparison. A "
            "regression raises an alert and, when the monitor has auto_rollback, restores the baseline rule "
            "version. Watches past their end with no regression pass. Pending alerts are posted to the "
            "configured webhook ([alerts] webhook_url); failed deliveries are retried on the next check."
        ),
    )
    async def check_monitors(
        deliver: Annotated[bool, Field(description="Post pending alerts to the configured webhook.")] = True,
    ) -> CheckResult:
        return await tool("check_monitors", lambda: monitor().check_monitors(deliver=deliver))

    @mcp.tool(
        title="List alerts",
        annotations=READ_ONLY,
        description=(
            "Alerts raised by monitoring and reviews, newest first: regressions of promoted rule versions, "
            "automatic rollbacks, and rules due for re-evaluation, with whether each was delivered to the "
            "webhook and acknowledged. Acknowledge one with acknowledge_alert."
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
            "Mark one alert (by the id list_alerts shows) as acknowledged, so it leaves the open list and is no "
            "longer posted to the webhook. Acknowledging twice is harmless."
        ),
    )
    async def acknowledge_alert(
        alert_id: Annotated[int, Field(ge=1, description="The alert's id, from list_alerts.")],
    ) -> AlertView:
        return await tool("acknowledge_alert", lambda: monitor().ack_alert(alert_id))

    @mcp.tool(
        title="Rules due for re-evaluation",
        annotations=WRITES_ALERTS,
        description=(
            "Routing rules not evaluated by an experiment for the review period ([monitoring] review_after_days, "
            "default 90; a task type on the shipped default rule was never evaluated) and cheaper models of the "
            "same tier nobody has tried on that task type, as proposed experiments: candidates, reasons, the "
            "estimated monthly saving if they qualify, and the command to start each. Raises one review_due "
            "alert per task type per day."
        ),
    )
    async def review_due(
        raise_alerts: Annotated[bool, Field(description="Record review_due alerts (one per task type per "
                                                        "day).")] = True,
    ) -> ReviewDue:
        return await tool("review_due", lambda: monitor().review_due(raise_alerts=raise_alerts))
