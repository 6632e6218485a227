"""Ingestion rate into SQLite and cost_report time over a large store.

    python benchmarks/bench_store.py [--events 1000000] [--batch 1000] [--dir /tmp/prism-bench] [--random-request-ids]

Prints: events/s for Store.insert_events (events already costed), events/s for
PrismService.record_many (validation + cost engine + insert), then cost_report timings
(p50 / max of several runs) over the whole store, by task type and by team+model.
Targets (issue 2): >= 20,000 events/s sustained; cost_report over 1,000,000 events <= 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.routing import DEFAULT_PROFILES
from mcp_prism.core.usage import UsageEvent, iso, utcnow
from mcp_prism.service import PrismService, UsageInput

MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "gemini-2.5-flash", "gpt-5-mini", "claude-opus-4-5"]
TEAMS = [f"team-{i}" for i in range(8)]
USERS = [f"user-{i}" for i in range(50)]


def make_events(svc: PrismService, n: int, rng: random.Random, days: int = 30,
                random_ids: bool = False) -> list[UsageEvent]:
    now = utcnow()
    tasks = list(DEFAULT_PROFILES)
    out = []
    # a live stream arrives in time order, and its events are made (ids are time-ordered) as they arrive
    stamps = sorted(now - timedelta(seconds=rng.uniform(0, days * 86400)) for _ in range(n))
    for i, ts in enumerate(stamps):
        task = rng.choice(tasks)
        model = rng.choice(MODELS)
        p = DEFAULT_PROFILES[task]
        inp = max(1, int(p.input_tokens * rng.uniform(0.3, 2.0)))
        tokens = TokenUsage(inp, inp // 3, 0, max(1, int(p.output_tokens * rng.uniform(0.3, 2.0))))
        cost = svc.catalog.cost(model, tokens, ts)
        out.append(UsageEvent(task_type=task, model=model, provider=svc.catalog.resolve(model).provider,
                              tokens=tokens, latency_ms=rng.uniform(200, 5000), cost_usd=cost.usd,
                              prices=cost.prices, ts=ts, team=rng.choice(TEAMS), user=rng.choice(USERS),
                              project="bench", source="import",
                              request_id=uuid.UUID(int=rng.getrandbits(128)).hex if random_ids else f"bench-{i}"))
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--random-request-ids", action="store_true",
                    help="request ids as clients send them (random UUIDs) rather than bench-0, bench-1, ...")
    args = ap.parse_args()
    home = Path(args.dir or tempfile.mkdtemp(prefix="prism-bench-"))
    shutil.rmtree(home, ignore_errors=True)
    svc = await PrismService.open(Settings.from_env({}, home=home))
    rng = random.Random(1)
    try:
        # 1. Store.insert_events with costed events (the gateway's batched writer path).
        print(f"building {args.events:,} costed events ...", flush=True)
        t0 = time.perf_counter()
        events = make_events(svc, args.events, rng, random_ids=args.random_request_ids)
        build = time.perf_counter() - t0
        print(f"  cost engine + event build: {args.events / build:,.0f} events/s")
        t0 = time.perf_counter()
        for i in range(0, len(events), args.batch):
            await svc.store.insert_events(events[i:i + args.batch])
        took = time.perf_counter() - t0
        print(f"Store.insert_events, batches of {args.batch}: {args.events:,} events in {took:.1f} s "
              f"= {args.events / took:,.0f} events/s sustained")
        del events

        # 2. Service path: validation + pricing + insert.
        n2 = min(100_000, args.events)
        inputs = [UsageInput(model=rng.choice(MODELS), task_type="code_review", input_tokens=5000,
                             cached_input_tokens=1000, output_tokens=800, latency_ms=900.0, team="svc",
                             request_id=f"svc-{i}") for i in range(n2)]
        t0 = time.perf_counter()
        for i in range(0, n2, args.batch):
            await svc.record_many(inputs[i:i + args.batch])
        took = time.perf_counter() - t0
        print(f"PrismService.record_many (validate + cost + insert): {n2 / took:,.0f} events/s")

        total = await svc.store.count_events()
        rollup_rows = (await svc.store.fetch("SELECT COUNT(*) FROM usage_daily"))[0][0]
        print(f"store: {total:,} events, {rollup_rows:,} rollup rows, "
              f"{home.joinpath('prism.db').stat().st_size / 1e6:,.0f} MB")

        # 3. cost_report over the whole store.
        for label, group in (("by task_type", ["task_type"]), ("by team, model", ["team", "model"]),
                             ("by user", ["user"])):
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                report = await svc.cost_report(days=31, group_by=group)
                times.append((time.perf_counter() - t0) * 1000)
            print(f"cost_report {label} over {report.total_requests:,} events: "
                  f"p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms")
        print(f"(first event day {iso(utcnow() - timedelta(days=30))[:10]})")
    finally:
        await svc.close()
        if not args.dir:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
