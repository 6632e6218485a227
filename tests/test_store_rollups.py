"""Issue 16's store: cache hits and savings kept in the rollups (and taken back by a void), a database at
migration 0008 migrated with its rollups backfilled and its rows kept, and request-id idempotency without a
UNIQUE index: a window of recent request ids shared by every writer of the file, with its bound."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from test_store import T0, event, store  # noqa: F401 - `store` is the two-backend fixture

from mcp_prism.store import sqlite as sqlite_store
from mcp_prism.store import voiding
from mcp_prism.store.migrations import MIGRATIONS
from mcp_prism.store.sqlite import Store, _split_sql

DAY = T0.date().isoformat()
NEXT = (T0 + timedelta(days=1)).date().isoformat()


async def _cache_totals(s) -> tuple[int, int]:
    rows = await s.rollup(DAY, NEXT, [])
    return int(rows[0]["cache_hits"] or 0), int(rows[0]["saved_pico"] or 0)


@pytest.mark.anyio
async def test_cache_hits_and_savings_live_in_the_rollups_and_a_void_takes_them_back(store) -> None:  # noqa: F811
    await store.insert_events([
        event(cache_hit=True, saved_usd=Decimal("0.25"), cost_usd=Decimal(0), request_id="hit-1", user="ann"),
        event(cache_hit=True, saved_usd=Decimal("0.000001"), cost_usd=Decimal(0), request_id="hit-2"),
        event(request_id="miss-1"),
    ])
    assert await _cache_totals(store) == (2, 250_001_000_000)
    by_user = {r["user"]: (r["cache_hits"], r["saved_pico"]) for r in await store.rollup(DAY, NEXT, ["user"])}
    assert by_user == {"ann": (1, 250_000_000_000), "": (1, 1_000_000)}
    # the raw-event path (a grouping no rollup holds) agrees with the rollups
    raw = await store.rollup(DAY, NEXT, ["user", "model"])
    assert sum(r["cache_hits"] for r in raw) == 2 and sum(r["saved_pico"] for r in raw) == 250_001_000_000

    out = await voiding.void(store, "id", "hit-1", actor="t", reason="test")
    assert out.events == 1
    assert await _cache_totals(store) == (1, 1_000_000)
    by_user = {r["user"]: (r["cache_hits"], r["saved_pico"]) for r in await store.rollup(DAY, NEXT, ["user"])}
    assert by_user == {"": (1, 1_000_000)}


@pytest.mark.anyio
async def test_a_database_at_0010_migrates_with_rollups_backfilled_and_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    upto = [m for m in MIGRATIONS if m[0] < "0011"]
    # the database as the code of 0010 left it: one cache hit with a sample, one miss
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, sql in upto:
        for statement in _split_sql(sql):
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, "2026-01-01T00:00:00Z"))
    ts = f"{DAY}T10:00:00.000000Z"
    for eid, rid, hit, saved in (("e1", "r1", 1, "0.5"), ("e2", "r2", 0, None)):
        db.execute("INSERT INTO usage_events (id, ts, task_type, model, provider, latency_ms, cost_pico, source, "
                   "request_id, cache_hit, saved_usd, team) VALUES (?, ?, 'code_review', 'm', 'p', 1.0, 0, 'api', "
                   "?, ?, ?, 'red')", (eid, ts, rid, hit, saved))
    db.execute("INSERT INTO usage_daily (day, task_type, model, provider, team, project, requests) "
               "VALUES (?, 'code_review', 'm', 'p', 'red', '', 2)", (DAY,))
    db.execute("INSERT INTO usage_daily_user (day, user, team, project, requests) VALUES (?, '', 'red', '', 2)",
               (DAY,))
    db.execute("INSERT INTO samples (event_id, prompt, response) VALUES ('e1', 'q', 'a')")
    db.commit()
    db.close()

    async with await Store.open(path) as s:
        assert await _cache_totals(s) == (1, 500_000_000_000)
        assert await s.count_events() == 2
        assert (await s.fetch("SELECT prompt FROM samples WHERE event_id = 'e1'"))[0][0] == "q"
        indexes = {r[0] for r in await s.fetch("SELECT name FROM sqlite_master WHERE type = 'index' "
                                               "AND tbl_name = 'usage_events'")}
        assert indexes == {"sqlite_autoindex_usage_events_1", "usage_events_ts", "usage_events_batch_request"}
        assert (await s.fetch("PRAGMA foreign_keys"))[0][0] == 1
        assert (await s.find_event("r1"))["id"] == "e1"  # drill-down by request id still works
        assert await s.insert_events([event(request_id="r2")]) == []  # an old request id is known


@pytest.mark.anyio
async def test_request_ids_are_idempotent_across_writers_within_the_window(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prism.db"
    async with await Store.open(path) as a, await Store.open(path) as b:
        assert len(await a.insert_events([event(request_id="r1"), event(request_id="r1")])) == 1
        assert await a.insert_events([event(request_id="r1")]) == []
        assert await b.insert_events([event(request_id="r1")]) == []  # b read a's rows when it opened its window
        assert len(await b.insert_events([event(request_id="r2")])) == 1
        assert await a.insert_events([event(request_id="r2")]) == []  # a reads b's rows past its last rowid
        assert (await a.find_event("r2"))["request_id"] == "r2"
        assert await a.count_events() == 2

        # the stated bound: a request id older than the window's last N events is no longer recognised
        monkeypatch.setattr(sqlite_store, "RECENT_REQUEST_IDS", 2)
        await a.insert_events([event(request_id="r3"), event(request_id="r4")])
        assert len(await a.insert_events([event(request_id="r1")])) == 1
        assert await a.count_events() == 5
        # drill-down past the window falls back to a scan and still finds it
        assert (await a.find_event("r3"))["request_id"] == "r3"
