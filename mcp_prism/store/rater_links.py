"""SQL of the rating-only links (`rater_links`) and the per-rater human ratings the dashboard shows.

One module for both backends: the SQL is plain enough for SQLite and, through the PostgreSQL store's
`?` -> `$n` translation, PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

_COLUMNS = "id, hash, experiment_id, rater, created_by, created_at, revoked_at"


async def insert(store: Any, *, link_id: str, digest: str, experiment_id: str, rater: str, created_by: str,
                 created_at: str) -> None:
    async def work(conn: Any) -> None:
        await conn.execute(f"INSERT INTO rater_links ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                           (link_id, digest, experiment_id, rater, created_by, created_at))

    await store.transaction(work)


async def get(store: Any, link_id: str) -> Any | None:
    rows = await store.fetch(f"SELECT {_COLUMNS} FROM rater_links WHERE id = ?", (link_id,))
    return rows[0] if rows else None


async def for_experiment(store: Any, experiment_id: str) -> list[Any]:
    return await store.fetch(f"SELECT {_COLUMNS} FROM rater_links WHERE experiment_id = ? ORDER BY created_at, id",
                             (experiment_id,))


async def revoke(store: Any, link_id: str, at: str) -> bool:
    async def work(conn: Any) -> int:
        cur = await conn.execute("UPDATE rater_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                 (at, link_id))
        n = cur.rowcount
        await cur.close()
        return int(n or 0)

    return await store.transaction(work) > 0


async def human_ratings(store: Any, experiment_id: str) -> dict[tuple[int, str], dict[str, str]]:
    """(item, candidate model) -> {rater: candidate verdict}, from the blind ratings stored so far."""
    rows = await store.fetch("SELECT item, model, detail FROM evaluations WHERE experiment_id = ? AND method = 'human'",
                             (experiment_id,))
    out: dict[tuple[int, str], dict[str, str]] = {}
    for r in rows:
        ratings = json.loads(r["detail"] or "{}").get("ratings", {})
        out[(int(r["item"]), str(r["model"]))] = {k: v.get("verdict") for k, v in ratings.items()}
    return out
