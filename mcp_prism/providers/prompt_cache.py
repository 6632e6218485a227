"""Anthropic prompt caching: mark the long, stable prefix of a request (tools, then system) with
`cache_control` so that repeated requests read it from Anthropic's cache (cheaper, faster).

Anthropic caches the prompt prefix up to each marked block ("breakpoint"), in the order tools ->
system -> messages, for at most 4 breakpoints per request, and only when the prefix reaches the
model's minimum (`min_cacheable_tokens`). Below it the marker is ignored at no cost, so the token
estimate errs high (about 3.5 characters per token) rather than miss a cacheable prefix.

`mark_cache_control` is opt-in per routing rule (`prompt_cache: true`), for Anthropic-format upstreams
only. It is pure (returns a new body, never edits the one given), idempotent, and leaves every marker
the client placed as it is. Costing needs nothing new: Anthropic reports cache writes and reads
(`cache_creation_input_tokens`, `cache_read_input_tokens`), the format module folds them into the
neutral usage, and the catalog prices them at the cache-write and cache-read rates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MAX_BREAKPOINTS = 4
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
CHARS_PER_TOKEN = 3.5

# Minimum cacheable prefix per model (Anthropic's prompt-caching docs). Checked in order: first match wins.
_MINIMUMS: tuple[tuple[str, int], ...] = (
    (r"claude-(3-haiku|3-5-haiku|haiku-3)", 2048),
    (r"claude-haiku-4-5", 4096),
    (r"claude-opus-4-[56]", 4096),
    (r"claude-sonnet-4-6", 2048),
    (r"haiku", 2048),  # a Haiku not listed above
)
DEFAULT_MIN_TOKENS = 1024  # every other Sonnet and Opus (4, 4.1, 4.5, 3.7, ...)


def min_cacheable_tokens(model: str | None) -> int:
    """The shortest prefix (tokens) Anthropic caches for `model`."""
    name = (model or "").lower()
    for pattern, tokens in _MINIMUMS:
        if re.search(pattern, name):
            return tokens
    return DEFAULT_MIN_TOKENS


def estimate_tokens(value: Any) -> int:
    """A deliberately generous token estimate of a JSON value (text, or blocks and tool schemas)."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return int(len(text) / CHARS_PER_TOKEN) + 1


def _markers(value: Any) -> list[Mapping[str, Any]]:
    """Every cache_control marker inside a request part (blocks nest inside tool results)."""
    found: list[Mapping[str, Any]] = []
    if isinstance(value, Mapping):
        marker = value.get("cache_control")
        if isinstance(marker, Mapping):
            found.append(marker)
        for k, v in value.items():
            if k != "cache_control" and isinstance(v, list | Mapping):
                found.extend(_markers(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(_markers(v))
    return found


def count_breakpoints(body: Mapping[str, Any]) -> int:
    """Cache breakpoints already in the request (a top-level `cache_control`, automatic caching, takes one)."""
    n = 1 if isinstance(body.get("cache_control"), Mapping) else 0
    return n + len(_markers([body.get("tools"), body.get("system"), body.get("messages")]))


def mark_cache_control(body: Mapping[str, Any], *, min_tokens: int | None = None) -> dict[str, Any]:
    """`body` (an Anthropic Messages request) with `cache_control: {"type": "ephemeral"}` on the last
    system block when tools + system reach `min_tokens`, and on the last tool when the tools alone do,
    within the 4-breakpoint limit (the system marker first: it covers the tools too). A string system
    becomes one text block. `min_tokens` defaults to the minimum for `body["model"]`."""
    out = dict(body)
    if min_tokens is None:
        min_tokens = min_cacheable_tokens(body.get("model"))
    markers = _markers([body.get("tools"), body.get("system"), body.get("messages")])
    if any(m.get("ttl") not in (None, "5m") for m in markers):
        return out  # longer-lived client markers must come first; ours would break that order: leave it be
    free = MAX_BREAKPOINTS - count_breakpoints(body)
    tools = body.get("tools")
    tools = tools if isinstance(tools, list) and tools and all(isinstance(t, Mapping) for t in tools) else None
    system = body.get("system")
    tool_tokens = estimate_tokens(tools) if tools else 0

    if free > 0 and system:
        blocks: list[Any] | None
        if isinstance(system, str):
            blocks = [{"type": "text", "text": system}]
        elif isinstance(system, list) and all(isinstance(b, Mapping) for b in system):
            blocks = list(system)
        else:
            blocks = None  # not a shape Anthropic accepts: its own error will say so
        last = blocks[-1] if blocks else None
        if (blocks and last is not None and last.get("type") == "text" and last.get("text")
                and "cache_control" not in last
                and tool_tokens + estimate_tokens([b.get("text", "") for b in blocks]) >= min_tokens):
            blocks[-1] = {**last, "cache_control": dict(EPHEMERAL)}
            out["system"] = blocks
            free -= 1

    if free > 0 and tools and "cache_control" not in tools[-1] and tool_tokens >= min_tokens:
        out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": dict(EPHEMERAL)}]
    return out
