"""Voiding usage events: taking them out of every report, rollup and profile, with an audit entry.

One work function for both backends (it uses only the aiosqlite-shaped connection that `Store.transaction`
and `PgStore.transaction` hand over, with portable `?` SQL). Voided rows move to `voided_events` whole, the
daily rollups are reduced by exactly what inserting them added, and emptied rollup rows are dropped.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp_prism.core.usage import iso, utcnow
from mcp_prism.store.reads import ROLLUP_SUMS, ROLLUPS, quoted, row_sums

Selector = Literal["id", "source", "project"]
_WHERE = {"id": "(id = ? OR request_id = ?)", "source": "source = ?", "project": "project = ?"}
MAX_VOID = 1_000_000  # events in one void (one transaction)


@dataclass
class VoidOutcome:
    events: int = 0
    cost_pico: int = 0
    unpriced: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    ids: list[str] = field(default_factory=list)  # the first few, to show


def _params(kind: Selector, value: str) -> tuple[str, tuple[str, ...]]:
    return _WHERE[kind], (value, value) if kind == "id" else (value,)


async def preview(store: Any, kind: Selector, value: str) -> VoidOutcome:
    where, params = _params(kind, value)
    rows = await store.fetch(
        f"SELECT COUNT(*) AS n, SUM(COALESCE(cost_pico, 0)) AS pico, SUM(CASE WHEN cost_pico IS NULL THEN 1 "
        f"ELSE 0 END) AS unpriced, MIN(ts) AS first_ts, MAX(ts) AS last_ts FROM usage_events WHERE {where}",
        params)
    r = rows[0]
    ids = await store.fetch(f"SELECT id FROM usage_events WHERE {where} ORDER BY ts LIMIT 5", params)
    return VoidOutcome(int(r["n"] or 0), int(r["pico"] or 0), int(r["unpriced"] or 0), r["first_ts"], r["last_ts"],
                       [i["id"] for i in ids])


def _deltas(rows: list[Any]) -> dict[str, dict[tuple[str, ...], list[Any]]]:
    """What inserting `rows` added to each rollup (the same arithmetic as the insert path)."""
    sums: dict[str, dict[tuple[str, ...], list[Any]]] = {table: {} for table in ROLLUPS}
    for e in rows:
        values = row_sums(e)
        day, team, project = e["ts"][:10], e["team"] or "", e["project"] or ""
        for table, key in (("usage_daily", (day, e["task_type"], e["model"], e["provider"], team, project)),
                           ("usage_daily_user", (day, e["user"] or "", team, project))):
            acc = sums[table].setdefault(key, [0] * len(values))
            for i, v in enumerate(values):
                acc[i] += v
    return sums


def _row_json(e: Any) -> str:
    # sqlite3.Row and asyncpg Record both iterate values, in the order of keys()
    return json.dumps(dict(zip(e.keys(), e, strict=True)), sort_keys=True, default=str)


async def void(store: Any, kind: Selector, value: str, *, actor: str, reason: str) -> VoidOutcome:
    where, params = _params(kind, value)

    async def work(conn: Any) -> VoidOutcome:
        conn.row_factory = sqlite3.Row  # SQLite: rows by name (PostgreSQL records already are)
        try:
            rows = list(await conn.execute_fetchall(f"SELECT * FROM usage_events WHERE {where} ORDER BY ts", params))
        finally:
            conn.row_factory = None
        if not rows:
            return VoidOutcome()
        now = iso(utcnow())
        ids = [r["id"] for r in rows]
        await conn.executemany("INSERT INTO voided_events (id, voided_at, actor, reason, event) VALUES (?, ?, ?, ?, ?)",
                               [(r["id"], now, actor, reason, _row_json(r)) for r in rows])
        for table, acc in _deltas(rows).items():
            keys = ROLLUPS[table]
            sets = ", ".join(f"{c} = {c} - ?" for c in ROLLUP_SUMS)
            match = " AND ".join(f"{quoted(k)} = ?" for k in keys)
            await conn.executemany(f"UPDATE {table} SET {sets} WHERE {match}",
                                   [(*v, *k) for k, v in sorted(acc.items())])
            await conn.execute(f"DELETE FROM {table} WHERE requests <= 0")
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            await conn.execute(f"DELETE FROM samples WHERE event_id IN ({marks})", chunk)
            await conn.execute(f"DELETE FROM usage_events WHERE id IN ({marks})", chunk)
        pico = sum(r["cost_pico"] or 0 for r in rows)
        out = VoidOutcome(len(rows), pico, sum(r["cost_pico"] is None for r in rows), rows[0]["ts"], rows[-1]["ts"],
                          ids[:5])
        await conn.execute(
            "INSERT INTO audit_log (ts, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
            (now, actor, "void_events", f"events:{kind}={value}",
             json.dumps({"reason": reason, "events": out.events, "cost_pico": pico, "first_ts": out.first_ts,
                         "last_ts": out.last_ts}, sort_keys=True)))
        return out

    return await store.transaction(work)
