"""Claude Code's session logs: `<config>/projects/<cwd with / as ->/<session>.jsonl`, subagents under
`<session>/subagents/agent-*.jsonl`. One JSON object a line.

Claude Code writes each content block of an assistant message as its own entry with the message's id,
`requestId` and usage, so one API request appears several times: it counts once (the first entry, as
ccusage does). `<synthetic>` entries are local errors with zero usage and are skipped. A subagent's
entries carry `isSidechain: true`; its turns start with the prompt the main agent wrote."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from mcp_prism.core.human_text import person_text
from mcp_prism.history.jsonl import complete_lines, lines_before
from mcp_prism.history.records import LoggedRequest
from mcp_prism.providers.formats.anthropic import usage_of

AGENT = "claude-code"
_ASSISTANT = (b'"type":"assistant"', b'"type": "assistant"')
_USER = (b'"type":"user"', b'"type": "user"')


def default_roots() -> list[Path]:
    """Where Claude Code keeps its config: CLAUDE_CONFIG_DIR (comma-separated allowed), else the two homes."""
    env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if env:
        return [Path(p).expanduser() for p in env.split(",") if p.strip()]
    home = Path.home()
    return [home / ".config" / "claude", home / ".claude"]


def find_logs(root: Path) -> list[Path]:
    """The session logs under a config dir (its `projects/`), or under any folder given with --path."""
    base = root / "projects" if (root / "projects").is_dir() else root
    if base.is_file():
        return [base]
    return sorted(base.rglob("*.jsonl")) if base.is_dir() else []


def _user_text(entry: dict) -> str:
    if entry.get("isMeta") or entry.get("isCompactSummary"):
        return ""
    msg = entry.get("message")
    if not isinstance(msg, dict):
        return ""
    return person_text([{"role": "user", "content": msg.get("content")}])


def _is(line: bytes, marks: tuple[bytes, ...]) -> bool:
    return marks[0] in line or marks[1] in line


def _resume_text(path: Path, start: int) -> str:
    """The person's words of the turn in progress where the last import stopped."""
    for line in reversed(lines_before(path, start)):
        if _is(line, _USER) and b'"tool_result"' not in line:
            try:
                text = _user_text(json.loads(line))
            except ValueError:
                continue
            if text:
                return text
    return ""


def _json(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def read(path: Path, start: int = 0) -> Iterator[tuple[int, LoggedRequest | None]]:
    """(offset after the line, the request it logged or None) for each complete line from `start`.
    Repeats of a request within the file are yielded once; the caller dedups across files. Only lines that
    can matter are parsed: a person's turn, or an assistant entry with usage."""
    text = _resume_text(path, start) if start else ""
    seen: set[str] = set()
    for pos, line in complete_lines(path, start):
        req = None
        if _is(line, _USER):
            # tool output is not the person's, and is often most of a log's bytes: not parsed
            entry = None if b'"tool_result"' in line else _json(line)
            if entry is not None and entry.get("type") == "user":
                text = _user_text(entry) or text
        elif _is(line, _ASSISTANT) and b'"usage"' in line:
            entry = _json(line)
            req = _request(entry, text, seen) if entry is not None else None
        yield pos, req


def _request(entry: dict, text: str, seen: set[str]) -> LoggedRequest | None:
    msg = entry.get("message")
    if entry.get("type") != "assistant" or not isinstance(msg, dict) or not isinstance(msg.get("usage"), dict):
        return None
    model = msg.get("model")
    if not isinstance(model, str) or not model or model == "<synthetic>":
        return None
    mid, rid = msg.get("id"), entry.get("requestId")
    key = f"{mid}:{rid}" if mid and rid else f"uuid:{entry.get('uuid')}"
    if key in seen:
        return None
    seen.add(key)
    try:
        ts = datetime.fromisoformat(str(entry.get("timestamp")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return LoggedRequest(
        agent=AGENT, key=key, ts=ts, model=model, provider="anthropic", tokens=usage_of(msg).tokens(),
        session_id=entry.get("sessionId"), cwd=entry.get("cwd"), text=text,
        sidechain=bool(entry.get("isSidechain")),
    )
