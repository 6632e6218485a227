"""CLI commands over recorded usage events: `mcp-prism events void --id/--source/--project [--dry-run]`.

A voided event leaves every report, rollup, observed profile and analysis; the row is kept in the store's
`voided_events` table and the void is in the audit log (who, why, how many, how much).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mcp_prism.core.report import money
from mcp_prism.results import VoidResult
from mcp_prism.service import PrismService


def show_void(r: VoidResult) -> str:
    if not r.events:
        return f"no usage events match {r.selector}; nothing {'would be ' if r.dry_run else ''}voided"
    verb = "would void" if r.dry_run else "voided"
    span = f" from {r.first_ts} to {r.last_ts}" if r.first_ts else ""
    tail = " (dry run: nothing changed; run again without --dry-run)" if r.dry_run else \
        " (kept in voided_events; recorded in the audit log)"
    unpriced = f", {r.unpriced} unpriced" if r.unpriced else ""
    return f"{verb} {r.events} event(s) matching {r.selector}{span}: {money(r.cost_usd)}{unpriced}{tail}"


async def cmd_void(svc: PrismService, a: argparse.Namespace) -> Any:
    kind, value = next((k, v) for k, v in (("id", a.id), ("source", a.source), ("project", a.project))
                       if v is not None)
    r = await svc.void_events(kind, value, author=a.author or "", reason=a.reason or "", dry_run=a.dry_run)
    return r, show_void(r)


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    events = add("events", "recorded usage events: void the ones that must not count")
    esub = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    p = add("void", "take events out of every report and rollup (kept aside, audited)", esub)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="one event: its id, or the request id it was recorded with")
    which.add_argument("--source", help="every event of a source: mcp, gateway, import or demo")
    which.add_argument("--project", help="every event of a project")
    p.add_argument("--author", help="who voids them (required unless --dry-run)")
    p.add_argument("--reason", help="why (required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="show what would be voided; change nothing")
    p.set_defaults(handler=cmd_void)
