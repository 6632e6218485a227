"""The usage event: one model request, as recorded. Everything reported is derived from these."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from mcp_prism.core.pricing import PriceSnapshot, TokenUsage

# invalid_usage: answered, but the provider's usage block was malformed (tokens estimated, see providers/usage_check)
STATUSES = ("ok", "rate_limited", "timeout", "provider_error", "invalid_request", "cancelled", "error", "invalid_usage")
QUALITY_SOURCES = ("human", "judge", "automated")
SOURCES = ("mcp", "gateway", "import", "demo")

Source = Literal["mcp", "gateway", "import", "demo"]

# No provider bills more than this many tokens of one kind for one request (the largest context windows on sale
# are 1-10M tokens). A count above it is a typo or an attack, and one such event would dominate every report.
MAX_REQUEST_TOKENS = 10_000_000
TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def token_bound_problems(tokens: TokenUsage) -> list[str]:
    """Counts no provider could bill for one request (a whole number from 0 to MAX_REQUEST_TOKENS each)."""
    out = []
    for name in TOKEN_FIELDS:
        value = getattr(tokens, name)
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"{name} must be a whole number of tokens, not {type(value).__name__}")
        elif value > MAX_REQUEST_TOKENS:
            out.append(f"{name} = {value} is more than any provider bills for one request "
                       f"(at most {MAX_REQUEST_TOKENS:,} tokens of each kind)")
    return out


def new_id() -> str:
    """32 hex characters, time-ordered (nanosecond clock, then 64 random bits) so that inserts
    append to the primary-key index instead of scattering through it."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(tz=UTC)


def iso(ts: datetime) -> str:
    """Fixed-width UTC ISO text so that SQL string order is time order."""
    if ts.tzinfo is not UTC:
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # 5x faster than strftime


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(slots=True)
class UsageEvent:
    task_type: str
    model: str
    provider: str
    tokens: TokenUsage
    latency_ms: float
    cost_usd: Decimal | None  # None: the model had no known price (reported as unpriced)
    prices: PriceSnapshot | None
    ts: datetime = field(default_factory=utcnow)
    id: str = field(default_factory=new_id)
    ttft_ms: float | None = None
    status: str = "ok"
    batch: bool = False
    quality: float | None = None
    quality_source: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    source: str = "mcp"
    rule_id: str | None = None
    rule_version: int | None = None
    request_id: str | None = None
    prompt: str | None = None  # kept only when the task type opts in to sample capture
    response: str | None = None
    api_key_id: str | None = None  # the virtual key's public id (never the secret)
    cache_hit: bool = False  # answered from the response cache: cost 0, `saved_usd` what the answer cost
    saved_usd: Decimal | None = None
    # imported history (`mcp-prism import-history`): where the request was logged
    machine: str | None = None
    session_id: str | None = None
    agent: str | None = None  # claude-code | opencode | codex
    sidechain: bool = False  # a subagent's request
    agent_cost_usd: Decimal | None = None  # the cost the agent logged itself, kept beside ours
    router_version: int | None = None  # the learned router a mixed rule consulted, and its hardness score
    router_score: float | None = None
