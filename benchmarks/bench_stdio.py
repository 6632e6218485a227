"""A real stdio round trip: spawn `python -m mcp_prism.mcp_server`, call route_task sequentially.

    python benchmarks/bench_stdio.py            # 1,000 calls per protocol mode
    python benchmarks/bench_stdio.py 5000

Each sample is one `Client.call_tool` (JSON-RPC over the child's stdin/stdout, including the SDK
client's validation of the structured result against the tool's output schema). The server
writes its log to stderr, which goes to a temp file here. Uses a fresh PRISM_HOME in a temp folder.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

DATA = ROOT / "tests" / "data" / "labelled_requests.jsonl"
WARMUP = 50


def descriptions(n: int) -> list[str]:
    texts = [json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(11)
    return [rng.choice(texts) for _ in range(n)]


async def run(mode: str, n: int, home: str, errlog) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_prism.mcp_server"],
                                   env={"PRISM_HOME": home, "PATH": os.environ.get("PATH", "")}, cwd=str(ROOT))
    texts = descriptions(n + WARMUP)
    started = time.perf_counter()
    async with Client(stdio_client(params, errlog=errlog), mode=mode) as c:
        ready = time.perf_counter() - started
        for text in texts[:WARMUP]:
            await c.call_tool("route_task", {"description": text})
        samples = []
        wall = time.perf_counter()
        for text in texts[WARMUP:]:
            t = time.perf_counter_ns()
            r = await c.call_tool("route_task", {"description": text})
            samples.append(time.perf_counter_ns() - t)
            assert not r.is_error, r.content
        wall = time.perf_counter() - wall
    q = statistics.quantiles(samples, n=100, method="inclusive")
    ms = 1e-6
    print(f"stdio {mode:<6} n={n:>5}  p50={q[49] * ms:6.3f} ms  p95={q[94] * ms:6.3f} ms  p99={q[98] * ms:6.3f} ms  "
          f"max={max(samples) * ms:6.2f} ms  {n / wall:,.0f} calls/s  (spawn+handshake {ready * 1000:.0f} ms)")


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as home, open(Path(home) / "server.log", "w") as errlog:
        for mode in ("legacy", "auto"):
            await run(mode, n, home, errlog)


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 1_000)
