"""`mcp-prism sync`: keep the models written into installed agents and commands in step with the rules.

`mcp-prism install` writes each task's current model into the agents and commands it installs (for
agents that do not send their requests through the gateway) and records the project in
`$PRISM_HOME/installs.json`. `sync` re-runs each recorded install with the rules in force: files still as
mcp-prism wrote them are updated; files the user edited (their hash differs from the project's manifest)
are kept and reported. `rules set`, `rules rollback` and `experiment promote` call it after a change.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mcp_prism.errors import InvalidInput, PrismError
from mcp_prism.install import MANIFEST, TOOLS, InstallChange, install, rule_models

log = logging.getLogger(__name__)

REGISTRY = "installs.json"
REGISTRY_FORMAT = 1
WRITTEN = ("create", "update", "merge", "append", "remove")


# ==================================================================== the registry of installed projects
def _registry_path(home: Path) -> Path:
    return Path(home) / REGISTRY


def installed(home: Path) -> list[tuple[Path, str]]:
    """(project, tool) of every recorded install, in the order recorded."""
    path = _registry_path(home)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["installs"] if data.get("format") == REGISTRY_FORMAT else None
        out = [(Path(r["project"]), str(r["tool"])) for r in rows] if isinstance(rows, list) else None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        out = None
    if out is None:
        raise InvalidInput(f"{path} is damaged or from another mcp-prism version; delete it and run `mcp-prism "
                           "install` again in each project (the projects themselves are unaffected)")
    return out


def _save(home: Path, rows: list[tuple[Path, str]]) -> None:
    path = _registry_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": REGISTRY_FORMAT, "installs": [{"project": str(p), "tool": t} for p, t in rows]},
                      indent=2, ensure_ascii=False) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file


def remember(home: Path, project: Path, tool: str) -> None:
    rows = installed(home)
    if (project, tool) not in rows:
        _save(home, [*rows, (project, tool)])


def forget(home: Path, project: Path, tool: str) -> None:
    rows = installed(home)
    if (project, tool) in rows:
        _save(home, [r for r in rows if r != (project, tool)])


# ==================================================================== sync
class SyncedProject(BaseModel):
    project: str
    tool: str
    status: str  # synced, forgotten (no longer installed), failed
    updated: list[str] = []
    kept: list[InstallChange] = []  # files or keys the user changed: left as they are
    error: str | None = None


class SyncResult(BaseModel):
    dry_run: bool = False
    projects: list[SyncedProject]

    @property
    def updated(self) -> int:
        return sum(len(p.updated) for p in self.projects)


async def sync(svc: Any, *, dry_run: bool = False) -> SyncResult:
    """Re-run every recorded install with the rules in force; report what changed and what was kept."""
    home = svc.settings.home
    models = await rule_models(svc)
    task_types = list(getattr(svc, "task_types", None) or []) or None
    out: list[SyncedProject] = []
    for project, tool in installed(home):
        out.append(_sync_one(home, project, tool, models, task_types, dry_run))
    return SyncResult(dry_run=dry_run, projects=out)


def _sync_one(home: Path, project: Path, tool: str, models: Any, task_types: list[str] | None,
              dry_run: bool) -> SyncedProject:
    row = SyncedProject(project=str(project), tool=tool, status="synced")
    try:
        manifest = _manifest(project)
        settings = (manifest or {}).get("tools", {}).get(tool) if tool in TOOLS else None
        if manifest is None and (project / MANIFEST).is_file():  # damaged: install() says how to fix it
            settings = {}
        if not isinstance(settings, dict):
            row.status, row.error = "forgotten", "no longer installed here (uninstalled or folder gone)"
            if not dry_run:
                forget(home, project, tool)
            return row
        r = install(project, tool, template=settings.get("template"), gateway=settings.get("gateway"),
                    mcp_command=settings.get("mcp_command"), task_types=task_types, dry_run=dry_run,
                    models=models, refresh=True)  # toolsets and pin_models: as recorded
    except (PrismError, OSError) as e:  # one broken project must not stop the others (nor a rule change)
        row.status, row.error = "failed", str(e)
        return row
    row.updated = sorted({c.path for c in r.changes if c.action in WRITTEN and c.path != MANIFEST})
    row.kept = [c for c in r.changes if c.action == "keep"]
    return row


def _manifest(project: Path) -> dict[str, Any] | None:
    path = project / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def render(r: SyncResult) -> str:
    if not r.projects:
        return "No installed projects recorded: `mcp-prism install opencode|claude --dir PROJECT` records one."
    head = "mcp-prism sync" + (" (dry run: nothing written)" if r.dry_run else "")
    lines = [head, "", "| project | tool | status | updated | kept (changed by you) |", "|---|---|---|---|---|"]
    for p in r.projects:
        kept = "; ".join(f"{c.path}: {c.detail}" for c in p.kept) or "-"
        status = p.status if not p.error else f"{p.status}: {p.error}"
        lines.append(f"| {p.project} | {p.tool} | {status} | {', '.join(p.updated) or '-'} | {kept} |")
    return "\n".join(lines)


def summary(r: SyncResult) -> str:
    """One paragraph for the end of a rule change's output."""
    if not r.projects:
        return ""
    synced = [p for p in r.projects if p.status == "synced"]
    text = (f"Installed agents and commands: {r.updated} file(s) updated in {len(synced)} project(s) "
            "(`mcp-prism sync` shows details).")
    kept = [f"{Path(p.project) / c.path}" for p in synced for c in p.kept
            if c.path.endswith(".md") and c.detail.startswith("edited")]
    if kept:
        text += f" Kept, because you edited them (update their model: by hand): {', '.join(kept)}."
    failed = [f"{p.project} ({p.error})" for p in r.projects if p.status == "failed"]
    if failed:
        text += f" Not synced: {'; '.join(failed)}."
    return text


async def after_rule_change(svc: Any) -> str:
    """Sync after a rule changed; never fails the change itself (the rule is already saved)."""
    try:
        return summary(await sync(svc))
    except PrismError as e:
        return f"Installed projects not synced: {e}"


async def noted(svc: Any, change: Any) -> Any:
    """After a saved rule change made over MCP: sync, and add what happened to the change's notes."""
    if not change.dry_run:
        note = await after_rule_change(svc)
        if note:
            change.notes.append(note)
    return change


# ==================================================================== CLI
async def cmd_sync(svc: Any, a: argparse.Namespace) -> tuple[SyncResult, str]:
    r = await sync(svc, dry_run=a.dry_run)
    return r, render(r)


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    p = add("sync", "write the rules' current models into every project `mcp-prism install` set up (files you "
                    "edited are kept and listed)")
    p.add_argument("--dry-run", action="store_true", help="list the changes; write nothing")
    p.set_defaults(handler=cmd_sync)
