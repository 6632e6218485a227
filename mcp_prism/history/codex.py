"""Codex CLI's session logs: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl` (CODEX_HOME defaults to
~/.codex), one JSON object a line.

Each model response is logged as a `token_usage_record` (0.16x and later: the response id and its usage);
older logs have only `token_count` events, whose `last_token_usage` is the latest response's usage and
whose `total_token_usage` grows with each one (a repeated event repeats the total and counts once). The
model comes from the turn's `turn_context`, the working directory from `session_meta`. OpenAI's counting:
input includes cached tokens, output includes reasoning."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from mcp_prism.core.human_text import person_text
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.history.jsonl import complete_lines
from mcp_prism.history.records import LoggedRequest

AGENT = "codex"


def default_roots() -> list[Path]:
    return [Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex").expanduser()]


def find_logs(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    base = root / "sessions" if (root / "sessions").is_dir() else root
    return sorted(base.rglob("rollout-*.jsonl")) if base.is_dir() else []


def _tokens(u: dict[str, Any]) -> TokenUsage:
    n_in = int(u.get("input_tokens") or 0)
    cached = min(int(u.get("cached_input_tokens") or 0), n_in)
    write = min(int(u.get("cache_write_input_tokens") or 0), n_in - cached)
    out = int(u.get("output_tokens") or 0)
    return TokenUsage(input_tokens=n_in, cached_input_tokens=cached, cache_write_tokens=write, output_tokens=out,
                      reasoning_tokens=min(int(u.get("reasoning_output_tokens") or 0), out))


def read(path: Path, start: int = 0) -> Iterator[tuple[int, LoggedRequest | None]]:
    """(offset after the line, request or None) for each complete line from `start`. The lines before
    `start` are read again for their context (session, model, the person's words); the logs are small."""
    records = False
    with path.open("rb") as f:
        records = b"token_usage_record" in f.read()
    ctx: dict[str, Any] = {"model": "", "session": None, "cwd": None, "text": "", "total": None}
    for pos, line in complete_lines(path, 0):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        req = _line(entry, ctx, records, path)
        if pos > start:
            yield pos, req


def _line(entry: dict[str, Any], ctx: dict[str, Any], records: bool, path: Path) -> LoggedRequest | None:
    kind, p = entry.get("type"), entry.get("payload")
    if not isinstance(p, dict):
        return None
    if kind == "session_meta":
        ctx["session"], ctx["cwd"] = p.get("id") or p.get("session_id"), p.get("cwd")
    elif kind == "turn_context":
        ctx["model"] = p.get("model") or ctx["model"]
        ctx["cwd"] = p.get("cwd") or ctx["cwd"]
    elif kind == "response_item" and p.get("type") == "message" and p.get("role") == "user":
        ctx["text"] = person_text([p]) or ctx["text"]
    elif kind == "token_usage_record" and records and isinstance(p.get("usage"), dict):
        return _request(entry, ctx, str(p.get("response_id") or f"{path.name}:{entry.get('ordinal')}"),
                        _tokens(p["usage"]))
    elif kind == "event_msg" and p.get("type") == "token_count" and not records:
        info = p.get("info") or {}
        last, total = info.get("last_token_usage"), (info.get("total_token_usage") or {}).get("total_tokens")
        if not isinstance(last, dict) or total == ctx["total"]:
            return None
        ctx["total"] = total
        return _request(entry, ctx, f"{ctx['session']}:{total}", _tokens(last))
    return None


def _request(entry: dict[str, Any], ctx: dict[str, Any], key: str, tokens: TokenUsage) -> LoggedRequest | None:
    if not ctx["model"]:
        return None
    try:
        ts = datetime.fromisoformat(str(entry.get("timestamp")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return LoggedRequest(agent=AGENT, key=key, ts=ts, model=ctx["model"], provider="openai", tokens=tokens,
                         session_id=ctx["session"], cwd=ctx["cwd"], text=ctx["text"])
