"""PostgreSQL-only behaviour of the store: the schema and its migrations, the SQLite-dialect translation
the codebase's SQL goes through, and two replicas (two PgStore pools) writing one database at once,
including the atomic budget reservation. The shared behaviour runs in test_store.py on both backends."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_store import (
    EXPECTED_COLUMNS,
    PG_URL,
    assert_rollup_matches_events,
    drop_pg_schema,
    event,
    fresh_pg_schema,
    pg_unreachable,
)

from mcp_prism.errors import InvalidInput, StoreError
from mcp_prism.store import open_store
from mcp_prism.store.migrations import MIGRATIONS
from mcp_prism.store.migrations_pg import PG_MIGRATIONS
from mcp_prism.store.sqlite import Store

pytestmark = pytest.mark.anyio

try:
    from mcp_prism.store.postgres import PgStore, TableInfo, translate
except ImportError:  # pragma: no cover
    pytest.skip("asyncpg is not installed", allow_module_level=True)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    reason = await pg_unreachable()
    if reason:
        pytest.skip(reason)
    name = fresh_pg_schema()
    try:
        yield name
    finally:
        await drop_pg_schema(name)


@asynccontextmanager
async def replicas(schema: str, n: int = 2, pool_size: int = 10) -> AsyncIterator[list[PgStore]]:
    """`n` stores on one schema, each with its own pool: gateway replicas on one database."""
    stores = [await PgStore.open(PG_URL, schema=schema, pool_size=pool_size) for _ in range(n)]
    try:
        yield stores
    finally:
        for s in stores:
            await s.close()


# ------------------------------------------------------------------ schema and migrations
async def test_schema_matches_sqlite_and_migrations_are_idempotent(schema: str) -> None:
    async with replicas(schema, 1) as (s,):
        for table, columns in EXPECTED_COLUMNS.items():
            rows = await s.fetch("SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
                                 "AND table_name = ? ORDER BY ordinal_position", (schema, table))
            assert [r[0] for r in rows] == columns, table
        tables = await s.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
                               "ORDER BY table_name", (schema,))
        assert [r[0] for r in tables] == sorted(EXPECTED_COLUMNS)
        applied = [tuple(r) for r in await s.fetch("SELECT name, applied_at FROM schema_migrations ORDER BY name")]
        assert [a[0] for a in applied] == [name for name, _ in MIGRATIONS] == [name for name, _ in PG_MIGRATIONS]
        await s.insert_events([event(request_id="kept")])
    for _ in range(2):  # reopening applies nothing again and keeps the data
        async with replicas(schema, 1) as (again,):
            rows = [tuple(r) for r in await again.fetch("SELECT name, applied_at FROM schema_migrations ORDER BY name")]
            assert rows == applied
            assert await again.count_events() == 1


async def test_replicas_migrating_one_fresh_schema_at_once(schema: str) -> None:
    results = await _gather(*(lambda: PgStore.open(PG_URL, schema=schema, pool_size=2) for _ in range(4)))
    try:
        rows = await results[0].fetch("SELECT COUNT(*) FROM schema_migrations")
        assert rows[0][0] == len(MIGRATIONS)
    finally:
        for s in results:
            await s.close()


async def test_an_older_schema_is_brought_up_to_date(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:  # a database created by an earlier release: only the first two migrations
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path = "{schema}"')
        await conn.execute('CREATE TABLE schema_migrations (name TEXT COLLATE "C" PRIMARY KEY, '
                           'applied_at TEXT COLLATE "C" NOT NULL)')
        for name, statements in PG_MIGRATIONS[:2]:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, 'earlier')", name)
        await conn.execute("INSERT INTO audit_log (ts, actor, action, target, details) "
                           "VALUES ('t', 'ana', 'x', 'y', '{}')")
    finally:
        await conn.close()
    async with replicas(schema, 1) as (s,):
        rows = await s.fetch("SELECT name, applied_at FROM schema_migrations ORDER BY name")
        assert [r["name"] for r in rows] == [name for name, _ in MIGRATIONS]
        assert [r["applied_at"] for r in rows[:2]] == ["earlier", "earlier"]
        assert [r["actor"] for r in await s.audit_log()] == ["ana"]
        await s.insert_events([event(api_key_id="k1", cache_hit=True)])  # columns of a later migration
        assert (await s.fetch("SELECT api_key_id, cache_hit FROM usage_events"))[0] == ("k1", 1)


# ------------------------------------------------------------------ the SQLite dialect on PostgreSQL
TABLES = {"t": TableInfo(("id", "a", "b", "user"), ("id",), None),
          "alerts": TableInfo(("id", "ts"), ("id",), "id")}


def test_translate() -> None:
    t = translate("SELECT user, 'it''s ? user' AS \"user?\" FROM t WHERE a = ? AND b = ? -- ?\n", TABLES)
    assert t.sql == "SELECT \"user\", 'it''s ? user' AS \"user?\" FROM t WHERE a = $1 AND b = $2"
    assert t.returns_rows and t.with_id is None
    t = translate("INSERT OR IGNORE INTO t (id, a) VALUES (?, ?)", TABLES)
    assert t.sql == "INSERT  INTO t (id, a) VALUES ($1, $2) ON CONFLICT DO NOTHING" and not t.returns_rows
    t = translate("insert or replace into t (id, user) values (?, ?)", TABLES)
    assert t.sql.endswith('ON CONFLICT (id) DO UPDATE SET a = DEFAULT, b = DEFAULT, "user" = excluded."user"')
    t = translate("INSERT INTO alerts (ts) VALUES (?)", TABLES)
    assert t.with_id == "INSERT INTO alerts (ts) VALUES ($1) RETURNING id"
    t = translate("INSERT OR IGNORE INTO alerts (ts) VALUES (?) RETURNING id, ts", TABLES)
    assert t.sql == "INSERT  INTO alerts (ts) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id, ts"
    assert t.returns_rows and t.with_id is None
    for bad in ("PRAGMA table_info(t)", "SELECT name FROM sqlite_master", "INSERT OR ROLLBACK INTO t VALUES (1)",
                "INSERT OR REPLACE INTO nowhere (a) VALUES (1)"):
        with pytest.raises(StoreError):
            translate(bad, TABLES)


@pytest.fixture(params=["sqlite", "postgres"])
async def either(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        async with await Store.open(tmp_path / "p.db") as s:
            yield s
        return
    reason = await pg_unreachable()
    if reason:
        pytest.skip(reason)
    name = fresh_pg_schema()
    try:
        async with replicas(name, 1) as (s,):
            yield s
    finally:
        await drop_pg_schema(name)


async def test_codebase_sql_idioms_give_the_same_answers(either: Any) -> None:
    """The aiosqlite calls and SQLite idioms of mcp_prism/loop/*.py, on both backends alike."""
    s = either
    await s.insert_events([event(quality=q, quality_source=src, user=u)
                           for q, src, u in ((0.9, "judge", "ana"), (0.2, "human", "ana"), (None, None, None),
                                             (1.0, "judge", "bo"))])

    async def work(conn: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        await conn.execute("INSERT INTO experiments (id, task_type, candidates, evaluation, status, source, "
                           "created_at, updated_at) VALUES (?, 'docs', '[]', '{}', 'created', 'store', ?, ?)",
                           ("e1", "t", "t"))
        row = ("e1", 0, "m", "candidate", "answer", "ok", "t")
        await conn.executemany("INSERT INTO experiment_outputs (experiment_id, item, model, role, response, status, "
                               "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", [row])
        await conn.execute("UPDATE experiment_outputs SET score = 0.5, output_tokens = 7")
        # REPLACE resets what it does not name (a delete and an insert in SQLite)
        await conn.execute("INSERT OR REPLACE INTO experiment_outputs (experiment_id, item, model, role, response, "
                           "status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", (*row[:4], "again", "ok", "t2"))
        out["replaced"] = tuple(await conn.execute_fetchall(
            "SELECT response, score, output_tokens, created_at FROM experiment_outputs"))
        await conn.execute("INSERT OR IGNORE INTO price_snapshots (body) VALUES (?)", ("{}",))
        await conn.execute("INSERT OR IGNORE INTO price_snapshots (body) VALUES (?)", ("{}",))
        out["snapshots"] = len(await conn.execute_fetchall("SELECT id FROM price_snapshots WHERE body = '{}'"))
        ids = []
        for kind in ("a", "b"):
            cur = await conn.execute("INSERT INTO alerts (ts, kind, task_type, message, details, delivered, "
                                     "acknowledged) VALUES (?, ?, ?, ?, ?, 0, 0)", ("t", kind, None, "m", "{}"))
            ids.append(cur.lastrowid)
        out["ids_differ"] = ids[0] != ids[1] and all(isinstance(i, int) and i > 0 for i in ids)
        cur = await conn.execute("UPDATE alerts SET acknowledged = 1 WHERE id = ?", (ids[0],))
        out["rowcount"] = cur.rowcount
        cur = await conn.execute("UPDATE alerts SET acknowledged = 1 WHERE id = ?", (-1,))
        out["rowcount_none"] = cur.rowcount
        cur = await conn.execute("SELECT kind FROM alerts WHERE acknowledged = 0 ORDER BY id")
        first = await cur.fetchone()
        out["fetchone"] = (first[0], await cur.fetchone())
        await cur.close()
        await conn.execute("UPDATE experiments SET notes = COALESCE(notes || '; ', '') || ? WHERE id = ?",
                           ("promoted", "e1"))
        await conn.execute("UPDATE experiments SET notes = COALESCE(notes || '; ', '') || ? WHERE id = ?",
                           ("again", "e1"))
        out["notes"] = (await conn.execute_fetchall("SELECT notes FROM experiments"))[0][0]
        return out

    got = await s.transaction(work)
    assert got == {"replaced": (("again", None, 0, "t2"),), "snapshots": 1, "ids_differ": True, "rowcount": 1,
                   "rowcount_none": 0, "fetchone": ("b", None), "notes": "promoted; again"}

    q = (await s.fetch(
        "SELECT task_type, COUNT(*) AS rated, SUM(quality >= ?) AS acceptable, AVG(quality) AS mean, "
        "GROUP_CONCAT(DISTINCT quality_source) AS sources FROM usage_events WHERE quality IS NOT NULL "
        "GROUP BY task_type", (0.8,)))[0]
    assert (q["rated"], q["acceptable"], sorted(q["sources"].split(","))) == (3, 2, ["human", "judge"])
    assert q["mean"] == pytest.approx(0.7)
    users = await s.fetch("SELECT user FROM usage_events WHERE user IS NOT NULL AND user != '' ORDER BY user")
    assert [r["user"] for r in users] == ["ana", "ana", "bo"]
    assert dict((await s.fetch("SELECT COUNT(*) AS n, COALESCE(SUM(edge_case), 0) AS edge FROM experiment_items"))[0]) \
        == {"n": 0, "edge": 0}
    await s.transaction(lambda conn: conn.execute(
        "INSERT INTO evaluations (experiment_id, item, model, method, verdict, detail, created_at) "
        "VALUES ('e1', 0, 'm', 'judge', 'tie', ?, 't')", ('{"position_preference": "first"}',)))
    bias = await s.fetch("SELECT COUNT(*) AS n FROM evaluations WHERE verdict = 'tie' "
                         "AND json_extract(detail, '$.position_preference') IS NOT NULL")
    assert bias[0]["n"] == 1
    ok = await s.fetch("SELECT COUNT(*) AS n, SUM(quality >= ?) AS ok FROM usage_events WHERE quality > 5", (0.5,))
    assert tuple(ok[0]) == (0, None)


async def test_open_store_chooses_the_backend(tmp_path: Path, schema: str) -> None:
    async with await open_store(tmp_path / "x.db") as s:
        assert isinstance(s, Store)
    async with await open_store(f"{PG_URL}?schema={schema}") as s:
        assert isinstance(s, PgStore) and s.schema == schema
        assert "schema " + schema in str(s.path)
    with pytest.raises(StoreError) as info:
        await open_store("postgresql://someone:s3cret@127.0.0.1:1/nowhere")
    assert "s3cret" not in str(info.value) and "127.0.0.1:1" in str(info.value)
    with pytest.raises(InvalidInput):
        await open_store(f"{PG_URL}?schema=Robert'); DROP")


# ------------------------------------------------------------------ replicas: two pools, one database
async def _gather(*fns: Any) -> list[Any]:
    results: list[Any] = [None] * len(fns)

    async def one(i: int) -> None:
        results[i] = await fns[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(fns)):
            tg.start_soon(one, i)
    return results


async def test_two_replicas_write_concurrently_and_see_each_other(schema: str) -> None:
    async with replicas(schema) as (a, b):
        async def writer(s: PgStore, tag: str, total: int = 400) -> None:
            rnd = random.Random(tag)
            i = 0
            while i < total:
                size = rnd.randint(1, 40)
                # "shared-*" request ids are sent by both replicas (a client retrying through another one)
                await s.insert_events([event(request_id=f"{tag}-{j}" if j % 4 else f"shared-{j}",
                                             team=rnd.choice([None, "core"]), user=rnd.choice([None, "ana", "bo"]),
                                             prompt=rnd.choice([None, "p"]))
                                       for j in range(i, min(i + size, total))])
                i += size

        await _gather(*(lambda s=s, t=t: writer(s, t) for s, t in ((a, "a"), (b, "b"), (a, "a2"), (b, "b2"))))
        expected = 4 * 300 + 100  # 100 shared ids stored once
        assert await a.count_events() == await b.count_events() == expected
        assert (await b.fetch("SELECT SUM(requests) FROM usage_daily"))[0][0] == expected
        assert (await a.fetch("SELECT COUNT(DISTINCT request_id) FROM usage_events"))[0][0] == expected
        assert len(await a.fetch("SELECT id FROM price_snapshots")) == 1
        await assert_rollup_matches_events(a)
        ev = await b.find_event("a-1")
        assert ev is not None and ev["request_id"] == "a-1"


async def test_replicas_rate_and_version_rules_without_losing_updates(schema: str) -> None:
    async with replicas(schema) as (a, b):
        targets = [event(request_id=f"q{i}") for i in range(5)]
        await a.insert_events(targets)
        # 40 ratings of 5 events from both replicas: each event ends rated once in the rollup
        await _gather(*(lambda i=i: (a, b)[i % 2].set_quality(f"q{i % 5}", (i % 10) / 10, "judge")
                        for i in range(40)))
        await assert_rollup_matches_events(a)
        assert (await a.fetch("SELECT SUM(quality_n) FROM usage_daily"))[0][0] == 5
        # 20 rule changes at once: 20 consecutive versions, one audit row each
        rows = await _gather(*(lambda i=i: (a, b)[i % 2].add_rule_version(
            "docs", {"model": f"m{i}"}, author="ana", reason="r", evidence=None, action="rule.update", details={})
            for i in range(20)))
        assert sorted(r.version for r in rows) == list(range(1, 21))
        assert len(await b.audit_log(target="rule:docs")) == 20
        assert (await b.latest_rules())["docs"].version == 20


async def test_budget_reservations_from_two_replicas_never_exceed_the_limit(schema: str) -> None:
    """The gateway's reservation: one conditional UPDATE admits a request only if spent + reserved + its
    estimate stays within the hard limit. 100 requests at once through two pools: PostgreSQL re-checks the
    condition on the row each waited for, so admitted cost never passes the limit and no request is
    refused while its cost still fitted."""
    limit = 1_000_000
    rnd = random.Random(5)
    costs = [rnd.randint(10_000, 40_000) for _ in range(100)]  # ~2.5x the limit in total
    async with replicas(schema, pool_size=10) as (a, b):
        await a.transaction(lambda conn: conn.execute(
            "INSERT INTO budgets (scope, subject, period, hard_limit_usd, created_at, updated_at) "
            "VALUES ('team', 'core', 'day', '0.000001', 't', 't')"))
        budget_id = (await a.fetch("SELECT id FROM budgets"))[0][0]
        await a.transaction(lambda conn: conn.execute(
            "INSERT INTO budget_spend (budget_id, window_start) VALUES (?, '2026-11-20')", (budget_id,)))

        async def request(s: PgStore, cost: int) -> bool:
            async def reserve(conn: Any) -> bool:
                cur = await conn.execute(
                    "UPDATE budget_spend SET reserved_pico = reserved_pico + ?, requests = requests + 1 "
                    "WHERE budget_id = ? AND window_start = ? AND spent_pico + reserved_pico + ? <= ?",
                    (cost, budget_id, "2026-11-20", cost, limit))
                return cur.rowcount == 1

            if not await s.transaction(reserve):
                return False
            await anyio.sleep(rnd.random() / 100)  # the upstream call
            await s.transaction(lambda conn: conn.execute(
                "UPDATE budget_spend SET reserved_pico = reserved_pico - ?, spent_pico = spent_pico + ? "
                "WHERE budget_id = ? AND window_start = ?", (cost, cost, budget_id, "2026-11-20")))
            return True

        admitted = await _gather(*(lambda i=i: request((a, b)[i % 2], costs[i]) for i in range(100)))
        row = (await b.fetch("SELECT spent_pico, reserved_pico, requests FROM budget_spend"))[0]
    spent = sum(c for c, ok in zip(costs, admitted, strict=True) if ok)
    assert tuple(row) == (spent, 0, sum(admitted))
    assert spent <= limit
    assert 0 < sum(admitted) < 100
    # reservations only ever grew, so each refusal was right: its cost did not fit even at the end
    assert all(c > limit - spent for c, ok in zip(costs, admitted, strict=True) if not ok)


async def test_errors_roll_back_and_are_translated(schema: str) -> None:
    async with replicas(schema, 1) as (s,):
        async def half(conn: Any) -> None:
            await conn.execute("INSERT INTO audit_log (ts, actor, action, target, details) VALUES ('t', 'a', 'b', "
                               "'c', '{}')")
            await conn.execute("INSERT INTO audit_log (ts, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
                               ("t", None, "b", "c", "{}"))

        with pytest.raises(InvalidInput, match="nothing was written"):
            await s.transaction(half)
        assert await s.audit_log() == []
        with pytest.raises(StoreError, match="database error"):
            await s.fetch("SELECT no_such_column FROM audit_log")
        with pytest.raises(StoreError):
            await s.fetch("PRAGMA journal_mode")
