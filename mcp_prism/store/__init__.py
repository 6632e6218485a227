"""The store: SQLite (`sqlite.Store`, the default) or PostgreSQL (`postgres.PgStore`) behind one API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcp_prism.store.postgres import PgStore
    from mcp_prism.store.sqlite import Store

PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.lower().startswith(PG_SCHEMES)


async def open_store(target: str | Path) -> Store | PgStore:
    """`postgresql://user@host/db[?schema=name]` opens a PgStore (asyncpg); anything else is a SQLite file path."""
    if is_postgres_url(target):
        from mcp_prism.store.postgres import PgStore  # asyncpg is needed only here

        return await PgStore.open(str(target))
    from mcp_prism.store.sqlite import Store

    return await Store.open(target)
