"""CLI commands of learned routers: `router train|list|show|promote` (a mixed rule, monitored)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from mcp_prism.loop.routers import RouterService, RouterView
from mcp_prism.service import PrismService


class RouterList(BaseModel):
    routers: list[RouterView]


async def cmd_train(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await RouterService(svc).train(a.task_type, cheap=a.cheap, strong=a.strong, target=a.target,
                                       tolerance=a.tolerance, margin_z=a.margin, test_share=a.test_share,
                                       seed=a.seed, author=a.author, reason=a.reason)
    return r, r.markdown


async def cmd_list(svc: PrismService, a: argparse.Namespace) -> Any:
    routers = await RouterService(svc).list(a.task_type)
    text = "\n\n".join(v.markdown for v in routers) or "no learned routers yet: `mcp-prism router train TASK_TYPE`"
    return RouterList(routers=routers), text


async def cmd_show(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await RouterService(svc).show(a.task_type, a.version)
    return r, r.markdown


async def cmd_promote(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await RouterService(svc).promote(a.task_type, a.version, author=a.author, reason=a.reason,
                                         monitor_days=a.monitor_days, auto_rollback=not a.no_auto_rollback,
                                         threshold=a.threshold)
    return r, r.markdown


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """Add this area's subcommands: `add(name, help)` returns an argparse parser; set `handler=`."""
    router = add("router", "learned per-request routers inside a task type (mixed rules)")
    rsub = router.add_subparsers(dest="router_command", metavar="ACTION", required=True)
    p = add("train", "train a router from the task type's outcome data (experiments, imported outcomes): "
                     "threshold frozen on calibration folds, expected quality and cost measured on a held-out part",
            rsub)
    p.add_argument("task_type")
    p.add_argument("--cheap", help="the cheap model (default: the only candidate in the data)")
    p.add_argument("--strong", help="the strong model (default: the experiments' baseline)")
    p.add_argument("--target", type=float, default=0.95, help="share of the strong model's quality to keep (0.95)")
    p.add_argument("--tolerance", type=float, default=0.0, help="numeric scores: 'as good' within this (0)")
    p.add_argument("--margin", type=float, default=1.0, help="standard errors of margin on the threshold (1)")
    p.add_argument("--test-share", type=float, default=0.3, help="share of items held out to measure it (0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--author", required=True)
    p.add_argument("--reason", required=True)
    p.set_defaults(handler=cmd_train)
    p = add("list", "stored routers and what they are expected to do", rsub)
    p.add_argument("task_type", nargs="?")
    p.set_defaults(handler=cmd_list)
    p = add("show", "one stored router version", rsub)
    p.add_argument("task_type")
    p.add_argument("version", type=int)
    p.set_defaults(handler=cmd_show)
    p = add("promote", "make the task type's rule a mixed rule with this router version (a new rule version, "
                       "monitored; a regression rolls it back)", rsub)
    p.add_argument("task_type")
    p.add_argument("version", type=int)
    p.add_argument("--author", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--monitor-days", type=int, default=14)
    p.add_argument("--threshold", type=float, default=None,
                   help="acceptable share the monitor requires (default: the router's held-out lower bound, "
                        "at most 0.9)")
    p.add_argument("--no-auto-rollback", action="store_true", help="alert only; do not roll back on a regression")
    p.set_defaults(handler=cmd_promote)
