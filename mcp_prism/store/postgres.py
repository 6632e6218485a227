"""The PostgreSQL store (asyncpg): the same public API and behaviour as the SQLite `Store`, for more
than one machine (gateway replicas sharing one database).

`transaction(work)` hands `work` a `PgConnection`, a thin adapter with the aiosqlite calls the
codebase uses (`execute`, `execute_fetchall`, `executemany`, cursors with `rowcount`, `lastrowid`,
`fetchone`); it translates the SQLite dialect of that SQL (see `translate`). Rows are asyncpg
Records: `row["name"]`, `row[0]`, `tuple(row)` and `dict(row)` work as on sqlite3.Row.

Concurrency: every transaction runs on its own pooled connection at READ COMMITTED. A conditional
update such as `UPDATE ... SET reserved = reserved + ? WHERE ... AND spent + reserved + ? <= ?` is
atomic across processes (PostgreSQL re-checks the WHERE on the row it waited for). Rollup rows are
upserted in key order and price snapshots created in body order, so concurrent batches take row
locks in one order; a deadlock or serialisation failure still retries the whole transaction,
so `work` must do nothing but database calls. Failed transactions write nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mcp_prism.core.pricing import to_picodollars
from mcp_prism.core.usage import UsageEvent, iso, utcnow
from mcp_prism.errors import InvalidInput, StoreError
from mcp_prism.store.migrations_pg import COMPAT, PG_MIGRATIONS, RESERVED, TOKEN
from mcp_prism.store.reads import ROLLUP_SUMS, ROLLUPS, RuleRow, StoreReads, event_sums
from mcp_prism.store.sqlite import _EVENT_COLUMNS, _snapshot_json

try:
    import asyncpg
except ImportError:  # pragma: no cover - only PostgreSQL users need it
    asyncpg = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
T = TypeVar("T")

POOL_SIZE = 10
MAX_ATTEMPTS = 20  # deadlock / serialisation retries of one transaction
_RETRY_STATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
_MIGRATE_LOCK = "mcp_prism.migrate"
_ROWS_FIRST = frozenset({"select", "with", "values", "show", "explain", "table"})



def _q(col: str) -> str:
    return f'"{col}"' if col in RESERVED else col


_INSERT_EVENT = (f"INSERT INTO usage_events ({', '.join(map(_q, _EVENT_COLUMNS))}) "
                 f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_EVENT_COLUMNS)))})")


def _upsert_sql(table: str) -> str:
    keys = ROLLUPS[table]
    cols = (*keys, *ROLLUP_SUMS)
    marks = ", ".join(f"${i + 1}" for i in range(len(cols)))
    return (f"INSERT INTO {table} ({', '.join(map(_q, cols))}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(map(_q, keys))}) DO UPDATE SET "
            + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in ROLLUP_SUMS))


_UPSERTS = {table: _upsert_sql(table) for table in ROLLUPS}


# ==================================================================== SQLite dialect -> PostgreSQL
@dataclass(frozen=True, slots=True)
class TableInfo:
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    identity: str | None  # the `INTEGER PRIMARY KEY` column, whose value `lastrowid` reports


@dataclass(frozen=True, slots=True)
class Translated:
    sql: str
    returns_rows: bool
    with_id: str | None  # `sql` + RETURNING the identity column, for `cursor.lastrowid`


def translate(sql: str, tables: dict[str, TableInfo]) -> Translated:
    """SQLite-dialect SQL as PostgreSQL: `?` -> `$n`; the reserved column name `user` quoted;
    `INSERT OR IGNORE` -> `ON CONFLICT DO NOTHING`; `INSERT OR REPLACE` -> an upsert on the primary
    key that also resets the columns not given (as REPLACE's delete + insert does). String literals,
    quoted names and comments are left alone. SUM/AVG of comparisons, GROUP_CONCAT, json_extract
    and IFNULL are database functions (migrations_pg.COMPAT), so they pass through."""
    tokens = TOKEN.findall(sql)
    words = [(i, t.lower()) for i, t in enumerate(tokens) if t[0].isalpha() or t[0] == "_"]
    first = words[0][1] if words else ""
    if first == "pragma" or any(w in ("sqlite_master", "sqlite_schema") for _, w in words):
        raise StoreError(f"SQLite-only SQL cannot run on PostgreSQL: {sql.strip()[:120]}")
    mode, table, table_at = None, None, -1
    if first == "insert" and len(words) > 3:
        if words[1][1] == "or":
            mode = words[2][1]
            if mode not in ("ignore", "replace"):
                raise StoreError(f"INSERT OR {mode.upper()} has no PostgreSQL translation; use ON CONFLICT")
            for i in range(words[1][0], words[2][0] + 1):
                tokens[i] = ""  # drop "OR IGNORE" / "OR REPLACE"
            if len(words) > 4 and words[3][1] == "into":
                table_at, table = words[4]
        elif words[1][1] == "into":
            table_at, table = words[2]
    # the column list of INSERT OR REPLACE: the parenthesis right after the table name
    list_at = next((i for i in range(table_at + 1, len(tokens)) if not tokens[i].isspace()), -1) \
        if mode == "replace" else -1

    out: list[str] = []
    n = depth = 0
    returning_at: int | None = None
    columns: list[str] | None = None
    collecting = False
    for i, tok in enumerate(tokens):
        low = tok.lower()
        if tok.startswith(("--", "/*")):
            out.append(" ")  # a comment could swallow the clauses appended below
            continue
        if tok == "?":
            n += 1
            out.append(f"${n}")
            continue
        if tok == "(":
            depth += 1
            if i == list_at:
                columns, collecting = [], True
        elif tok == ")":
            depth -= 1
            collecting = False
        elif low == "returning" and depth == 0:
            returning_at = len(out)
        if low in RESERVED:
            tok = f'"{low}"'
        if collecting and (tok[0].isalpha() or tok[0] in '_"'):
            columns.append(tok.strip('"').lower())  # type: ignore[union-attr]
        out.append(tok)
    while out and (not out[-1] or out[-1].isspace() or out[-1] == ";"):
        out.pop()

    clause = ""
    if mode == "ignore":
        clause = " ON CONFLICT DO NOTHING"
    elif mode == "replace":
        info = tables.get(table or "")
        if info is None or not info.primary_key:
            raise StoreError(f"INSERT OR REPLACE INTO {table} needs a table with a primary key on PostgreSQL")
        given = columns or list(info.columns)
        sets = [f"{_q(c)} = excluded.{_q(c)}" if c in given else f"{_q(c)} = DEFAULT"
                for c in info.columns if c not in info.primary_key]
        keys = ", ".join(map(_q, info.primary_key))
        clause = f" ON CONFLICT ({keys}) " + (f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING")
    if clause:
        if returning_at is None:
            out.append(clause)
        else:
            out.insert(returning_at, clause.lstrip() + " ")
    text = "".join(out)
    returns_rows = first in _ROWS_FIRST or returning_at is not None
    with_id = None
    if first == "insert" and not returns_rows:
        info = tables.get(table or "")
        if info is not None and info.identity:
            with_id = f"{text} RETURNING {info.identity}"
    return Translated(text, returns_rows, with_id)


_STATUS_COUNT = re.compile(r"(\d+)$")


class PgCursor:
    """What aiosqlite's cursor offers the codebase: rows already fetched, rowcount, lastrowid."""

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None = None) -> None:
        self._rows, self._pos = rows, 0
        self.rowcount, self.lastrowid = rowcount, lastrowid

    async def fetchone(self) -> Any:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    async def fetchmany(self, size: int = 1) -> list[Any]:
        rows = self._rows[self._pos:self._pos + size]
        self._pos += len(rows)
        return rows

    async def fetchall(self) -> list[Any]:
        rows = self._rows[self._pos:]
        self._pos = len(self._rows)
        return rows

    async def close(self) -> None:
        pass

    def __aiter__(self) -> PgCursor:
        return self

    async def __anext__(self) -> Any:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class PgConnection:
    """The connection a `PgStore.transaction` work function receives (aiosqlite-shaped)."""

    row_factory: Any = None  # accepted and ignored: Records are already addressable by name and index

    def __init__(self, raw: Any, store: PgStore) -> None:
        self.raw = raw  # the asyncpg connection, for PostgreSQL-specific code (COPY, advisory locks)
        self._store = store

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        t = self._store.translate(sql)
        args = tuple(params)
        if t.returns_rows:
            rows = await self.raw.fetch(t.sql, *args)
            return PgCursor(rows, len(rows))
        if t.with_id:
            rows = await self.raw.fetch(t.with_id, *args)
            return PgCursor([], len(rows), rows[0][0] if rows else None)
        status = await self.raw.execute(t.sql, *args)
        m = _STATUS_COUNT.search(status or "")
        return PgCursor([], int(m.group(1)) if m else -1)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        t = self._store.translate(sql)
        return list(await self.raw.fetch(t.sql, *tuple(params)))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            await self.raw.executemany(self._store.translate(sql).sql, batch)


