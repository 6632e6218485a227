"""Ingestion rate of Store.insert_events on PostgreSQL vs SQLite, in the same run, on the same events.

    python benchmarks/bench_store_pg.py [--events 100000] [--batch 500] [--url postgresql://postgres@127.0.0.1/test]
                                        [--replicas 2]

Prints events/s for: SQLite (one file), PostgreSQL through one PgStore, and PostgreSQL through
`--replicas` PgStores (separate pools, as gateway replicas) writing at once. Each PostgreSQL run uses a
fresh schema that is dropped afterwards; the SQLite file lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg

from mcp_prism.config import shipped_catalog_data
from mcp_prism.core.catalog import Catalog, build_catalog
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import UsageEvent, utcnow
from mcp_prism.store.postgres import PgStore
from mcp_prism.store.sqlite import Store

MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "gemini-2.5-flash", "gpt-5-mini", "claude-opus-4-5"]
TASKS = ["code_review", "docs", "ticket_classification", "code_generation", "summarization"]


def make_events(catalog: Catalog, n: int, tag: str, seed: int = 1) -> list[UsageEvent]:
    rng = random.Random(seed)
    now = utcnow()
    out = []
    # a live stream arrives in time order, and its events are made (ids are time-ordered) as they arrive
    stamps = sorted(now - timedelta(seconds=rng.uniform(0, 30 * 86400)) for _ in range(n))
    for i, ts in enumerate(stamps):
        model = rng.choice(MODELS)
        inp = rng.randint(200, 20_000)
        tokens = TokenUsage(inp, inp // 3, 0, rng.randint(50, 2_000))
        cost = catalog.cost(model, tokens, ts)
        out.append(UsageEvent(task_type=rng.choice(TASKS), model=model, provider=catalog.resolve(model).provider,
                              tokens=tokens, latency_ms=rng.uniform(200, 5000), cost_usd=cost.usd,
                              prices=cost.prices, ts=ts, team=f"team-{rng.randrange(8)}",
                              user=f"user-{rng.randrange(50)}", project="bench", source="import",
                              request_id=f"{tag}-{i}"))
    return out


async def ingest(store: Store | PgStore, events: list[UsageEvent], batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(events), batch):
        await store.insert_events(events[i:i + batch])
    return time.perf_counter() - t0


async def report_reads(label: str, store: Store | PgStore) -> None:
    """The reads cost_report makes (its grouping, then task_type x model), p50 of 7, per grouping the bench
    of SQLite times too."""
    today = utcnow().date()
    since, until = (today - timedelta(days=31)).isoformat(), (today + timedelta(days=1)).isoformat()
    for name, group in (("by task_type", ["task_type"]), ("by team, model", ["team", "model"]), ("by user", ["user"])):
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            await store.rollup(since, until, group)
            await store.rollup(since, until, ["task_type", "model"])
            times.append((time.perf_counter() - t0) * 1000)
        print(f"{label:34} cost_report reads {name}: p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms")


def report(label: str, n: int, took: float, batch: int) -> None:
    print(f"{label:34} insert_events, batches of {batch}: {n:,} events in {took:5.1f} s = {n / took:8,.0f} events/s")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1/test")
    ap.add_argument("--replicas", type=int, default=2)
    args = ap.parse_args()
    catalog = build_catalog(shipped_catalog_data())
    n, batch = args.events, args.batch
    print(f"building {n:,} costed events ...", flush=True)
    events = make_events(catalog, n, "e")

    with tempfile.TemporaryDirectory(prefix="prism-bench-") as tmp:
        async with await Store.open(Path(tmp) / "prism.db") as s:
            took = await ingest(s, events, batch)
            assert await s.count_events() == n
            report("SQLite", n, took, batch)
            await report_reads("SQLite", s)

    schemas: list[str] = []
    try:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        schemas.append(schema)
        async with await PgStore.open(args.url, schema=schema) as pg:
            took = await ingest(pg, events, batch)
            assert await pg.count_events() == n
            report("PostgreSQL", n, took, batch)
            await report_reads("PostgreSQL", pg)

        k = args.replicas
        if k > 1:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            schemas.append(schema)
            stores = [await PgStore.open(args.url, schema=schema) for _ in range(k)]
            parts = [make_events(catalog, n // k, f"r{j}", seed=j + 2) for j in range(k)]
            try:
                t0 = time.perf_counter()
                await asyncio.gather(*(ingest(s, p, batch) for s, p in zip(stores, parts, strict=True)))
                took = time.perf_counter() - t0
                total = sum(len(p) for p in parts)
                assert await stores[0].count_events() == total
            finally:
                for s in stores:
                    await s.close()
            report(f"PostgreSQL, {k} replicas at once", total, took, batch)
    finally:
        conn = await asyncpg.connect(args.url)
        try:
            for schema in schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
