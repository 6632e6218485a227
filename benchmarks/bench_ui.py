"""How fast the dashboard's pages answer over a large store (target, issue 15: <= 300 ms with 1M events).

    python benchmarks/bench_ui.py [--events 1000000] [--dir /tmp/prism-bench-ui] [--runs 7]

Fills a SQLite store with --events costed usage events over 30 days (8 teams, 50 users, 5 models; reused
when --dir already holds them), imports a 60-item experiment, starts `mcp-prism ui` on it and times each
page over real HTTP (p50 and max of --runs requests after one warm-up). Pages are built from the same
service calls as the CLI (`report`, `analyze`, `experiment report`, `rules`), so a slow page names a slow
service call: the store part of each is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.routing import DEFAULT_PROFILES
from mcp_prism.core.usage import UsageEvent, utcnow
from mcp_prism.service import PrismService

MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "gemini-2.5-flash", "gpt-5-mini", "claude-opus-4-5"]
CHUNK = 100_000


def events(svc: PrismService, start: int, n: int, rng: random.Random) -> list[UsageEvent]:
    now, tasks, out = utcnow(), list(DEFAULT_PROFILES), []
    for i in range(start, start + n):
        task, model = rng.choice(tasks), rng.choice(MODELS)
        p = DEFAULT_PROFILES[task]
        inp = max(1, int(p.input_tokens * rng.uniform(0.3, 2.0)))
        tokens = TokenUsage(inp, inp // 3, 0, max(1, int(p.output_tokens * rng.uniform(0.3, 2.0))))
        ts = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        cost = svc.catalog.cost(model, tokens, ts)
        out.append(UsageEvent(task_type=task, model=model, provider=svc.catalog.resolve(model).provider,
                              tokens=tokens, latency_ms=rng.uniform(200, 5000), cost_usd=cost.usd, prices=cost.prices,
                              ts=ts, team=f"team-{rng.randrange(8)}", user=f"user-{rng.randrange(50)}",
                              project="bench", source="import", request_id=f"bench-ui-{i}"))
    return out


async def fill(home: Path, n: int) -> None:
    svc = await PrismService.open(Settings.from_env({}, home=home))
    try:
        have = await svc.store.count_events()
        if have >= n:
            print(f"store already holds {have:,} events")
            return
        rng = random.Random(have)
        t0 = time.perf_counter()
        for start in range(have, n, CHUNK):
            batch = events(svc, start, min(CHUNK, n - start), rng)
            for i in range(0, len(batch), 1000):
                await svc.store.insert_events(batch[i:i + 1000])
            print(f"  {start + len(batch):,} events", flush=True)
        print(f"filled {n - have:,} events in {time.perf_counter() - t0:.0f} s")
    finally:
        await svc.close()


def cli(home: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "mcp_prism", *args, "--home", str(home)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PRISM_HOME": str(home)})
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    home = Path(args.dir or tempfile.mkdtemp(prefix="prism-bench-ui-"))
    home.mkdir(parents=True, exist_ok=True)
    asyncio.run(fill(home, args.events))

    data = home / "code_review_outcomes.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"review change {n}", "claude-sonnet-4-5": 1,
                                        "claude-haiku-4-5": int(n % 7 != 0),
                                        "claude-sonnet-4-5_response": f"answer {n}",
                                        "claude-haiku-4-5_response": f"short answer {n}"}) + "\n"
                            for n in range(60)))
    cli(home, "import-outcomes", str(data), "--task-type", "code_review")
    exp = json.loads(cli(home, "experiment", "list", "--json"))["experiments"][0]["id"]
    link = json.loads(cli(home, "ui", "rater-link", exp, "--rater", "bench", "--json"))["path"]

    with socket.socket() as sock:  # a free port on loopback
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mcp_prism", "ui", "--home", str(home), "--port", str(port)],
                            stdout=subprocess.DEVNULL, env={**os.environ, "PRISM_HOME": str(home)})
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for _ in range(300):
                try:
                    c.get("/static/style.css")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            pages = ["/costs", "/costs?by=model", "/costs?by=team&days=7", "/costs?by=user", "/matrix",
                     "/experiments", f"/experiments/{exp}", "/rules", link, link + "/next"]
            print(f"{args.events:,} events; {args.runs} requests per page after a warm-up (ms)")
            for path in pages:
                r = c.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    c.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                shown = path if not path.startswith("/rate/") else "/rate/<token>" + path[len(link):]
                print(f"  {shown:32s} p50 {statistics.median(times):7.1f}  max {max(times):7.1f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
