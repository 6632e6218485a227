"""CLI of the web dashboard: `mcp-prism ui [--host --port]` serves it; `mcp-prism ui rater-link EXP --rater NAME`
makes a rating-only link for one experiment; `mcp-prism ui rater-revoke LINK` ends one."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from mcp_prism.config import Settings, is_loopback
from mcp_prism.errors import ConfigError
from mcp_prism.service import PrismService


def cmd_ui(settings: Settings, a: argparse.Namespace) -> int:
    import uvicorn

    from mcp_prism.config_check import check_settings
    from mcp_prism.ui.app import build_app

    check_settings(settings)
    token = os.environ.get("PRISM_GATEWAY_TOKEN") or None
    open_mode = is_loopback(a.host) and not a.require_login
    if not is_loopback(a.host) and token is None:
        # Virtual keys still sign in; the warning is for an owner who cannot promote or roll back.
        print("note: PRISM_GATEWAY_TOKEN is not set: virtual keys can view; nobody can promote or roll back")
    env_hosts = os.environ.get("PRISM_ALLOWED_HOSTS", "")
    allowed = frozenset([*a.allowed_host, *(h.strip() for h in env_hosts.split(",") if h.strip())])
    app = build_app(settings, open_mode=open_mode, admin_token=token, allowed_hosts=allowed)
    shown = f"[{a.host}]" if ":" in a.host else a.host
    print(f"mcp-prism dashboard on http://{shown}:{a.port}/ ({'open on loopback' if open_mode else 'sign-in needed'})",
          flush=True)
    try:
        uvicorn.run(app, host=a.host, port=a.port, log_level=os.environ.get("PRISM_UI_LOG_LEVEL", "warning"))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {a.host}:{a.port}: {exc.strerror or exc}; pick another --port") from None
    return 0


async def cmd_rater_link(svc: PrismService, a: argparse.Namespace) -> Any:
    from mcp_prism.ui.raters import RaterLinkService

    created = await RaterLinkService(svc).create(a.experiment_id, a.rater, created_by=a.created_by)
    base = a.base_url.rstrip("/")
    return created, (f"rating link for {created.link.rater} on experiment {created.link.experiment_id} "
                     f"(shown once; only its hash is stored):\n{base}{created.path}")


async def cmd_rater_revoke(svc: PrismService, a: argparse.Namespace) -> Any:
    from mcp_prism.ui.raters import RaterLinkService

    await RaterLinkService(svc).revoke(a.link_id)
    return {"revoked": a.link_id}, f"rater link {a.link_id} revoked"


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return n


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    p = add("ui", "the web dashboard (costs, task-model matrix, experiments, rules) and rating links for raters")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: open to you alone; any "
                                                       "other asks for the admin token or a virtual key)")
    p.add_argument("--port", type=_port, default=4100, help="port (default 4100)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another host name the browser uses to reach it (Host/Origin check); repeatable, also "
                        "PRISM_ALLOWED_HOSTS=a,b")
    p.add_argument("--require-login", action="store_true", help="ask for a token even on loopback")
    p.set_defaults(serve=cmd_ui)
    usub = p.add_subparsers(dest="ui_command", metavar="ACTION")
    q = add("rater-link", "a rating-only link for one experiment and one rater (no admin rights)", usub)
    q.add_argument("experiment_id")
    q.add_argument("--rater", required=True, help="the rater's name or email (their ratings are stored under it)")
    q.add_argument("--created-by", default="cli", help="who made the link (kept with it)")
    q.add_argument("--base-url", default="http://127.0.0.1:4100", help="the dashboard's address, for the link")
    q.set_defaults(handler=cmd_rater_link, serve=None)
    q = add("rater-revoke", "end a rater link (its id is on the experiment's page)", usub)
    q.add_argument("link_id")
    q.set_defaults(handler=cmd_rater_revoke, serve=None)