# ==================================================================== the store
def _numeric(text: str) -> int | float:
    # SUM(bigint) is numeric in PostgreSQL; SQLite gives an integer (or a REAL for AVG): so do we.
    return int(text) if text.lstrip("-").isdigit() else float(text)


async def _init_connection(conn: Any) -> None:
    await conn.set_type_codec("numeric", encoder=str, decoder=_numeric, schema="pg_catalog", format="text")


def redact(url: str) -> str:
    """The URL without its password, for messages and `PgStore.path`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def _split_url(url: str, schema: str | None) -> tuple[str, str | None]:
    """(the DSN for asyncpg, the schema): a `schema=` query parameter chooses the schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    for k, v in query:
        if k == "schema":
            schema = schema or v
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    if schema is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise InvalidInput(f"schema {schema!r} is not a plain lower-case name; use letters, digits and _")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def _state(err: BaseException) -> str:
    return getattr(err, "sqlstate", "") or ""


class PgStore(StoreReads):
    def __init__(self, pool: Any, url: str, schema: str | None) -> None:
        self._pool = pool
        self.url, self.schema = url, schema
        self.path = redact(url) + (f" (schema {schema})" if schema else "")
        self._snapshot_ids: dict[str, int] = {}  # committed ids only: shared by concurrent transactions
        self._tables: dict[str, TableInfo] = {}
        self._translated: dict[str, Translated] = {}

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    async def open(cls, url: str, *, schema: str | None = None, pool_size: int = POOL_SIZE) -> PgStore:
        if asyncpg is None:
            raise StoreError("PostgreSQL needs the asyncpg package: pip install asyncpg")
        dsn, schema = _split_url(url, schema)
        settings = {"search_path": schema} if schema else {}
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, init=_init_connection,
                                             server_settings=settings)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreError(f"cannot open the PostgreSQL database at {redact(url)}: {e}") from None
        store = cls(pool, url, schema)
        try:
            await store._migrate()
            await store._load_tables()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        await self._pool.close()

    async def _migrate(self) -> None:
        async def work(conn: PgConnection) -> None:
            raw = conn.raw
            # one migrator at a time per schema: replicas starting together must not race on DDL
            await raw.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{_MIGRATE_LOCK}:{self.schema or ''}")
            if self.schema:
                await raw.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await raw.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                              '(name TEXT COLLATE "C" PRIMARY KEY, applied_at TEXT COLLATE "C" NOT NULL)')
            done = {r[0] for r in await raw.fetch("SELECT name FROM schema_migrations")}
            for statement in COMPAT:
                await raw.execute(statement)
            for name, statements in PG_MIGRATIONS:
                if name in done:
                    continue
                for statement in statements:
                    await raw.execute(statement)
                await raw.execute("INSERT INTO schema_migrations VALUES ($1, $2)", name, iso(utcnow()))
                log.info("applied migration %s", name)

        await self.transaction(work)

    async def _load_tables(self) -> None:
        rows = await self._pool.fetch(
            "SELECT c.table_name, c.column_name, c.is_identity = 'YES' AS ident, k.ordinal_position IS NOT NULL AS pk "
            "FROM information_schema.columns c "
            "LEFT JOIN information_schema.table_constraints t ON t.table_schema = c.table_schema "
            "  AND t.table_name = c.table_name AND t.constraint_type = 'PRIMARY KEY' "
            "LEFT JOIN information_schema.key_column_usage k ON k.constraint_name = t.constraint_name "
            "  AND k.table_schema = c.table_schema AND k.table_name = c.table_name AND k.column_name = c.column_name "
            "WHERE c.table_schema = current_schema() ORDER BY c.table_name, c.ordinal_position")
        acc: dict[str, tuple[list[str], list[str], list[str]]] = {}
        for r in rows:
            cols, pk, ident = acc.setdefault(r["table_name"], ([], [], []))
            cols.append(r["column_name"])
            if r["pk"]:
                pk.append(r["column_name"])
            if r["ident"]:
                ident.append(r["column_name"])
        self._tables = {t: TableInfo(tuple(c), tuple(p), i[0] if i else None) for t, (c, p, i) in acc.items()}
        self._translated.clear()

    def translate(self, sql: str) -> Translated:
        t = self._translated.get(sql)
        if t is None:
            if len(self._translated) > 4096:  # SQL built with IN (?, ?, ...) lists varies; bound the cache
                self._translated.clear()
            t = self._translated[sql] = translate(sql, self._tables)
        return t

    # ---------------------------------------------------------------- transactions
    async def _run(self, work: Callable[[PgConnection], Awaitable[T]],
                   retry: Callable[[BaseException], bool] | None = None) -> T:
        delay = 0.002
        for attempt in range(MAX_ATTEMPTS):
            try:
                async with self._pool.acquire() as raw, raw.transaction():
                    return await work(PgConnection(raw, self))
            except asyncpg.PostgresError as e:
                again = _state(e) in _RETRY_STATES or (retry is not None and retry(e))
                if not again or attempt == MAX_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.2)
        raise AssertionError("unreachable")

    async def transaction(self, work: Callable[[PgConnection], Awaitable[T]],
                          retry: Callable[[BaseException], bool] | None = None) -> T:
        """Run `work` in one transaction: all of it is written, or none. `work` may run again after a
        deadlock or serialisation failure (and when `retry(error)` says so), so it must only use `conn`."""
        try:
            return await self._run(work, retry)
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as e:
            raise InvalidInput(f"rejected by the database, nothing was written: {e}") from None
        except asyncpg.PostgresError as e:
            raise StoreError(f"database error, nothing was written: {e}") from None
        except (OSError, asyncpg.InterfaceError) as e:
            raise StoreError(f"cannot reach the PostgreSQL database at {self.path}, nothing was written: {e}") from None

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._pool.fetch(self.translate(sql).sql, *tuple(params)))
        except asyncpg.DataError as e:
            raise InvalidInput(f"the database rejected the query's values: {e}") from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
            raise StoreError(f"database error while reading: {e}") from None

    # ---------------------------------------------------------------- usage events
    async def insert_events(self, events: Iterable[UsageEvent], *, skip_known_ids: bool = False,
                            then: Callable[[Any, list[UsageEvent]], Awaitable[None]] | None = None
                            ) -> list[UsageEvent]:
        """Store events; those whose request_id is already stored are skipped (and, with `skip_known_ids`,
        those whose id is: a replayed journal). Returns the new ones. `then(conn, new_events)` runs in the
        same transaction (the gateway settles the budgets of exactly the requests it records)."""
        batch = list(events)
        if not batch:
            return []
        new_ids: dict[str, int] = {}

        async def work(conn: PgConnection) -> list[UsageEvent]:
            raw = conn.raw
            new_ids.clear()
            wanted = [e.request_id for e in batch if e.request_id]
            existing: set[str] = set()
            if wanted:
                rows = await raw.fetch("SELECT request_id FROM usage_events WHERE request_id = ANY($1::text[])",
                                       wanted)
                existing.update(r[0] for r in rows)
            known: set[str] = set()
            if skip_known_ids:
                rows = await raw.fetch("SELECT id FROM usage_events WHERE id = ANY($1::text[])", [e.id for e in batch])
                known.update(r[0] for r in rows)
            fresh: list[UsageEvent] = []
            for e in batch:
                if e.id in known:
                    continue
                if e.request_id:
                    if e.request_id in existing:
                        continue
                    existing.add(e.request_id)
                fresh.append(e)

            # snapshots first, in body order: concurrent batches then wait on each other in one order
            bodies = {_snapshot_json(e.prices) for e in fresh if e.prices is not None}
            ids = {b: self._snapshot_ids[b] for b in bodies if b in self._snapshot_ids}
            for body in sorted(bodies - ids.keys()):
                await raw.execute("INSERT INTO price_snapshots (body) VALUES ($1) ON CONFLICT DO NOTHING", body)
                ids[body] = new_ids[body] = await raw.fetchval("SELECT id FROM price_snapshots WHERE body = $1",
                                                               body)

            rows_out = []
            sums: dict[str, dict[tuple[str, ...], list[Any]]] = {table: {} for table in ROLLUPS}
            for e in fresh:
                t = e.tokens
                pico = to_picodollars(e.cost_usd) if e.cost_usd is not None else None
                sid = ids[_snapshot_json(e.prices)] if e.prices is not None else None
                ts = iso(e.ts)
                rows_out.append((
                    e.id, ts, e.task_type, e.model, e.provider, t.input_tokens, t.cached_input_tokens,
                    t.cache_write_tokens, t.output_tokens, t.reasoning_tokens, e.latency_ms, e.ttft_ms,
                    None if e.cost_usd is None else str(e.cost_usd), pico, sid, int(e.batch), e.status,
                    e.quality, e.quality_source, e.user, e.team, e.project, e.source, e.rule_id,
                    e.rule_version, e.request_id, e.api_key_id, int(e.cache_hit),
                    None if e.saved_usd is None else str(e.saved_usd), t.cache_write_1h_tokens, e.machine,
                    e.session_id, e.agent, int(e.sidechain),
                    None if e.agent_cost_usd is None else str(e.agent_cost_usd),
                    e.router_version, e.router_score,
                ))
                values = event_sums(e, pico)
                team, project = e.team or "", e.project or ""
                for table, key in (("usage_daily", (ts[:10], e.task_type, e.model, e.provider, team, project)),
                                   ("usage_daily_user", (ts[:10], e.user or "", team, project))):
                    acc = sums[table].get(key)
                    if acc is None:
                        sums[table][key] = list(values)
                    else:
                        for i, v in enumerate(values):
                            acc[i] += v
            if rows_out:  # COPY: several times faster than INSERTs; the request_ids were checked above
                await raw.copy_records_to_table("usage_events", records=rows_out, columns=_EVENT_COLUMNS,
                                                schema_name=self.schema)
            for table, acc in sums.items():  # in key order: one lock order for every writer
                if acc:
                    await raw.executemany(_UPSERTS[table], [(*k, *v) for k, v in sorted(acc.items())])
            samples = [(e.id, e.prompt, e.response) for e in fresh if e.prompt is not None or e.response is not None]
            if samples:
                await raw.executemany("INSERT INTO samples (event_id, prompt, response) VALUES ($1, $2, $3)", samples)
            if then is not None:
                await then(conn, fresh)
            return fresh

        def raced(err: BaseException) -> bool:
            # another writer stored one of our request_ids after we looked: run again, it is skipped then (imported
            # history derives the event id from the request id, so the same race can hit the primary key first)
            return isinstance(err, asyncpg.UniqueViolationError) and (
                getattr(err, "constraint_name", "") in ("usage_events_request_id_key", "usage_events_pkey"))

        result = await self.transaction(work, retry=raced)
        self._snapshot_ids.update(new_ids)  # committed now: safe to share
        return result

    async def set_quality(self, ref: str, score: float, source: str) -> Any:
        """Set an event's quality score (by id or request_id) and keep the rollup in step."""

        async def work(conn: PgConnection) -> Any:
            raw = conn.raw
            # FOR UPDATE: two raters of one event must not both add to the rollup's count
            rows = await raw.fetch("SELECT * FROM usage_events WHERE id = $1 OR request_id = $1 LIMIT 1 FOR UPDATE",
                                   ref)
            if not rows:
                raise InvalidInput(f"no usage event has id or request_id {ref!r}; record_usage returns the id "
                                   "to use, or pass the request_id you gave record_usage")
            ev = rows[0]
            old = ev["quality"]
            await raw.execute("UPDATE usage_events SET quality = $1, quality_source = $2 WHERE id = $3",
                              score, source, ev["id"])
            delta, counted = score - (old or 0.0), 0 if old is not None else 1
            day, team, project = ev["ts"][:10], ev["team"] or "", ev["project"] or ""
            await raw.execute(
                "UPDATE usage_daily SET quality_sum = quality_sum + $1, quality_n = quality_n + $2 WHERE day = $3 "
                "AND task_type = $4 AND model = $5 AND provider = $6 AND team = $7 AND project = $8",
                delta, counted, day, ev["task_type"], ev["model"], ev["provider"], team, project)
            await raw.execute(
                "UPDATE usage_daily_user SET quality_sum = quality_sum + $1, quality_n = quality_n + $2 "
                'WHERE day = $3 AND "user" = $4 AND team = $5 AND project = $6',
                delta, counted, day, ev["user"] or "", team, project)
            return ev

        return await self.transaction(work)

    # ---------------------------------------------------------------- routing rules and audit
    async def add_rule_version(self, task_type: str, body: dict[str, Any], *, author: str, reason: str,
                               evidence: str | None, action: str, details: dict[str, Any],
                               expect_version: int | None = None) -> RuleRow:
        """Store a new version of a rule and its audit entry in one transaction."""

        async def work(conn: PgConnection) -> RuleRow:
            raw = conn.raw
            # replicas changing one rule at once: the second waits, then sees the first's version
            await raw.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"mcp_prism.rule:{task_type}")
            current = await raw.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM routing_rules WHERE task_type = $1", task_type)
            if expect_version is not None and current != expect_version:
                raise InvalidInput(f"rule {task_type} changed meanwhile (now version {current}); read it again")
            version = current + 1
            now = iso(utcnow())
            body_json = json.dumps(body, sort_keys=True)
            await raw.execute("INSERT INTO routing_rules VALUES ($1, $2, $3, $4, $5, $6, $7)",
                              task_type, version, body_json, author, reason, evidence, now)
            await raw.execute(
                "INSERT INTO audit_log (ts, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)",
                now, author, action, f"rule:{task_type}",
                json.dumps({**details, "version": version}, sort_keys=True, default=str),
            )
            return RuleRow(task_type, version, body, author, reason, evidence, now)

        return await self.transaction(work)
