"""The SQLite store: schema, usage events and their rollup, quality, rules, failure atomicity, and
two processes writing one database file at once."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import mcp_prism
from mcp_prism.core.catalog import Catalog
from mcp_prism.core.pricing import PriceSnapshot, Rate, TokenUsage, from_picodollars, to_picodollars
from mcp_prism.core.usage import UsageEvent, iso
from mcp_prism.errors import InvalidInput
from mcp_prism.store.migrations import MIGRATIONS
from mcp_prism.store.sqlite import Store

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
SNAP = PriceSnapshot(input=Rate(Decimal("0.3")), output=Rate(Decimal("1.2")), batch_discount=Decimal("0.5"),
                     source="config")

EXPECTED_COLUMNS = {
    "usage_events": [
        "id", "ts", "task_type", "model", "provider", "input_tokens", "cached_input_tokens",
        "cache_write_tokens", "output_tokens", "reasoning_tokens", "latency_ms", "ttft_ms", "cost_usd",
        "cost_pico", "price_snapshot_id", "batch", "status", "quality", "quality_source", "user", "team",
        "project", "source", "rule_id", "rule_version", "request_id", "api_key_id", "cache_hit", "saved_usd",
        "cache_write_1h_tokens", "machine", "session_id", "agent", "sidechain", "agent_cost_usd",
        "router_version", "router_score",
    ],
    "usage_daily": [
        "day", "task_type", "model", "provider", "team", "project", "requests", "errors", "unpriced",
        "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
        "cost_pico", "latency_ms_sum", "quality_sum", "quality_n", "cache_write_1h_tokens", "cache_hits", "saved_pico",
    ],
    "usage_daily_user": [
        "day", "user", "team", "project", "requests", "errors", "unpriced",
        "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
        "cost_pico", "latency_ms_sum", "quality_sum", "quality_n", "cache_write_1h_tokens", "cache_hits", "saved_pico",
    ],
    "routing_rules": ["task_type", "version", "body", "author", "reason", "evidence", "created_at"],
    "audit_log": ["id", "ts", "actor", "action", "target", "details"],
    "samples": ["event_id", "prompt", "response"],
    "experiments": ["id", "task_type", "baseline_model", "candidates", "evaluation", "status", "source", "created_at",
                    "updated_at", "notes"],
    "experiment_items": ["experiment_id", "item", "prompt", "expected", "source_event_id", "edge_case", "category"],
    "experiment_outputs": ["experiment_id", "item", "model", "role", "response", "status", "error", "input_tokens",
                           "cached_input_tokens", "output_tokens", "reasoning_tokens", "latency_ms", "cost_usd",
                           "score", "created_at"],
    "evaluations": ["experiment_id", "item", "model", "method", "verdict", "detail", "evaluator", "cost_usd",
                    "created_at"],
    "monitors": ["id", "task_type", "rule_version", "baseline_version", "experiment_id", "started_at", "ends_at",
                 "threshold", "auto_rollback", "status", "last_checked", "details"],
    "alerts": ["id", "ts", "kind", "task_type", "message", "details", "delivered", "acknowledged"],
    "api_keys": ["id", "hash", "team", "user", "project", "name", "created_at", "revoked_at", "rotated_from",
                 "last_used_at"],
    "budgets": ["id", "scope", "subject", "period", "soft_limit_usd", "hard_limit_usd", "rpm", "tpm", "downgrade",
                "created_at", "updated_at"],
    "budget_spend": ["budget_id", "window_start", "spent_pico", "reserved_pico", "requests", "soft_alerted"],
    "budget_holders": ["holder", "expires_at"],
    "budget_leases": ["holder", "budget_id", "window_start", "reserved_pico"],
    "batch_requests": ["id", "task_type", "model", "provider", "client_format", "body", "status", "provider_batch_id",
                       "result", "error", "api_key_id", "team", "user", "project", "created_at", "submitted_at",
                       "completed_at"],
    "response_cache": ["key", "task_type", "project", "model", "client_format", "body", "usage", "cost_usd",
                       "created_at", "expires_at", "hits"],
    "voided_events": ["id", "voided_at", "actor", "reason", "event"],
    "rater_links": ["id", "hash", "experiment_id", "rater", "created_by", "created_at", "revoked_at"],
    "price_snapshots": ["id", "body"],
    "import_files": ["machine", "path", "agent", "size", "mtime_ns", "read_to", "head", "updated_at"],
    "learned_routers": ["task_type", "version", "body", "summary", "author", "reason", "created_at"],
    "schema_migrations": ["name", "applied_at"],
}


def event(**over: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "task_type": "code_review", "model": "my-model", "provider": "vllm",
        "tokens": TokenUsage(input_tokens=1_000, output_tokens=200), "latency_ms": 250.0,
        "cost_usd": Decimal("0.00054"), "prices": SNAP, "ts": T0,
    }
    fields.update(over)
    return UsageEvent(**fields)


async def dump(store: Store, table: str) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in await store.fetch(f"SELECT * FROM {table}")), key=repr)


async def dump_all(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    return {t: await dump(store, t) for t in EXPECTED_COLUMNS if t != "schema_migrations"}


# PostgreSQL (PRISM_TEST_DATABASE_URL, default the local server) when reachable: each test gets a fresh schema.
PG_URL = os.environ.get("PRISM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
_pg_reachable: list[str | None] = []


async def pg_unreachable() -> str | None:
    """Why PostgreSQL tests cannot run here (None when they can); asked once per session."""
    if not _pg_reachable:
        try:
            import asyncpg

            conn = await asyncpg.connect(PG_URL, timeout=3)
            await conn.close()
            _pg_reachable.append(None)
        except Exception as e:  # any failure means: skip, and say why
            _pg_reachable.append(f"PostgreSQL at {PG_URL} is not reachable: {type(e).__name__}: {e}")
    return _pg_reachable[0]


async def drop_pg_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def fresh_pg_schema() -> str:
    import uuid

    return f"t_{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        s = await Store.open(tmp_path / "prism.db")
        try:
            yield s
        finally:
            await s.close()
        return
    reason = await pg_unreachable()
    if reason:
        pytest.skip(reason)
    from mcp_prism.store.postgres import PgStore

    schema = fresh_pg_schema()
    pg = await PgStore.open(PG_URL, schema=schema)
    try:
        yield pg
    finally:
        await pg.close()
        await drop_pg_schema(schema)


# ------------------------------------------------------------------ schema
@pytest.mark.anyio
async def test_fresh_schema_is_pinned(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "prism.db"
    s = await Store.open(path)
    try:
        for table, columns in EXPECTED_COLUMNS.items():
            rows = await s.fetch(f"PRAGMA table_info({table})")
            assert [r["name"] for r in rows] == columns, table
        tables = await s.fetch("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        assert [r["name"] for r in tables] == sorted(EXPECTED_COLUMNS)
        mode = await s.fetch("PRAGMA journal_mode")
        assert mode[0][0] == "wal"
        applied = await s.fetch("SELECT name, applied_at FROM schema_migrations ORDER BY name")
        assert [r["name"] for r in applied] == [name for name, _ in MIGRATIONS]
    finally:
        await s.close()

    for _ in range(2):
        async with await Store.open(path) as again:
            rows = await again.fetch("SELECT name, applied_at FROM schema_migrations ORDER BY name")
            assert len(rows) == len(MIGRATIONS)
            assert [tuple(r) for r in rows] == [tuple(r) for r in applied]  # nothing re-applied
            assert (await again.fetch("PRAGMA journal_mode"))[0][0] == "wal"


# ------------------------------------------------------------------ insert_events
@pytest.mark.anyio
async def test_request_id_dedupe_across_calls_and_within_a_batch(store: Store) -> None:
    first = [event(request_id="r1"), event(request_id="r2"), event(), event()]
    assert await store.insert_events(first) == first

    dup_r1, r3a, r3b, anon = event(request_id="r1"), event(request_id="r3"), event(request_id="r3"), event()
    stored = await store.insert_events([dup_r1, r3a, r3b, anon])
    assert [e.id for e in stored] == [r3a.id, anon.id]
    assert await store.insert_events([event(request_id="r2")]) == []
    assert await store.insert_events([]) == []

    assert await store.count_events() == 6
    rows = await store.fetch("SELECT request_id, COUNT(*) AS n FROM usage_events GROUP BY request_id")
    assert {r["request_id"]: r["n"] for r in rows} == {None: 3, "r1": 1, "r2": 1, "r3": 1}
    daily = await store.fetch("SELECT SUM(requests), SUM(input_tokens) FROM usage_daily")
    assert tuple(daily[0]) == (6, 6_000)
    assert (await store.find_event("r3"))["id"] == r3a.id
    assert (await store.find_event(anon.id))["request_id"] is None


def _random_events(catalog: Catalog, n: int, seed: int) -> list[UsageEvent]:
    rnd = random.Random(seed)
    models = ["claude-sonnet-4-5", "gpt-5.4", "gemini-2.5-pro", "deepseek-chat", "ollama/qwen2.5-coder:7b"]
    out = []
    for i in range(n):
        n_in = rnd.randint(0, 400_000)
        cached = rnd.randint(0, n_in)
        write = rnd.randint(0, n_in - cached)
        n_out = rnd.randint(0, 50_000)
        tokens = TokenUsage(n_in, cached, write, n_out, rnd.randint(0, n_out))
        ts = T0 + timedelta(hours=rnd.randint(-72, 72), microseconds=rnd.randint(0, 999_999))
        unpriced = rnd.random() < 0.15
        if unpriced:
            model, provider, cost, prices = "mystery-model", "acme", None, None
        else:
            model = rnd.choice(models)
            batch = rnd.random() < 0.3
            c = catalog.cost(model, tokens, ts, batch=batch)
            provider, cost, prices = catalog.resolve(model).provider, c.usd, c.prices
        quality = rnd.choice([None, None, 0.0, 0.25, 1.0, round(rnd.random(), 3)])
        out.append(event(
            task_type=rnd.choice(["code_review", "docs", "ticket_classification"]), model=model,
            provider=provider, tokens=tokens, latency_ms=rnd.randint(1, 20_000) + 0.5, cost_usd=cost,
            prices=prices, ts=ts, status=rnd.choice(["ok", "ok", "ok", "timeout", "rate_limited"]),
            quality=quality, quality_source=None if quality is None else "judge",
            team=rnd.choice([None, "", "core", "web"]), user=rnd.choice([None, "ana", "bo"]),
            project=rnd.choice([None, "p1"]), request_id=rnd.choice([None, f"req-{seed}-{i}"]),
            prompt=rnd.choice([None, None, "p"]), response=rnd.choice([None, None, "r"]),
        ))
    return out


SUMS = ("requests", "errors", "unpriced", "input_tokens", "cached_input_tokens", "cache_write_tokens",
        "output_tokens", "reasoning_tokens", "cost_pico", "latency_ms_sum", "quality_sum", "quality_n")
RAW_SUMS = ("COUNT(*), SUM(status != 'ok'), SUM(cost_pico IS NULL), SUM(input_tokens), SUM(cached_input_tokens), "
            "SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), COALESCE(SUM(cost_pico), 0), "
            "SUM(latency_ms), COALESCE(SUM(quality), 0), COUNT(quality)")
ROLLUP_KEYS = {
    "usage_daily": ("day", "task_type", "model", "provider", "team", "project"),
    "usage_daily_user": ("day", "user", "team", "project"),
}


async def assert_rollup_matches_events(store: Store) -> None:
    """Every rollup row equals the sums over the raw events of its group (absent = '')."""
    for table, keys in ROLLUP_KEYS.items():
        group = ", ".join("substr(ts, 1, 10)" if k == "day" else f"COALESCE({k}, '')" for k in keys)
        order = ", ".join(str(i + 1) for i in range(len(keys)))
        raw = [tuple(r) for r in await store.fetch(
            f"SELECT {group}, {RAW_SUMS} FROM usage_events GROUP BY {group} ORDER BY {order}")]
        daily = [tuple(r) for r in await store.fetch(
            f"SELECT {', '.join(keys)}, {', '.join(SUMS)} FROM {table} ORDER BY {order}")]
        assert len(raw) == len(daily), table
        n = len(keys)
        for r, d in zip(raw, daily, strict=True):
            assert r[:n + 9] == d[:n + 9], table  # keys, counts, tokens and picodollars: exact
            assert d[n + 9] == pytest.approx(r[n + 9], rel=1e-12), table
            assert d[n + 10] == pytest.approx(r[n + 10], rel=1e-9, abs=1e-9), table
            assert d[n + 11] == r[n + 11], table


@pytest.mark.anyio
async def test_rollup_sums_equal_sums_over_events(store: Store, catalog: Catalog) -> None:
    events = _random_events(catalog, 400, seed=7)
    for i in range(0, len(events), 37):
        await store.insert_events(events[i:i + 37])
    assert await store.count_events() == len(events)
    await assert_rollup_matches_events(store)

    total = (await store.rollup("0000-00-00", "9999-99-99", []))[0]
    assert total["requests"] == len(events)
    assert total["unpriced"] == sum(e.cost_usd is None for e in events)
    assert total["errors"] == sum(e.status != "ok" for e in events)
    assert total["cost_pico"] == sum(to_picodollars(e.cost_usd) for e in events if e.cost_usd is not None)
    assert total["reasoning_tokens"] == sum(e.tokens.reasoning_tokens for e in events)
    assert total["quality_n"] == sum(e.quality is not None for e in events)

    by_day = await store.rollup(iso(T0)[:10], iso(T0 + timedelta(days=1))[:10], ["day", "team"],
                                filters={"task_type": "docs"})
    expect = sum(1 for e in events if e.task_type == "docs" and iso(e.ts)[:10] == iso(T0)[:10])
    assert sum(r["requests"] for r in by_day) == expect
    assert {r["day"] for r in by_day} <= {iso(T0)[:10]}

    with pytest.raises(InvalidInput):
        await store.rollup("0000", "9999", ["latency_ms"])
    with pytest.raises(InvalidInput):
        await store.rollup("0000", "9999", [], filters={"1=1; --": "x"})


def _expected_groups(events: list[UsageEvent], keys: tuple[str, ...]) -> dict[tuple[str, ...], tuple[int, int]]:
    out: dict[tuple[str, ...], tuple[int, int]] = {}
    for e in events:
        key = tuple(iso(e.ts)[:10] if k == "day" else (getattr(e, k) or "") for k in keys)
        n, pico = out.get(key, (0, 0))
        out[key] = (n + 1, pico + (to_picodollars(e.cost_usd) if e.cost_usd is not None else 0))
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("group_by", [
    ("user",), ("day", "user"), ("team", "project"), ("task_type", "model", "day"),
])
async def test_rollup_groupings_served_by_rollup_tables(store: Store, catalog: Catalog,
                                                        group_by: tuple[str, ...]) -> None:
    events = _random_events(catalog, 300, seed=11)
    await store.insert_events(events)
    rows = await store.rollup("0000-00-00", "9999-99-99", list(group_by))
    got = {tuple(r[k] for k in group_by): (r["requests"], r["cost_pico"]) for r in rows}
    assert len(got) == len(rows), "one row per group"
    assert got == _expected_groups(events, group_by)


@pytest.mark.anyio
@pytest.mark.parametrize("group_by", [("user", "model"), ("user", "task_type", "day")])
async def test_rollup_groupings_from_raw_events(store: Store, group_by: tuple[str, ...]) -> None:
    # no rollup table has both `user` and `model`: these are summed from raw events
    events = [event(user=u, team=t, model=m, ts=T0 + timedelta(days=d))
              for u in ("ana", "bo") for t in ("core", "web") for m in ("m1", "m2") for d in (0, 1)]
    await store.insert_events(events)
    rows = await store.rollup("0000-00-00", "9999-99-99", list(group_by))
    got = {tuple(r[k] for k in group_by): (r["requests"], r["cost_pico"]) for r in rows}
    assert len(got) == len(rows)
    assert got == _expected_groups(events, group_by)
    only = await store.rollup(iso(T0)[:10], iso(T0 + timedelta(days=1))[:10], list(group_by),
                              filters={"team": "core"})
    assert sum(r["requests"] for r in only) == 4


@pytest.mark.anyio
async def test_rollup_from_raw_events_treats_absent_and_empty_alike(store: Store) -> None:
    await store.insert_events([event(user=None, team=None), event(user="", team=""), event(user="ana")])
    # the rollup tables already merge NULL and '' into one group ...
    by_user = await store.rollup("0000-00-00", "9999-99-99", ["user"])
    assert sorted((r["user"], r["requests"]) for r in by_user) == [("", 2), ("ana", 1)]
    # ... and the raw-events path must agree
    rows = await store.rollup("0000-00-00", "9999-99-99", ["user", "model"])
    assert sorted((r["user"], r["model"], r["requests"]) for r in rows) == [("", "my-model", 2),
                                                                           ("ana", "my-model", 1)]


@pytest.mark.anyio
async def test_cost_is_stored_exactly(store: Store) -> None:
    costs = [Decimal("0.0000123456789012345"), Decimal("1.5"), Decimal("0.000000000001"), Decimal("0")]
    events = [event(cost_usd=c, request_id=f"c{i}") for i, c in enumerate(costs)]
    await store.insert_events(events)
    rows = await store.fetch("SELECT request_id, cost_usd, cost_pico FROM usage_events ORDER BY request_id")
    assert [(r["cost_usd"], r["cost_pico"]) for r in rows] == [
        ("0.0000123456789012345", 12_345_679),
        ("1.5", 1_500_000_000_000),
        ("1E-12", 1),
        ("0", 0),
    ]
    assert [Decimal(r["cost_usd"]) for r in rows] == costs  # the full-precision cost survives as text
    daily = await store.fetch("SELECT cost_pico FROM usage_daily")
    assert from_picodollars(daily[0][0]) == Decimal("1.500012345680")


@pytest.mark.anyio
async def test_unpriced_events_are_counted_not_zero_cost(store: Store) -> None:
    await store.insert_events([event(), event(cost_usd=None, prices=None), event(cost_usd=None, prices=None)])
    rows = await store.fetch("SELECT cost_usd, cost_pico, price_snapshot_id FROM usage_events "
                             "WHERE cost_usd IS NULL")
    assert len(rows) == 2
    assert all(r["cost_pico"] is None and r["price_snapshot_id"] is None for r in rows)
    daily = (await store.fetch("SELECT requests, unpriced, cost_pico FROM usage_daily"))[0]
    assert tuple(daily) == (3, 2, to_picodollars(Decimal("0.00054")))


@pytest.mark.anyio
async def test_samples_only_when_prompt_or_response(store: Store) -> None:
    both, prompt_only, response_only, neither = (
        event(prompt="hello", response="world"), event(prompt="just asking"), event(response="just saying"),
        event())
    empty = event(prompt="", response=None)  # an empty prompt is still a prompt
    await store.insert_events([both, prompt_only, response_only, neither, empty])
    rows = await store.fetch("SELECT event_id, prompt, response FROM samples")
    got = {r["event_id"]: (r["prompt"], r["response"]) for r in rows}
    assert got == {both.id: ("hello", "world"), prompt_only.id: ("just asking", None),
                   response_only.id: (None, "just saying"), empty.id: ("", None)}


@pytest.mark.anyio
async def test_price_snapshots_are_shared_and_round_trip(store: Store, catalog: Catalog) -> None:
    prices = catalog.prices_at("claude-sonnet-4-5", T0)
    assert prices is not None
    e1, e2, e3 = event(prices=prices), event(prices=prices), event(prices=SNAP)
    await store.insert_events([e1, e2])
    await store.insert_events([e3])
    assert len(await store.fetch("SELECT id FROM price_snapshots")) == 2
    row = await store.find_event(e2.id)
    assert row is not None
    assert PriceSnapshot.from_json(row["price_snapshot"]) == prices
    assert (await store.find_event(e1.id))["price_snapshot_id"] == row["price_snapshot_id"]


# ------------------------------------------------------------------ quality
async def _daily_quality(store: Store) -> tuple[float, int]:
    rows = await store.fetch("SELECT SUM(quality_sum), SUM(quality_n) FROM usage_daily")
    return rows[0][0], rows[0][1]


@pytest.mark.anyio
async def test_set_quality_updates_event_and_rollup(store: Store) -> None:
    target, other, rated = event(request_id="q1"), event(), event(quality=0.5, quality_source="human")
    await store.insert_events([target, other, rated])
    assert await _daily_quality(store) == (0.5, 1)

    before = await store.set_quality(target.id, 0.8, "judge")
    assert before["id"] == target.id and before["quality"] is None  # the row as it was
    row = await store.find_event(target.id)
    assert (row["quality"], row["quality_source"]) == (0.8, "judge")
    total, n = await _daily_quality(store)
    assert (total, n) == (pytest.approx(1.3), 2)

    # re-rating (by request_id this time) replaces the score: no double count
    before = await store.set_quality("q1", 0.3, "human")
    assert before["quality"] == 0.8
    row = await store.find_event("q1")
    assert (row["quality"], row["quality_source"]) == (0.3, "human")
    total, n = await _daily_quality(store)
    assert (total, n) == (pytest.approx(0.8), 2)

    await store.set_quality(rated.id, 1.0, "automated")
    total, n = await _daily_quality(store)
    assert (total, n) == (pytest.approx(1.3), 2)
    await assert_rollup_matches_events(store)


@pytest.mark.anyio
async def test_set_quality_rejections_change_nothing(store: Store) -> None:
    e = event(request_id="q1", quality=0.4, quality_source="judge")
    await store.insert_events([e])
    snapshot = await dump_all(store)
    with pytest.raises(InvalidInput, match="no usage event"):
        await store.set_quality("no-such-ref", 0.9, "human")
    with pytest.raises(InvalidInput):
        await store.set_quality("q1", 1.5, "human")
    with pytest.raises(InvalidInput):
        await store.set_quality("q1", -0.1, "human")
    with pytest.raises(InvalidInput):
        await store.set_quality("q1", 0.9, "robot")
    assert await dump_all(store) == snapshot
    await store.set_quality("q1", 0.9, "human")  # the store still works
    assert (await store.find_event("q1"))["quality"] == 0.9


# ------------------------------------------------------------------ failed writes are all-or-nothing
@pytest.mark.anyio
async def test_failed_batch_writes_nothing_and_store_keeps_working(store: Store) -> None:
    await store.insert_events([event(request_id="ok-1")])
    before = await dump_all(store)

    new_prices = PriceSnapshot(input=Rate(Decimal("7")), output=Rate(Decimal("9")), source="config")
    bad_batch = [
        event(request_id="a", prices=new_prices, prompt="kept?"),
        event(request_id="b", quality=1.5, quality_source="human"),  # violates the CHECK constraint
        event(request_id="c", ts=T0 + timedelta(days=3)),
    ]
    with pytest.raises(InvalidInput, match="nothing was written"):
        await store.insert_events(bad_batch)
    assert await dump_all(store) == before

    # the snapshot id handed out inside the failed transaction must not be reused
    again = event(request_id="a", prices=new_prices)
    assert await store.insert_events([again]) == [again]
    row = await store.find_event("a")
    assert row is not None and PriceSnapshot.from_json(row["price_snapshot"]) == new_prices

    dup = event(request_id="dup")
    await store.insert_events([dup])
    with pytest.raises(InvalidInput):
        await store.insert_events([event(request_id="fresh"), event(id=dup.id)])  # primary key clash
    assert await store.find_event("fresh") is None
    with pytest.raises(InvalidInput):
        await store.insert_events([event(quality=0.5, quality_source="vibes")])
    assert await store.count_events() == 3
    await assert_rollup_matches_events(store)


# ------------------------------------------------------------------ routing rules and audit
@pytest.mark.anyio
async def test_rule_versions_and_audit(store: Store) -> None:
    r1 = await store.add_rule_version("code_review", {"model": "a"}, author="ana", reason="start", evidence=None,
                                      action="rule.create", details={"why": "first"})
    r2 = await store.add_rule_version("code_review", {"model": "b"}, author="bo", reason="cheaper",
                                      evidence="exp-1", action="rule.update", details={}, expect_version=1)
    d1 = await store.add_rule_version("docs", {"model": "c"}, author="ana", reason="start", evidence=None,
                                      action="rule.create", details={}, expect_version=0)
    assert (r1.version, r2.version, d1.version) == (1, 2, 1)

    latest = await store.latest_rules()
    assert {k: (v.version, v.body) for k, v in latest.items()} == {
        "code_review": (2, {"model": "b"}), "docs": (1, {"model": "c"})}
    history = await store.rule_history("code_review")
    assert [(h.version, h.author, h.evidence) for h in history] == [(1, "ana", None), (2, "bo", "exp-1")]

    audit = await store.audit_log()
    assert [(a["actor"], a["action"], a["target"]) for a in audit] == [
        ("ana", "rule.create", "rule:docs"), ("bo", "rule.update", "rule:code_review"),
        ("ana", "rule.create", "rule:code_review")]
    assert json.loads(audit[2]["details"]) == {"why": "first", "version": 1}
    assert json.loads(audit[1]["details"]) == {"version": 2}
    assert len(await store.audit_log(target="rule:code_review")) == 2
    assert audit[0]["ts"] == d1.created_at

    before = await dump_all(store)
    with pytest.raises(InvalidInput, match="now version 2"):
        await store.add_rule_version("code_review", {"model": "z"}, author="eve", reason="race", evidence=None,
                                     action="rule.update", details={}, expect_version=1)
    with pytest.raises(InvalidInput):
        await store.add_rule_version("new_type", {"model": "z"}, author="eve", reason="race", evidence=None,
                                     action="rule.create", details={}, expect_version=3)
    # the audit row fails (action NOT NULL) after the rule row was inserted: both roll back
    with pytest.raises(InvalidInput):
        await store.add_rule_version("code_review", {"model": "z"}, author="eve", reason="x", evidence=None,
                                     action=None, details={})  # type: ignore[arg-type]
    assert await dump_all(store) == before


# ------------------------------------------------------------------ concurrency
@pytest.mark.anyio
async def test_two_connections_in_one_process(tmp_path: Path) -> None:
    import anyio

    path = tmp_path / "prism.db"
    a, b = await Store.open(path), await Store.open(path)
    try:
        async def writer(s: Store, tag: str) -> None:
            rnd = random.Random(tag)
            i = 0
            while i < 400:
                size = rnd.randint(1, 40)
                await s.insert_events([event(request_id=f"{tag}-{j}") for j in range(i, min(i + size, 400))])
                i += size

        async with anyio.create_task_group() as tg:
            for s, tag in ((a, "a"), (b, "b"), (a, "a2"), (b, "b2")):
                tg.start_soon(writer, s, tag)
        assert await a.count_events() == 1_600
        assert (await b.fetch("SELECT SUM(requests) FROM usage_daily"))[0][0] == 1_600
    finally:
        await a.close()
        await b.close()


WORKER = textwrap.dedent("""
    import asyncio, os, random, sys, time
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal
    from mcp_prism.core.pricing import PriceSnapshot, Rate, TokenUsage, compute_cost
    from mcp_prism.core.usage import UsageEvent
    from mcp_prism.store.sqlite import Store

    db, tag, total, go, open_first = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
    rnd = random.Random(tag)
    snaps = [PriceSnapshot(input=Rate(Decimal(p)), output=Rate(Decimal(p) * 4), source="config")
             for p in ("0.1", "0.25", "3")]
    t0 = datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC)

    async def main():
        store = await Store.open(db) if open_first else None
        open(go + "." + tag, "w").close()          # ready
        while not os.path.exists(go):              # start together
            time.sleep(0.001)
        if store is None:
            store = await Store.open(db)           # both open (and migrate) at the same moment
        i = 0
        while i < total:
            size = rnd.randint(1, 50)
            batch = []
            for j in range(i, min(i + size, total)):
                tokens = TokenUsage(input_tokens=rnd.randint(0, 5000), output_tokens=rnd.randint(0, 500))
                snap = rnd.choice(snaps)
                batch.append(UsageEvent(
                    task_type="code_review", model="m", provider="p", tokens=tokens, latency_ms=1.0,
                    cost_usd=compute_cost(tokens, snap), prices=snap, ts=t0 + timedelta(seconds=j % 2),
                    request_id=f"{tag}-{j}", team=rnd.choice([None, "a", "b"]), user=rnd.choice([None, "u1", "u2"]),
                    prompt=rnd.choice([None, "x"]),
                ))
            await store.insert_events(batch)
            i += size
        await store.close()

    asyncio.run(main())
