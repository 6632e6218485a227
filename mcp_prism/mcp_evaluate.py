"""MCP tools of the optimisation loop: evaluate (filled in by issue 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register_tools(mcp: Any, get_service: Callable[[], Any], tool: Callable[..., Any]) -> None:
    """Add this area's tools to `mcp`; `tool(name, call)` runs a service call with the shared error handling."""
