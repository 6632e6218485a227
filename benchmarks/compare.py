"""Same-run regression check: the working tree against a base commit, with the same benchmark scripts.

    python benchmarks/compare.py HEAD~1                       # route, store, gateway; ~10 min
    python benchmarks/compare.py efb952b --only route,store --store-events 300000
    python benchmarks/compare.py main --gateway-key           # gateway with a virtual key and a team budget too

The base commit is exported (`git archive`) to a temp folder and the working tree's `benchmarks/*.py` are
copied over its own, so both trees run the very same scripts, one after the other in one run, each with
its own code on `PYTHONPATH`. Machines here are shared and noisy: read the ratios, not the absolutes.
A figure a tree cannot produce (a script needing a feature the base lacks) shows as n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# figure -> (regex over the script's output, whether higher is better)
ROUTE = {"route_task p50 (us)": (r"PrismService\.route_task .*?p50=\s*([\d.]+) us", False),
         "route_task p99 (us)": (r"PrismService\.route_task .*?p99=\s*([\d.]+) us", False)}
STORE = {"insert_events (events/s)": (r"Store\.insert_events.*= ([\d,]+) events/s", True),
         "record_many (events/s)": (r"record_many .*: ([\d,]+) events/s", True),
         "cost_report by task_type p50 (ms)": (r"cost_report by task_type over .*?p50 ([\d.]+) ms", False),
         "cost_report by team, model p50 (ms)": (r"cost_report by team, model over .*?p50 ([\d.]+) ms", False),
         "cost_report by user p50 (ms)": (r"cost_report by user over .*?p50 ([\d.]+) ms", False)}


def export(ref: str, dest: Path) -> None:
    """`ref`'s tree into `dest`, with the working tree's benchmark scripts in place of its own."""
    archive = dest.with_suffix(".tar")
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as t:
        t.extractall(dest, filter="data")
    archive.unlink()
    (dest / "benchmarks").mkdir(exist_ok=True)
    for f in (ROOT / "benchmarks").glob("*.py"):
        shutil.copy2(f, dest / "benchmarks" / f.name)


def run(tree: Path, args: list[str], timeout: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    p = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True,
                       timeout=timeout, check=False)
    if p.returncode != 0:
        print(f"  ({tree.name}: {' '.join(args[:1])} exited {p.returncode}: "
              f"{(p.stderr or p.stdout).strip()[-300:]})", file=sys.stderr)
    return p.stdout + p.stderr


def parse(out: str, figures: dict[str, tuple[str, bool]]) -> dict[str, float | None]:
    got: dict[str, float | None] = {}
    for name, (rx, _) in figures.items():
        m = re.search(rx, out)
        got[name] = float(m.group(1).replace(",", "")) if m else None
    return got


def gateway(tree: Path, key: bool, scale: float) -> dict[str, float | None]:
    out = tree / "gw.json"
    args = ["benchmarks/bench_gateway.py", "--only", "direct,prism", "--concurrency", "1,32",
            "--requests-scale", str(scale), "--out", str(out)] + (["--prism-key"] if key else [])
    run(tree, args, 1200)
    label = "gateway+key" if key else "gateway"
    modes = ("nonstream", "stream", "responses", "responses-stream", "claude", "claude-stream")
    figures = {f"{label} {m} CPU/request max (ms)": f"prism.{m}.cpu_ms_per_req_max" for m in modes}
    figures |= {f"{label} {m} added p50 c=1 (ms)": f"prism.{m}.added_p50_ms" for m in modes}
    if not out.exists():
        return dict.fromkeys(figures)
    s = json.loads(out.read_text())["summary"]
    out.unlink()
    return {name: s.get(k) for name, k in figures.items()}


LOWER_IS_BETTER = {"CPU/request", "added p50", "p50 (", "p99 ("}


def _lower_better(name: str) -> bool:
    return any(s in name for s in LOWER_IS_BETTER)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.3f}" if v < 100 else f"{v:,.0f}"


def best(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Each figure's best over the repeats: noise from other work only ever makes a figure worse."""
    out: dict[str, float | None] = {}
    for k in runs[0]:
        vals = [v for r in runs if (v := r.get(k)) is not None]
        out[k] = (min(vals) if _lower_better(k) else max(vals)) if vals else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="the commit to compare against (e.g. HEAD~1, a hash, main)")
    ap.add_argument("--only", default="route,store,gateway", help="comma list of route, store, gateway")
    ap.add_argument("--store-events", type=int, default=200_000)
    ap.add_argument("--route-n", type=int, default=5_000)
    ap.add_argument("--gateway-scale", type=float, default=0.3, help="bench_gateway --requests-scale")
    ap.add_argument("--gateway-key", action="store_true", help="also run the gateway with a virtual key + budget")
    ap.add_argument("--repeat", type=int, default=2, help="runs per tree, alternating; each figure's best is kept")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if unknown := only - {"route", "store", "gateway"}:
        ap.error(f"unknown benchmark(s): {sorted(unknown)}; choose from route, store, gateway")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="prism-compare-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        export(args.base, base)
        head = ROOT
        jobs: list[tuple[str, Callable[[Path], dict[str, float | None]]]] = []
        if "route" in only:
            jobs.append(("route", lambda t: parse(run(t, ["benchmarks/bench_route.py", str(args.route_n)], 900),
                                                  ROUTE)))
        if "store" in only:
            jobs.append(("store", lambda t: parse(run(t, ["benchmarks/bench_store.py", "--events",
                                                          str(args.store_events)], 1800), STORE)))
        if "gateway" in only:
            jobs.append(("gateway", lambda t: gateway(t, False, args.gateway_scale)))
            if args.gateway_key:
                jobs.append(("gateway+key", lambda t: gateway(t, True, args.gateway_scale)))
        rows: list[tuple[str, float | None, float | None]] = []
        for name, job in jobs:
            b_runs, h_runs = [], []
            for i in range(max(1, args.repeat)):  # alternating, so a burst of other work hits both trees
                print(f"running {name} ({i + 1}/{args.repeat}) on {args.base}, then the working tree ...",
                      file=sys.stderr, flush=True)
                b_runs.append(job(base))
                h_runs.append(job(head))
            b, h = best(b_runs), best(h_runs)
            rows += [(k, b.get(k), h.get(k)) for k in b]
    head_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True,
                           check=False).stdout.strip()
    print(f"\n## {args.base} vs working tree ({head_rev}{' + uncommitted changes' if dirty else ''})\n")
    print("| figure | base | working tree | working/base | |\n|---|---|---|---|---|")
    for name, b, h in rows:
        ratio = h / b if b and h is not None else None
        lower = _lower_better(name)
        verdict = "" if ratio is None else ("better" if (ratio < 0.95 if lower else ratio > 1.05) else
                                            "worse" if (ratio > 1.05 if lower else ratio < 0.95) else "same")
        print(f"| {name} | {_fmt(b)} | {_fmt(h)} | {'n/a' if ratio is None else f'{ratio:.2f}'} | {verdict} |")
    print(f"\nRun took {time.monotonic() - began:.0f} s; load average before the end: {os.getloadavg()[0]:.2f} "
          "(other work on the machine makes latency noisy; CPU per request and events/s less so).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
