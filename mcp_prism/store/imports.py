"""How far `import-history` has read each log, per machine: written and read through either store's
`transaction`/`fetch` (portable SQL; PgStore translates `?`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcp_prism.core.usage import iso, utcnow


@dataclass(frozen=True, slots=True)
class FileState:
    path: str
    agent: str
    size: int
    mtime_ns: int
    read_to: int  # bytes of a JSONL log; the time_updated watermark (ms) of a database
    head: str  # digest of the file's first bytes: a different file at the same path starts over


async def load_import_state(store: Any, machine: str) -> dict[str, FileState]:
    rows = await store.fetch("SELECT path, agent, size, mtime_ns, read_to, head FROM import_files WHERE machine = ?",
                             (machine,))
    return {r["path"]: FileState(r["path"], r["agent"], r["size"], r["mtime_ns"], r["read_to"], r["head"])
            for r in rows}


async def save_import_state(store: Any, machine: str, states: Sequence[FileState]) -> None:
    if not states:
        return
    now = iso(utcnow())

    async def work(conn: Any) -> None:
        await conn.executemany(
            "INSERT INTO import_files (machine, path, agent, size, mtime_ns, read_to, head, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (machine, path) DO UPDATE SET agent = excluded.agent, "
            "size = excluded.size, mtime_ns = excluded.mtime_ns, read_to = excluded.read_to, head = excluded.head, "
            "updated_at = excluded.updated_at",
            [(machine, s.path, s.agent, s.size, s.mtime_ns, s.read_to, s.head, now) for s in states])

    await store.transaction(work)


async def imported_by_agent(store: Any) -> list[Any]:
    """Imported requests and their cost per agent, machine and user (what `import-history` reports)."""
    return await store.fetch(
        "SELECT agent, COALESCE(machine, '') AS machine, COALESCE(\"user\", '') AS \"user\", COUNT(*) AS requests, "
        "SUM(cost_pico) AS cost_pico FROM usage_events WHERE agent IS NOT NULL GROUP BY agent, machine, \"user\" "
        "ORDER BY agent, machine, \"user\"")
