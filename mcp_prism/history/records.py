"""What a parser hands the import service: one API request an agent logged. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from mcp_prism.core.pricing import TokenUsage

AGENTS = ("claude-code", "opencode", "codex")


@dataclass(slots=True)
class LoggedRequest:
    agent: str  # claude-code | opencode | codex
    key: str  # the agent's own ids for the request: the same request logged twice has the same key
    ts: datetime
    model: str
    provider: str  # genai-prices provider id where known (anthropic, openai, ...)
    tokens: TokenUsage  # mcp_prism's convention: input includes cache reads and writes, output reasoning
    session_id: str | None
    cwd: str | None
    text: str  # the person's own words of the turn that caused it ('' when none)
    sidechain: bool = False
    latency_ms: float = 0.0  # 0 when the log does not say
    agent_cost_usd: Decimal | None = None  # the cost the agent logged, when it logs one


class UnsupportedLayout(Exception):
    """A log in a layout this version does not read (raised by parsers, turned into a PrismError)."""
