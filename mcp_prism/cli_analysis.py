"""CLI commands of the optimisation loop's analysis end: `analyze` (with a team-level target), `team-promote`,
`monitor check|list`, `alerts`, `review-due`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from mcp_prism.loop import team_target
from mcp_prism.loop.analysis import AnalysisService
from mcp_prism.loop.monitoring import MonitorService
from mcp_prism.service import PrismService


def _config(svc: PrismService, a: argparse.Namespace) -> dict[str, Any]:
    """The user's config file: `[analysis]`, `[monitoring]`, `[alerts]` live there."""
    settings = getattr(svc, "settings", None)  # the CLI opened the service from the one loaded config
    return settings.user_config if settings else {}


def _aligned(text: str) -> str:
    from mcp_prism.cli import aligned

    return aligned(text)


async def cmd_analyze(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await AnalysisService(svc, _config(svc, a)).analyze(days=a.days, quality_target=a.quality_target,
                                                            budget=a.budget, seed=a.seed)
    return r, _aligned(r.markdown)


async def cmd_team_promote(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await team_target.apply(svc, quality_target=a.quality_target, budget=a.budget, seed=a.seed,
                                author=a.author, reason=a.reason, monitor_days=a.monitor_days,
                                auto_rollback=a.auto_rollback)
    return r, _aligned(r.markdown)


def _target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quality-target", type=float, default=None, metavar="SHARE",
                   help="team-level target: keep this share (like 0.95) of the strong models' quality overall at "
                        "the lowest cost; chosen on half the outcome data, certified on the other half")
    p.add_argument("--budget", type=Decimal, default=None, metavar="USD",
                   help="the dual: the best quality spending at most this (USD over the outcome items)")
    p.add_argument("--seed", type=int, default=0, help="seed of the half split (default 0)")


async def cmd_monitor_check(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await MonitorService(svc, _config(svc, a)).check_monitors()
    return r, _aligned(r.markdown)


async def cmd_monitor_list(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await MonitorService(svc, _config(svc, a)).list_monitors()
    return r, _aligned(r.markdown)


async def cmd_alerts(svc: PrismService, a: argparse.Namespace) -> Any:
    monitor = MonitorService(svc, _config(svc, a))
    if a.ack is not None:
        alert = await monitor.ack_alert(a.ack)
        return alert, f"alert {alert.id} acknowledged: {alert.message}"
    r = await monitor.alerts(open_only=not a.all)
    return r, _aligned(r.markdown)


async def cmd_review_due(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await MonitorService(svc, _config(svc, a)).review_due()
    return r, _aligned(r.markdown)


def _days(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= n <= 3660:
        raise argparse.ArgumentTypeError(f"{value} must be between 1 and 3660")
    return n


def _alert_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an alert id (a whole number)") from None


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """Add this area's subcommands: `add(name, help)` returns an argparse parser; set `handler=`."""
    p = add("analyze", "the task-model matrix: where each task type runs, where it should, the evidence, "
                       "and the monthly saving")
    p.add_argument("--days", type=_days, default=30, help="the last N days of usage (default 30)")
    _target_options(p)
    p.set_defaults(handler=cmd_analyze)

    p = add("team-promote", "apply a team-level target: promote the task types it sends to cheaper models as rule "
                            "versions, each watched by a monitor")
    _target_options(p)
    p.add_argument("--author", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--monitor-days", type=int, default=14)
    p.add_argument("--auto-rollback", action="store_true", help="roll a type back on a regression")
    p.set_defaults(handler=cmd_team_promote)

    monitor = add("monitor", "watch promoted rule versions for quality regressions")
    msub = monitor.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    p = add("check", "check every watched rule version now: alert on a regression, roll back if asked, "
                     "deliver pending alerts to the webhook", msub)
    p.set_defaults(handler=cmd_monitor_check)
    p = add("list", "every monitor and its status", msub)
    p.set_defaults(handler=cmd_monitor_list)

    p = add("alerts", "open alerts (regressions, rollbacks, reviews due)")
    p.add_argument("--all", action="store_true", help="include acknowledged alerts")
    p.add_argument("--ack", type=_alert_id, metavar="ID", help="acknowledge one alert")
    p.set_defaults(handler=cmd_alerts)

    p = add("review-due", "rules due for re-evaluation and cheaper models worth an experiment")
    p.set_defaults(handler=cmd_review_due)
