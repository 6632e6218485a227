"""MCP prompts: the skills package's slash commands offered to any MCP client.

The text is the packaged command file's body (`commands/<name>.md`, shipped as `mcp_prism/_bundle`), so
the slash commands installed into OpenCode/Claude Code and these prompts never drift apart. Claude Code
shows them as `/mcp__prism__<name>`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from mcp_prism.install import Doc, commands

# The commands that do a task (each names its task type); /route and /costs are tool calls, not prompts.
PROMPTS: tuple[str, ...] = ("review", "test", "docs", "security", "deploy-check")
DEFAULT_TARGET = "(nothing given: use the uncommitted changes in the working tree)"


def render_prompt(doc: Doc, target: str | None) -> str:
    """The command body with its `$ARGUMENTS` filled in, as the tools do for a slash command."""
    return doc.body.strip().replace("$ARGUMENTS", target.strip() if target and target.strip() else DEFAULT_TARGET)


def register_prompts(mcp: Any) -> None:
    """Add /review, /test, /docs, /security and /deploy-check as MCP prompts with one `target` argument."""
    docs = commands()
    for name in PROMPTS:
        _register(mcp, name, docs[name])


def _register(mcp: Any, name: str, doc: Doc) -> None:
    hint = str(doc.meta.get("argument-hint", "")).strip("[]<>")

    async def prompt(target: str = "") -> str:
        return render_prompt(doc, target)

    # Set as objects, not strings: the argument's description is per command, and the SDK evaluates
    # string annotations (this module's `from __future__ import annotations`) without our locals.
    prompt.__annotations__ = {"target": Annotated[str, Field(description=f"What to work on: {hint}.")],
                              "return": str}

    title = f"/{name}: {doc.task_type}" if doc.task_type else f"/{name}"
    mcp.prompt(name=name, title=title, description=str(doc.meta["description"]))(prompt)
