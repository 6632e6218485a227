"""CLI commands for team scale: virtual keys (`mcp-prism keys create|list|rotate|revoke`) and budgets
(`mcp-prism budget set|status|list`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from mcp_prism.core.budgets import PERIODS, SCOPES
from mcp_prism.service import PrismService
from mcp_prism.team.budgets import BudgetList, BudgetService, BudgetView
from mcp_prism.team.keys import KeyCreated, KeyInfo, KeyService


def keys_markdown(keys: list[KeyInfo]) -> str:
    if not keys:
        return "no keys: create one with `mcp-prism keys create --team T`"
    rows = ["| id | team | user | project | name | created | state |", "|---|---|---|---|---|---|---|"]
    for k in keys:
        state = "active" if k.active else f"revoked {k.revoked_at[:10] if k.revoked_at else ''}"
        rows.append(f"| {k.id} | {k.team} | {k.user or ''} | {k.project or ''} | {k.name or ''} | "
                    f"{k.created_at[:10]} | {state} |")
    return "\n".join(rows)


def created_markdown(c: KeyCreated, verb: str = "created") -> str:
    extra = f" (replaces {c.key.rotated_from}, now revoked)" if c.key.rotated_from else ""
    return (f"{verb} key {c.key.id} for team {c.key.team}{extra}\n\n    {c.secret}\n\n"
            "This is the only time the key is shown: only its hash is stored. Give it to the client as its API key.")


def _usd(d: Decimal | None) -> str:
    return "" if d is None else f"${d:.4f}"


def budgets_markdown(budgets: list[BudgetView]) -> str:
    if not budgets:
        return "no budgets: set one with `mcp-prism budget set team T --hard 100`"
    rows = ["| scope | subject | period | spent | reserved | remaining | soft | hard | rpm | tpm | resets | state |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for b in budgets:
        rows.append(f"| {b.scope} | {b.subject} | {b.period} | {_usd(b.spent_usd)} | {_usd(b.reserved_usd)} | "
                    f"{_usd(b.remaining_usd)} | {_usd(b.soft_limit_usd)} | {_usd(b.hard_limit_usd)} | "
                    f"{b.rpm or ''} | {b.tpm or ''} | {b.resets_at[:16]}Z | {b.state}"
                    + (" (downgrade)" if b.downgrade else "") + " |")
    return "\n".join(rows)


async def cmd_keys_create(svc: PrismService, a: argparse.Namespace) -> Any:
    c = await KeyService(svc.store).create(a.team, user=a.user, project=a.project, name=a.name)
    return c, created_markdown(c)


async def cmd_keys_list(svc: PrismService, a: argparse.Namespace) -> Any:
    keys = await KeyService(svc.store).list(team=a.team, include_revoked=a.all)
    return keys, keys_markdown(keys.keys)


async def cmd_keys_rotate(svc: PrismService, a: argparse.Namespace) -> Any:
    c = await KeyService(svc.store).rotate(a.key_id)
    return c, created_markdown(c, "rotated: new") + "\nA running gateway refuses the old key within seconds."


async def cmd_keys_revoke(svc: PrismService, a: argparse.Namespace) -> Any:
    k = await KeyService(svc.store).revoke(a.key_id)
    return k, f"key {k.id} revoked ({k.revoked_at}); a running gateway refuses it within seconds"


async def cmd_budget_set(svc: PrismService, a: argparse.Namespace) -> Any:
    b = await BudgetService(svc.store).set_budget(a.scope, a.subject, a.period, soft_limit_usd=a.soft,
                                                  hard_limit_usd=a.hard, rpm=a.rpm, tpm=a.tpm,
                                                  downgrade=a.downgrade)
    return b, budgets_markdown([b])


async def cmd_budget_status(svc: PrismService, a: argparse.Namespace) -> Any:
    found: BudgetList = await BudgetService(svc.store).budget_status(scope=a.scope, subject=a.subject,
                                                                      period=a.period)
    return found, budgets_markdown(found.budgets)


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """Add this area's subcommands: `add(name, help)` returns an argparse parser; set `handler=`."""
    keys = add("keys", "virtual API keys for the gateway: create (shown once), list, rotate, revoke")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = add("create", "a new key for a team (and optionally a user and project); the secret is shown once", ksub)
    p.add_argument("--team", required=True)
    p.add_argument("--user")
    p.add_argument("--project")
    p.add_argument("--name", help="a note on what the key is for")
    p.set_defaults(handler=cmd_keys_create)
    p = add("list", "keys (never their secrets), active ones unless --all", ksub)
    p.add_argument("--team", help="only this team's keys")
    p.add_argument("--all", action="store_true", help="include revoked keys")
    p.set_defaults(handler=cmd_keys_list)
    p = add("rotate", "a new secret with the same labels; the old key is revoked", ksub)
    p.add_argument("key_id")
    p.set_defaults(handler=cmd_keys_rotate)
    p = add("revoke", "refuse a key from now on (running gateways within seconds)", ksub)
    p.add_argument("key_id")
    p.set_defaults(handler=cmd_keys_revoke)

    budget = add("budget", "USD budgets and rate limits per key, user, team or project")
    bsub = budget.add_subparsers(dest="budget_command", metavar="ACTION", required=True)
    p = add("set", "create or change a budget (spend so far in the window is kept)", bsub)
    p.add_argument("scope", choices=SCOPES)
    p.add_argument("subject", help="the key id, user, team or project name")
    p.add_argument("--period", choices=PERIODS, default="month", help="UTC window (default month)")
    p.add_argument("--soft", type=Decimal, help="soft limit in USD: an alert when crossed (once per window)")
    p.add_argument("--hard", type=Decimal, help="hard limit in USD: requests that could pass it get a 429")
    p.add_argument("--rpm", type=int, help="requests per minute (per gateway replica)")
    p.add_argument("--tpm", type=int, help="tokens per minute (per gateway replica)")
    p.add_argument("--downgrade", action="store_true",
                   help="near the soft limit, route rule-routed requests to the rule's next cheaper model")
    p.set_defaults(handler=cmd_budget_set)
    for name, text in (("status", "spent, reserved, remaining and reset time of budgets (filters optional)"),
                       ("list", "every budget with its current window")):
        p = add(name, text, bsub)
        p.add_argument("scope", nargs="?", choices=SCOPES)
        p.add_argument("subject", nargs="?")
        p.add_argument("--period", choices=PERIODS)
        p.set_defaults(handler=cmd_budget_status)
