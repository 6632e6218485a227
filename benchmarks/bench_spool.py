"""CPU per request of the gateway's journal (gateway/spool.py): encoding one outcome and appending it
with one write(2), as the request path does before the answer's last byte; and what an fsync costs
(done at most once a second, for all requests since the last one).

    python benchmarks/bench_spool.py [--n 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mcp_prism.core.pricing import TokenUsage
from mcp_prism.gateway.recorder import Outcome
from mcp_prism.gateway.spool import Spool, encode


def outcome(i: int) -> Outcome:
    return Outcome(id=f"{time.time_ns():016x}{i:016x}", ts=datetime.now(UTC), task_type="code_generation",
                   model="claude-haiku-4-5", provider="anthropic",
                   tokens=TokenUsage(input_tokens=1200 + i % 50, output_tokens=300), status="ok",
                   latency_ms=812.25, upstream_ms=810.5, route="passthrough", ttft_ms=230.5, user="ana",
                   team="search", project="web", api_key_id="k1a2b3c4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    outs = [outcome(i) for i in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp) / "spool")
        spool.open()
        c0 = time.process_time()
        for o in outs:
            encode(o)
        enc = (time.process_time() - c0) / args.n
        c0 = time.process_time()
        for o in outs:
            spool.append(o)
        both = (time.process_time() - c0) / args.n
        t0 = time.perf_counter()
        os.fsync(spool._fd)
        fsync = time.perf_counter() - t0
        size = spool.path.stat().st_size if spool.path else 0
        spool.close(keep=False)
    print(f"{args.n} outcomes: encode {enc * 1e6:.1f} us CPU each, encode + write(2) {both * 1e6:.1f} us CPU each "
          f"({size / args.n:.0f} bytes a record); one fsync of {size / 1e6:.1f} MB took {fsync * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
