"""CLI commands for batch requests (`mcp-prism batch submit|poll|status|list|cancel`).

The gateway queues requests and runs submit + poll by itself; these commands do the same by hand (e.g. from cron
when no gateway runs) and show what is queued.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mcp_prism.cli import aligned
from mcp_prism.loop.batch import (
    STATUSES,
    BatchService,
    info_markdown,
    list_markdown,
    poll_markdown,
    submit_markdown,
)
from mcp_prism.service import PrismService


async def cmd_submit(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await BatchService(svc).submit_pending(limit=a.limit)
    return r, aligned(submit_markdown(r))


async def cmd_poll(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await BatchService(svc).poll()
    return r, poll_markdown(r)


async def cmd_status(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await BatchService(svc).get(a.request_id)
    return r, info_markdown(r)


async def cmd_list(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await BatchService(svc).list_requests(a.status, a.limit)
    return r, aligned(list_markdown(r))


async def cmd_cancel(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await BatchService(svc).cancel(a.request_id)
    return r, info_markdown(r)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= n <= 10_000:
        raise argparse.ArgumentTypeError(f"{value} must be from 1 to 10000")
    return n


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """Add `batch` and its actions: `add(name, help)` returns an argparse parser; set `handler=`."""
    batch = add("batch", "non-urgent requests sent through the providers' batch APIs (half price, answered later)")
    bsub = batch.add_subparsers(dest="batch_command", metavar="ACTION", required=True)

    p = add("submit", "send every queued request to its provider's batch API (one batch per provider and model)",
            bsub)
    p.add_argument("--limit", type=_positive, default=None, help="at most this many requests")
    p.set_defaults(handler=cmd_submit)

    p = add("poll", "check open provider batches; store the answers and record their cost at the batch price", bsub)
    p.set_defaults(handler=cmd_poll)

    p = add("status", "one request's status and, once answered, the answer", bsub)
    p.add_argument("request_id", help="the id the gateway answered with (batch_req_...)")
    p.set_defaults(handler=cmd_status)

    p = add("list", "batch requests, newest first", bsub)
    p.add_argument("--status", choices=STATUSES, help="only requests in this state")
    p.add_argument("--limit", type=_positive, default=100, help="how many to show (default 100)")
    p.set_defaults(handler=cmd_list)

    p = add("cancel", "cancel a request (an answer already paid for is still recorded)", bsub)
    p.add_argument("request_id")
    p.set_defaults(handler=cmd_cancel)
