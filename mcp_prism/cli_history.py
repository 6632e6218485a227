"""CLI command `import-history`: the agents' local logs into the store (see mcp_prism/history/)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mcp_prism.history.records import AGENTS
from mcp_prism.history.service import HistoryImporter
from mcp_prism.service import PrismService


async def cmd_import_history(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await HistoryImporter(svc, machine=a.machine, user=a.user).run(
        a.agent, path=a.path, since=a.since, project=a.project)
    return r, r.markdown


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    p = add("import-history", "import the usage Claude Code, OpenCode and Codex CLI logged on this machine; "
                              "re-running imports only what is new")
    p.add_argument("agent", nargs="?", default="all", choices=[*AGENTS, "all"],
                   help="whose logs (default all)")
    p.add_argument("--path", help="the folder holding the logs (default: each agent's own: CLAUDE_CONFIG_DIR or "
                                  "~/.claude, $XDG_DATA_HOME/opencode, CODEX_HOME or ~/.codex)")
    p.add_argument("--since", metavar="DATE", help="only requests on or after this day, like 2026-11-01")
    p.add_argument("--project", metavar="NAME", help="only requests made in this project (working folder name)")
    p.add_argument("--machine", help="label for this machine (default its host name)")
    p.add_argument("--user", help="label for whose history this is (default PRISM_USER or the login name)")
    p.set_defaults(handler=cmd_import_history)