""")


def _run_writers(db: Path, go: str, tags: list[str], per_process: int, open_first: bool) -> None:
    """Run one WORKER process per tag on `db`, released together, and check they all succeeded."""
    root = str(Path(mcp_prism.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(db), tag, str(per_process), go, str(int(open_first))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for tag in tags
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(os.path.exists(f"{go}.{tag}") for tag in tags):
            assert time.monotonic() < deadline, "workers did not get ready"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.005)
        Path(go).touch()  # release both at once
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "database is locked" not in err and "database is locked" not in out
        assert "Traceback" not in err, err


@pytest.mark.slow
def test_two_processes_write_one_file(tmp_path: Path) -> None:
    import asyncio

    per_process = 3_000
    # round 0: both processes also create and migrate the fresh file at the same moment;
    # later rounds: both open first, then write at the same moment
    for attempt, open_first in enumerate((False, True, True)):
        db, tags = tmp_path / f"shared-{attempt}.db", [f"w{attempt}a", f"w{attempt}b"]
        _run_writers(db, str(tmp_path / f"go-{attempt}"), tags, per_process, open_first)

        async def check(db: Path, per_process: int = per_process) -> None:
            async with await Store.open(db) as s:
                assert await s.count_events() == 2 * per_process
                daily = await s.fetch("SELECT SUM(requests), COUNT(DISTINCT day) FROM usage_daily")
                assert tuple(daily[0]) == (2 * per_process, 2)
                by_user = await s.fetch("SELECT SUM(requests) FROM usage_daily_user")
                assert by_user[0][0] == 2 * per_process
                assert len(await s.fetch("SELECT id FROM price_snapshots")) == 3
                await assert_rollup_matches_events(s)
                ids = await s.fetch("SELECT COUNT(DISTINCT request_id) FROM usage_events")
                assert ids[0][0] == 2 * per_process
                migrations = await s.fetch("SELECT COUNT(*) FROM schema_migrations")
                assert migrations[0][0] == len(MIGRATIONS)

        asyncio.run(check(db))


# ------------------------------------------------------------------ a replayed journal (issue 12 case 2)
@pytest.mark.anyio
async def test_replayed_events_are_skipped_by_id_and_then_sees_only_the_new(store: Any) -> None:
    first = [event(id=f"e{i}") for i in range(3)]
    await store.insert_events(first[:2])
    seen: list[str] = []

    async def then(conn: Any, fresh: list[UsageEvent]) -> None:
        seen.extend(e.id for e in fresh)
        await conn.execute("INSERT INTO alerts (ts, kind, message, details) VALUES (?, ?, ?, ?)",
                           ("t", "probe", "in the txn", "{}"))

    fresh = await store.insert_events(first, skip_known_ids=True, then=then)
    assert [e.id for e in fresh] == seen == ["e2"]
    assert await store.count_events() == 3
    assert len(await store.fetch("SELECT * FROM alerts WHERE kind = 'probe'")) == 1

    async def fails(conn: Any, fresh: list[UsageEvent]) -> None:
        raise RuntimeError("the settle failed")

    with pytest.raises(RuntimeError):  # `then` is part of the transaction: nothing of it is kept
        await store.insert_events([event(id="e3")], then=fails)
    assert await store.count_events() == 3


@pytest.mark.anyio
async def test_learned_routers_are_versioned_and_the_events_carry_them(store: Any) -> None:
    """Both backends: router versions count up per task type, read back whole; usage events keep the
    router version and score a mixed rule recorded."""
    from mcp_prism.store.routers import add_router_version, get_router, list_routers

    a = await add_router_version(store, "code_review", {"mode": "ok", "threshold": 0.4}, {"cheap": "x"},
                                 author="ana", reason="first")
    b = await add_router_version(store, "code_review", {"mode": "gap", "threshold": "inf"}, {"cheap": "y"},
                                 author="ana", reason="second")
    c = await add_router_version(store, "general", {"mode": "ok", "threshold": 0.1}, {}, author="bo", reason="r")
    assert (a.version, b.version, c.version) == (1, 2, 1)
    got = await get_router(store, "code_review", 2)
    assert got.body == {"mode": "gap", "threshold": "inf"} and got.summary == {"cheap": "y"}
    assert [r.version for r in await list_routers(store, "code_review")] == [1, 2]
    with pytest.raises(InvalidInput, match="no router v3 for task type code_review"):
        await get_router(store, "code_review", 3)
    e = event(router_version=2, router_score=0.625)
    await store.insert_events([e])
    row = (await store.fetch("SELECT router_version, router_score FROM usage_events WHERE id = ?", (e.id,)))[0]
    assert (row["router_version"], row["router_score"]) == (2, 0.625)
