"""MCP prompts: the skills package's slash commands offered to any MCP client (filled in by issue 5)."""

from __future__ import annotations

from typing import Any


def register_prompts(mcp: Any) -> None:
    """Add the commands (/review, /test, /docs, /security, /deploy-check, ...) as MCP prompts."""
