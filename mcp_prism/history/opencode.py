"""OpenCode's local storage as 1.18 writes it: one SQLite database, `$XDG_DATA_HOME/opencode/opencode.db`,
tables `session`, `message` and `part`, each row's JSON in `data`.

Each model call of an assistant turn ends with a `step-finish` part carrying that call's tokens and the
cost OpenCode computed; those parts are the requests (a message without one, e.g. aborted, counts from its
own totals). OpenCode counts `tokens.input` without cache reads and writes and `tokens.output` without
reasoning; they are added back to match mcp_prism's convention. A session with a parent is a subagent's.
Earlier versions kept JSON files under `storage/`; they are refused with a clear message."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mcp_prism.core.human_text import person_text
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.history.records import LoggedRequest, UnsupportedLayout

AGENT = "opencode"
SUPPORTED = "1.18"
_NEEDED = {"session": {"id", "parent_id", "directory", "version"},
           "message": {"id", "session_id", "time_updated", "data"},
           "part": {"id", "message_id", "session_id", "time_created", "data"}}


def default_roots() -> list[Path]:
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return [Path(data).expanduser() / "opencode"]


def find_logs(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    db = root / "opencode.db"
    if db.is_file():
        return [db]
    if (root / "storage" / "message").is_dir() or (root / "storage" / "session").is_dir():
        raise UnsupportedLayout(
            f"{root} holds OpenCode's older JSON storage (storage/message/...); this importer reads the SQLite "
            f"database OpenCode {SUPPORTED} writes (opencode.db). Run OpenCode {SUPPORTED} once to migrate it, "
            "then import again")
    return []


def _ms(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def _check_layout(db: sqlite3.Connection, path: Path) -> list[str]:
    """Fail clearly on a database this version cannot read; name the OpenCode versions it holds."""
    for table, cols in _NEEDED.items():
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if not cols <= have:
            raise UnsupportedLayout(
                f"{path} is not the layout OpenCode {SUPPORTED} writes (table {table!r} lacks "
                f"{sorted(cols - have)}); import-history supports OpenCode {SUPPORTED}")
    return [r[0] for r in db.execute("SELECT DISTINCT version FROM session")]


def read(path: Path, since_ms: int) -> tuple[list[LoggedRequest], int, list[str]]:
    """Requests of assistant messages updated at or after `since_ms`; the next watermark; the versions seen."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as e:
        raise UnsupportedLayout(f"cannot open OpenCode's database {path}: {e}") from None
    try:
        versions = _check_layout(db, path)
        rows = db.execute(
            "SELECT m.id, m.session_id, m.time_updated, m.data, s.directory, s.parent_id FROM message m "
            "JOIN session s ON s.id = m.session_id WHERE m.time_updated >= ? ORDER BY m.time_updated",
            (since_ms,)).fetchall()
        messages = {r[0]: (r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows}
        wanted = [mid for mid, m in messages.items() if m[2].get("role") == "assistant"]
        parents = {m[2].get("parentID") for m in messages.values() if m[2].get("role") == "assistant"}
        parts: dict[str, list[tuple[str, int, dict]]] = {}
        ids = [*wanted, *(p for p in parents if p)]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for pid, mid, created, data in db.execute(
                    f"SELECT id, message_id, time_created, data FROM part WHERE message_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY id", chunk):
                parts.setdefault(mid, []).append((pid, created, json.loads(data)))
    except sqlite3.Error as e:
        raise UnsupportedLayout(f"cannot read OpenCode's database {path}: {e}") from None
    finally:
        db.close()

    out: list[LoggedRequest] = []
    watermark = since_ms
    pending: list[int] = []
    for mid in wanted:
        session_id, updated, data, directory, parent_id = messages[mid]
        if not (data.get("time") or {}).get("completed") and not data.get("error"):
            pending.append(updated)  # still streaming: read it again next time
            continue
        watermark = max(watermark, updated)
        text = _text(parts.get(str(data.get("parentID")), []))
        steps = [(pid, created, p) for pid, created, p in parts.get(mid, []) if p.get("type") == "step-finish"]
        base = dict(agent=AGENT, model=str(data.get("modelID") or ""), provider=str(data.get("providerID") or ""),
                    session_id=session_id, cwd=(data.get("path") or {}).get("cwd") or directory, text=text,
                    sidechain=parent_id is not None)
        if not base["model"]:
            continue
        latency = _latency(data) if len(steps) <= 1 else 0.0
        if steps:
            for pid, created, p in steps:
                out.append(LoggedRequest(key=pid, ts=_ms(created), tokens=_tokens(p.get("tokens")),
                                         latency_ms=latency, agent_cost_usd=_cost(p.get("cost")), **base))
        elif _tokens(data.get("tokens")) != TokenUsage():
            out.append(LoggedRequest(key=mid, ts=_ms((data.get("time") or {}).get("created") or updated),
                                     tokens=_tokens(data.get("tokens")), latency_ms=latency,
                                     agent_cost_usd=_cost(data.get("cost")), **base))
    if pending:  # the boundary is read again next time; request ids make that harmless
        watermark = min(watermark, min(pending))
    return out, watermark, versions


def _text(user_parts: list[tuple[str, int, dict]]) -> str:
    texts = [p.get("text") for _, _, p in user_parts
             if p.get("type") == "text" and not p.get("synthetic") and isinstance(p.get("text"), str)]
    return person_text([{"role": "user", "content": [{"type": "text", "text": t} for t in texts]}])


def _tokens(raw: Any) -> TokenUsage:
    if not isinstance(raw, dict):
        return TokenUsage()
    cache = raw.get("cache") or {}
    read, write = int(cache.get("read") or 0), int(cache.get("write") or 0)
    reasoning = int(raw.get("reasoning") or 0)
    return TokenUsage(input_tokens=int(raw.get("input") or 0) + read + write, cached_input_tokens=read,
                      cache_write_tokens=write, output_tokens=int(raw.get("output") or 0) + reasoning,
                      reasoning_tokens=reasoning)


def _cost(raw: Any) -> Decimal | None:
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        return None


def _latency(data: dict) -> float:
    t = data.get("time") or {}
    if t.get("created") and t.get("completed"):
        return float(max(0, int(t["completed"]) - int(t["created"])))
    return 0.0
