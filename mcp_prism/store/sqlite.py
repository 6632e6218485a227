"""The SQLite store (aiosqlite): usage events with their daily rollup, routing rules, audit log.

Concurrency: WAL mode, a busy timeout, and every write in `BEGIN IMMEDIATE` retried on
"database is locked", so two processes writing one file both succeed. Within one process a
lock serialises transactions on the shared connection. Every write is one transaction:
on any error it rolls back and the store is as it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from mcp_prism.core.pricing import PriceSnapshot, to_picodollars
from mcp_prism.core.usage import UsageEvent, iso, utcnow
from mcp_prism.errors import InvalidInput, StoreError
from mcp_prism.store import sqlite_open
from mcp_prism.store.migrations import MIGRATIONS
from mcp_prism.store.reads import GROUP_COLUMNS as GROUP_COLUMNS  # re-exported: adapters import it here
from mcp_prism.store.reads import ROLLUP_SUMS, ROLLUPS, StoreReads, event_sums
from mcp_prism.store.reads import RuleRow as RuleRow

log = logging.getLogger(__name__)
T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000
LOCK_RETRY_SECONDS = 60.0
RECENT_REQUEST_IDS = 200_000  # the idempotency window: request ids of the last this-many events

_EVENT_COLUMNS = (
    "id", "ts", "task_type", "model", "provider", "input_tokens", "cached_input_tokens",
    "cache_write_tokens", "output_tokens", "reasoning_tokens", "latency_ms", "ttft_ms", "cost_usd",
    "cost_pico", "price_snapshot_id", "batch", "status", "quality", "quality_source", "user", "team",
    "project", "source", "rule_id", "rule_version", "request_id", "api_key_id", "cache_hit", "saved_usd",
    "cache_write_1h_tokens", "machine", "session_id", "agent", "sidechain", "agent_cost_usd",
    "router_version", "router_score",
)
_INSERT_EVENT = (
    f"INSERT INTO usage_events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)})"
)
# rollup table -> its key columns (besides the sums)


def _upsert_sql(table: str) -> str:
    keys = ROLLUPS[table]
    cols = (*keys, *ROLLUP_SUMS)
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = {c} + excluded.{c}" for c in ROLLUP_SUMS))


_UPSERTS = {table: _upsert_sql(table) for table in ROLLUPS}


def _is_locked(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and (
        "locked" in str(err) or "busy" in str(err)
    )


class Store(StoreReads):
    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()
        self._snapshot_ids: dict[str, int] = {}
        self.read_only = False
        self._recent: OrderedDict[str, str] = OrderedDict()  # request_id -> event id, oldest first
        self._recent_rowid: int | None = None  # the last usage_events rowid read into _recent

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    async def open(cls, path: str | Path) -> Store:
        path = Path(path)
        uri, read_only = sqlite_open.probe(path)  # damaged, unwritable or read-only: said before a thread starts
        try:
            conn = await aiosqlite.connect(uri, isolation_level=None, uri=True)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the database at {path}: {e}") from None
        store = cls(conn, path)
        store.read_only = read_only
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not read_only:
                await store._retrying(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: keeps the indexes hot when ingesting
            await store._migrate()
        except sqlite3.DatabaseError as e:
            await conn.close()
            raise StoreError(sqlite_open.explain(path, e, read_only) or f"cannot open the database at {path}: {e}"
                             ) from None
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def _migrate(self) -> None:
        if self.read_only:  # nothing can be written: serve reads if the schema is current
            try:
                done = {r[0] for r in await self._conn.execute_fetchall("SELECT name FROM schema_migrations")}
            except sqlite3.OperationalError:
                done = set()
            if any(name not in done for name, _ in MIGRATIONS):
                raise StoreError(f"the database at {self.path} is read-only and needs an upgrade; open it once "
                                 "with write access (any mcp-prism command does it)")
            return

        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {r[0] for r in await conn.execute_fetchall("SELECT name FROM schema_migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, iso(utcnow())))
                log.info("applied migration %s", name)
            if await conn.execute_fetchall("PRAGMA foreign_key_check"):
                raise StoreError(f"migrating {self.path} would break a foreign key; nothing was changed")

        # off while migrating: a rebuilt table (0009) is dropped and renamed with rows referring to it
        await self._conn.execute("PRAGMA foreign_keys = OFF")
        try:
            await self.transaction(work)
        finally:
            await self._conn.execute("PRAGMA foreign_keys = ON")

    # ---------------------------------------------------------------- transactions
    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        delay = 0.005
        while True:
            try:
                return await op()
            except sqlite3.OperationalError as e:
                if not _is_locked(e):
                    raise StoreError(sqlite_open.explain(self.path, e, self.read_only)
                                     or f"database error, nothing was written: {e}") from None
                if time.monotonic() > deadline:
                    raise StoreError(f"the database at {self.path} stayed busy: {e}") from None
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.2)

    async def transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work` in one IMMEDIATE transaction: all of it is written, or none."""
        async with self._lock:
            conn = self._conn

            async def attempt() -> T:
                await conn.execute("BEGIN IMMEDIATE")
                before = dict(self._snapshot_ids)
                try:
                    result = await work(conn)
                    await conn.execute("COMMIT")
                    return result
                except BaseException:
                    self._snapshot_ids = before  # forget ids assigned inside the failed transaction
                    await conn.execute("ROLLBACK")
                    raise

            try:
                return await self._retrying(attempt)
            except sqlite3.IntegrityError as e:
                raise InvalidInput(f"rejected by the database, nothing was written: {e}") from None
            except sqlite3.Error as e:
                raise StoreError(sqlite_open.explain(self.path, e, self.read_only)
                                 or f"database error, nothing was written: {e}") from None

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            try:
                cur = await self._retrying(lambda: self._conn.execute(sql, params))
                cur.row_factory = sqlite3.Row
                rows = await cur.fetchall()
                await cur.close()
                return list(rows)  # type: ignore[arg-type]
            except sqlite3.Error as e:
                raise StoreError(sqlite_open.explain(self.path, e, False)
                                 or f"database error while reading: {e}") from None

    # ---------------------------------------------------------------- usage events
    async def _snapshot_id(self, conn: aiosqlite.Connection, body: str) -> int:
        sid = self._snapshot_ids.get(body)
        if sid is None:
            await conn.execute("INSERT OR IGNORE INTO price_snapshots (body) VALUES (?)", (body,))
            rows = await conn.execute_fetchall("SELECT id FROM price_snapshots WHERE body = ?", (body,))
            sid = self._snapshot_ids[body] = next(iter(rows))[0]
        return sid

    async def insert_events(self, events: Iterable[UsageEvent], *, skip_known_ids: bool = False,
                            then: Callable[[Any, list[UsageEvent]], Awaitable[None]] | None = None
                            ) -> list[UsageEvent]:
        """Store events; those whose request_id is already stored are skipped (and, with `skip_known_ids`,
        those whose id is: a replayed journal). Returns the new ones. `then(conn, new_events)` runs in the
        same transaction (the gateway settles the budgets of exactly the requests it records)."""
        batch = list(events)
        if not batch:
            return []

        pending: list[tuple[str, str]] = []

        async def work(conn: aiosqlite.Connection) -> list[UsageEvent]:
            pending.clear()
            recent = await self._sync_recent(conn)
            existing_ids: set[str] = set()
            if skip_known_ids:
                ids = [e.id for e in batch]
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    rows = await conn.execute_fetchall(
                        f"SELECT id FROM usage_events WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                    existing_ids.update(r[0] for r in rows)
            fresh: list[UsageEvent] = []
            seen: set[str] = set()
            for e in batch:
                if e.id in existing_ids:
                    continue
                if e.request_id:
                    if e.request_id in recent or e.request_id in seen:
                        continue
                    seen.add(e.request_id)
                    pending.append((e.request_id, e.id))
                fresh.append(e)

            rows_out = []
            sums: dict[str, dict[tuple[str, ...], list[Any]]] = {table: {} for table in ROLLUPS}
            for e in fresh:
                t = e.tokens
                pico = to_picodollars(e.cost_usd) if e.cost_usd is not None else None
                sid = None
                if e.prices is not None:
                    body = _snapshot_json(e.prices)
                    sid = self._snapshot_ids.get(body) or await self._snapshot_id(conn, body)
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
            await conn.executemany(_INSERT_EVENT, rows_out)
            if rows_out:  # we hold the write lock: every rowid up to here is known
                self._recent_rowid = next(iter(await conn.execute_fetchall("SELECT MAX(rowid) FROM usage_events")))[0]
            for table, acc in sums.items():
                await conn.executemany(_UPSERTS[table], [(*k, *v) for k, v in acc.items()])
            samples = [(e.id, e.prompt, e.response) for e in fresh if e.prompt is not None or e.response is not None]
            if samples:
                await conn.executemany("INSERT INTO samples (event_id, prompt, response) VALUES (?, ?, ?)", samples)
            if then is not None:
                await then(conn, fresh)
            return fresh

        fresh = await self.transaction(work)
        self._remember(pending)  # committed: only now part of the window
        return fresh

    # ---------------------------------------------------------------- request-id window
    # Idempotency by request_id without a UNIQUE index (random client ids made each insert a random B-tree
    # write, 4-6x slower): each process keeps the request ids of the last RECENT_REQUEST_IDS events stored
    # (by any writer: rows past the last rowid it knows are read at the start of each write transaction,
    # which runs under SQLite's write lock). A request id older than that window is not recognised again.
    async def _sync_recent(self, conn: aiosqlite.Connection) -> OrderedDict[str, str]:
        recent = self._recent
        if self._recent_rowid is None:
            rows = await conn.execute_fetchall(
                "SELECT rowid, request_id, id FROM usage_events WHERE request_id IS NOT NULL "
                "ORDER BY rowid DESC LIMIT ?", (RECENT_REQUEST_IDS,))
            for _, rid, eid in reversed(list(rows)):
                recent[rid] = eid
            top = next(iter(await conn.execute_fetchall("SELECT MAX(rowid) FROM usage_events")))[0]
        else:
            rows = await conn.execute_fetchall(
                "SELECT rowid, request_id, id FROM usage_events WHERE rowid > ?", (self._recent_rowid,))
            pairs = [(rid, eid) for _, rid, eid in rows if rid]
            self._remember(pairs)
            top = max((r[0] for r in rows), default=self._recent_rowid)
            if not rows:  # voided rows at the end let SQLite reuse their rowids: never stay above the top
                top = min(top, next(iter(await conn.execute_fetchall("SELECT MAX(rowid) FROM usage_events")))[0]
                          or 0)
        self._recent_rowid = top or 0
        return recent

    def _remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        recent = self._recent
        for rid, eid in pairs:
            recent[rid] = eid
            recent.move_to_end(rid)
        while len(recent) > RECENT_REQUEST_IDS:
            recent.popitem(last=False)

    async def _event_id(self, ref: str) -> str | None:
        """The id of the event with id or request_id `ref`: the id index, the window, then (old ids) a scan."""
        rows = await self.fetch("SELECT id FROM usage_events WHERE id = ?", (ref,))
        if rows:
            return str(rows[0][0])
        recent = await self.transaction(self._sync_recent) if not self.read_only else self._recent
        if ref in recent:
            return recent[ref]
        rows = await self.fetch("SELECT id FROM usage_events WHERE request_id = ? LIMIT 1", (ref,))
        return str(rows[0][0]) if rows else None

    async def find_event(self, ref: str) -> Any | None:
        eid = await self._event_id(ref)
        if eid is None:
            return None
        rows = await self.fetch("SELECT e.*, p.body AS price_snapshot FROM usage_events e "
                                "LEFT JOIN price_snapshots p ON p.id = e.price_snapshot_id WHERE e.id = ?", (eid,))
        return rows[0] if rows else None

    async def set_quality(self, ref: str, score: float, source: str) -> sqlite3.Row:
        """Set an event's quality score (by id or request_id) and keep the rollup in step."""

        eid = await self._event_id(ref) or ""

        async def work(conn: aiosqlite.Connection) -> sqlite3.Row:
            conn.row_factory = sqlite3.Row
            try:
                rows = list(await conn.execute_fetchall("SELECT * FROM usage_events WHERE id = ?", (eid,)))
            finally:
                conn.row_factory = None
            if not rows:
                raise InvalidInput(f"no usage event has id or request_id {ref!r}; record_usage returns the id "
                                   "to use, or pass the request_id you gave record_usage")
            ev = rows[0]
            old = ev["quality"]
            await conn.execute("UPDATE usage_events SET quality = ?, quality_source = ? WHERE id = ?",
                               (score, source, ev["id"]))
            delta, counted = score - (old or 0.0), 0 if old is not None else 1
            day, team, project = ev["ts"][:10], ev["team"] or "", ev["project"] or ""
            await conn.execute(
                "UPDATE usage_daily SET quality_sum = quality_sum + ?, quality_n = quality_n + ? WHERE day = ? "
                "AND task_type = ? AND model = ? AND provider = ? AND team = ? AND project = ?",
                (delta, counted, day, ev["task_type"], ev["model"], ev["provider"], team, project))
            await conn.execute(
                "UPDATE usage_daily_user SET quality_sum = quality_sum + ?, quality_n = quality_n + ? "
                "WHERE day = ? AND user = ? AND team = ? AND project = ?",
                (delta, counted, day, ev["user"] or "", team, project))
            return ev

        return await self.transaction(work)

    # ---------------------------------------------------------------- routing rules and audit
    async def add_rule_version(self, task_type: str, body: dict[str, Any], *, author: str, reason: str,
                               evidence: str | None, action: str, details: dict[str, Any],
                               expect_version: int | None = None) -> RuleRow:
        """Store a new version of a rule and its audit entry in one transaction."""

        async def work(conn: aiosqlite.Connection) -> RuleRow:
            rows = await conn.execute_fetchall(
                "SELECT COALESCE(MAX(version), 0) FROM routing_rules WHERE task_type = ?", (task_type,))
            current = next(iter(rows))[0]
            if expect_version is not None and current != expect_version:
                raise InvalidInput(f"rule {task_type} changed meanwhile (now version {current}); read it again")
            version = current + 1
            now = iso(utcnow())
            body_json = json.dumps(body, sort_keys=True)
            await conn.execute("INSERT INTO routing_rules VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (task_type, version, body_json, author, reason, evidence, now))
            await conn.execute(
                "INSERT INTO audit_log (ts, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
                (now, author, action, f"rule:{task_type}",
                 json.dumps({**details, "version": version}, sort_keys=True, default=str)),
            )
            return RuleRow(task_type, version, body, author, reason, evidence, now)

        return await self.transaction(work)


_SNAPSHOT_JSON: dict[int, tuple[PriceSnapshot, str]] = {}


def _snapshot_json(prices: PriceSnapshot) -> str:
    """JSON of a snapshot, memoised per object (the catalog hands out few, long-lived ones)."""
    hit = _SNAPSHOT_JSON.get(id(prices))
    if hit is None or hit[0] is not prices:
        hit = _SNAPSHOT_JSON[id(prices)] = (prices, prices.to_json())
    return hit[1]




def _split_sql(script: str) -> list[str]:
    """Statements of a migration script; `--` comments are dropped first (they may hold `;`). The
    scripts are ours and put no `--` or `;` inside string literals."""
    script = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s.strip() for s in script.split(";") if s.strip()]


def day_of(ts: datetime) -> str:
    return iso(ts)[:10]
