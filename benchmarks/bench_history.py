"""`import-history` against ccusage on the same generated Claude Code logs, in one run.

    python benchmarks/bench_history.py                      # 1 GB of logs in a temp folder, then both tools
    python benchmarks/bench_history.py --gb 0.05 --keep /tmp/cc-logs
    python benchmarks/bench_history.py --logs /tmp/cc-logs  # reuse logs generated before

1. Generates realistic Claude Code 2.1 logs (field for field as tests/test_history_e2e.py saw the real CLI write
   them): 8 projects, 30 days, sessions of turns whose assistant messages are logged once per content block
   (thinking, tool_use, text: the same message id, request id and usage), tool results of a few KB, agent
   attachments, subagent (sidechain) logs, `<synthetic>` API-error entries; models ccusage 18 prices offline;
   a third of the cache writes with a one-hour lifetime. Data goes to a temp folder, never the repository.
2. Runs `mcp-prism import-history claude-code --path LOGS` into a fresh home, then again (nothing new: the
   re-import), and `ccusage daily --json --offline` (CLAUDE_CONFIG_DIR=LOGS, TZ=UTC), timing each.
3. Compares token totals per day and model (must be equal) and costs: ccusage 18 prices every cache write at
   the 5-minute rate, so ours minus the one-hour writes' extra (their tokens x (1h rate - 5m rate)) must equal
   its cost to within its float rounding.

Prints figures and a JSON summary (--out FILE to keep it). Needs ccusage at .ci/cache/ccusage (.ci/run installs
it). CPU heavy: a few minutes for 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_prism.config import shipped_catalog_data  # noqa: E402
from mcp_prism.core.catalog import build_catalog  # noqa: E402
from mcp_prism.core.open_prices import OpenPrices  # noqa: E402

CCUSAGE = ROOT / ".ci/cache/ccusage/node_modules/.bin/ccusage"
MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001")
MODEL_WEIGHTS = (6, 2, 2)
PROJECTS = ("billing-api", "web-frontend", "invoice-parser", "infra", "data-pipeline", "mobile-app", "auth-service",
            "docs-site")
PROMPTS = ("write unit tests for the invoice parser", "review this diff for race conditions",
           "why does the nightly export crash with KeyError 'currency'",
           "document the public API of the billing module",
           "add a --dry-run flag to the deploy script", "refactor the retry helper to use exponential backoff",
           "design the caching layer for the pricing service, what goes where?", "fix the flaky login test",
           "summarise what changed in this PR for the release notes", "is this SQL injection safe?")
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
REMINDER = "<system-reminder>\n" + "As you answer the user's questions, you can use the following context. " * 40 + \
    "\n</system-reminder>"
CODE = "".join(f"    def method_{i}(self, value: int) -> int:\n        return value * {i} + self.offset\n"
               for i in range(200))


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _dump(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))


class Generator:
    """Writes sessions until the folder holds `target` bytes."""

    def __init__(self, out: Path, target: int, seed: int = 7) -> None:
        self.out, self.target, self.rng = out, target, random.Random(seed)
        self.written = 0
        self.n = 0

    def run(self) -> int:
        session = 0
        while self.written < self.target:
            session += 1
            project = self.rng.choice(PROJECTS)
            day = START + timedelta(days=self.rng.randrange(DAYS), hours=self.rng.randrange(8, 20),
                                    minutes=self.rng.randrange(60))
            sid = f"{session:08x}-0000-4000-8000-{self.rng.getrandbits(48):012x}"
            folder = self.out / "projects" / f"-home-dev-{project}"
            folder.mkdir(parents=True, exist_ok=True)
            lines, ts = self.session(sid, project, day, sidechain=False)
            self.write(folder / f"{sid}.jsonl", lines)
            if session % 7 == 0:  # a subagent's log beside it
                agent_lines, _ = self.session(sid, project, ts, sidechain=True)
                self.write(folder / sid / "subagents" / f"agent-{self.rng.getrandbits(64):016x}.jsonl", agent_lines)
        return self.written

    def write(self, path: Path, lines: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "\n".join(lines) + "\n"
        path.write_text(data)
        self.written += len(data)

    def session(self, sid: str, project: str, ts: datetime, *, sidechain: bool) -> tuple[list[str], datetime]:
        rng, cwd = self.rng, f"/home/dev/{project}"
        common = {"isSidechain": sidechain, "userType": "external", "entrypoint": "cli", "cwd": cwd, "sessionId": sid,
                  "version": "2.1.197", "gitBranch": "main"}
        model = rng.choices(MODELS, MODEL_WEIGHTS)[0]
        out = []
        for _turn in range(rng.randint(3, 12)):
            ts += timedelta(seconds=rng.randint(20, 600))
            where = f" in src/{project}/module_{rng.randrange(50)}.py"
            prompt = rng.choice(PROMPTS) + ("" if rng.random() < 0.7 else where)
            out.append(_dump({"parentUuid": None, "promptId": f"p{self.n}", "type": "user", "message": {
                "role": "user", "content": prompt}, "uuid": f"u{self.n}", "timestamp": _iso(ts), **common}))
            out.append(_dump({"parentUuid": f"u{self.n}", "attachment": {"type": "skill_listing", "content": REMINDER},
                              "type": "attachment", "uuid": f"t{self.n}", "timestamp": _iso(ts), **common}))
            for step in range(rng.randint(1, 6)):
                self.n += 1
                ts += timedelta(seconds=rng.randint(2, 40))
                last = step == 5 or rng.random() < 0.25
                writes = rng.choice((0, 0, rng.randint(500, 20_000)))
                hour = writes if writes and rng.random() < 0.33 else 0
                usage = {"input_tokens": rng.randint(1, 60), "cache_creation_input_tokens": writes,
                         "cache_read_input_tokens": rng.randint(8_000, 160_000),
                         "output_tokens": rng.randint(20, 3_000),
                         "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                         "service_tier": "standard",
                         "cache_creation": {"ephemeral_1h_input_tokens": hour,
                                            "ephemeral_5m_input_tokens": writes - hour},
                         "inference_geo": "", "iterations": [], "speed": "standard"}
                head = {"id": f"msg_{self.n:012d}", "type": "message", "role": "assistant", "model": model,
                        "stop_reason": "end_turn" if last else "tool_use", "stop_sequence": None, "usage": usage}
                blocks = [{"type": "thinking", "thinking": "Let me look at the code first. " * rng.randint(2, 20),
                           "signature": "sig" * 40}]
                if last:
                    blocks.append({"type": "text", "text": "Here is what I found. " * rng.randint(5, 60)})
                else:
                    blocks.append({"type": "tool_use", "id": f"toolu_{self.n}", "name": "Edit", "input": {
                        "file_path": f"{cwd}/src/m{self.n % 40}.py", "old_string": CODE[:rng.randint(200, 2_000)],
                        "new_string": CODE[:rng.randint(200, 2_000)]}})
                for i, block in enumerate(blocks):  # each content block logged with the message's usage
                    out.append(_dump({"parentUuid": f"u{self.n}", "message": {**head, "content": [block]},
                                      "requestId": f"req_{self.n:012d}", "type": "assistant",
                                      "uuid": f"a{self.n}-{i}", "timestamp": _iso(ts), **common}))
                if not last:
                    result = CODE[:rng.randint(2_000, 14_000)]
                    content = [{"tool_use_id": f"toolu_{self.n}", "type": "tool_result", "content": result}]
                    out.append(_dump({"parentUuid": f"a{self.n}-1", "type": "user", "message": {
                        "role": "user", "content": content},
                        "toolUseResult": {"stdout": result[:500]}, "uuid": f"r{self.n}", "timestamp": _iso(ts),
                        **common}))
                if last:
                    break
            if rng.random() < 0.03:  # a local API error: Claude Code logs a synthetic message with zero usage
                out.append(_dump({"parentUuid": None, "type": "assistant", "isApiErrorMessage": True, "message": {
                    "id": f"syn{self.n}", "model": "<synthetic>", "role": "assistant", "type": "message",
                    "content": [{"type": "text", "text": "API Error: 529 overloaded"}],
                    "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 0}}, "uuid": f"e{self.n}", "timestamp": _iso(ts), **common}))
        return out, ts


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds, CPU seconds (user + system: steadier on a shared machine) and the result."""
    cpu0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    elapsed, cpu1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({r.returncode}): {r.stderr[-3000:]}")
    return elapsed, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="size of the generated logs (default 1)")
    ap.add_argument("--logs", type=Path, help="use this folder of logs instead of generating")
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    ap.add_argument("--out", type=Path, help="write the JSON summary here")
    a = ap.parse_args()
    if not CCUSAGE.exists():
        raise SystemExit(f"ccusage is not installed at {CCUSAGE}: "
                         "npm install --prefix .ci/cache/ccusage ccusage@18.0.11")
    scratch = Path(tempfile.mkdtemp(prefix="bench-history-"))
    logs = a.logs or a.keep or scratch / "claude"
    try:
        if a.logs is None:
            t = time.perf_counter()
            size = Generator(logs, int(a.gb * 1e9)).run()
            print(f"generated {size / 1e9:.3f} GB of Claude Code logs in {time.perf_counter() - t:.1f} s: {logs}")
        size = sum(f.stat().st_size for f in logs.rglob("*.jsonl"))
        gb = size / 1e9
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PRISM_", "CLAUDE_"))}
        env["TZ"] = "UTC"
        home = scratch / "prism"
        prism = [sys.executable, "-m", "mcp_prism", "import-history", "claude-code", "--path", str(logs), "--json",
                 "--home", str(home), "--machine", "bench", "--user", "bench"]
        t_import, cpu_import, r = _timed(prism, env)
        first = json.loads(r.stdout)["agents"][0]
        t_reimport, cpu_reimport, r = _timed(prism, env)
        second_run = json.loads(r.stdout)
        second = second_run["agents"][0]
        t_ccusage, cpu_ccusage, r = _timed([str(CCUSAGE), "daily", "--json", "--offline"],
                                           {**env, "CLAUDE_CONFIG_DIR": str(logs)})
        theirs_raw = json.loads(r.stdout)

        names = OpenPrices(build_catalog(shipped_catalog_data()))
        theirs: dict[tuple[str, str], dict] = {}
        for d in theirs_raw["daily"]:
            for b in d["modelBreakdowns"]:
                theirs[(d["date"], names.name(b["modelName"], "anthropic").model)] = b
        ours: dict[tuple[str, str], dict] = {}
        hour_extra: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        with sqlite3.connect(home / "prism.db") as db:
            db.row_factory = sqlite3.Row
            for row in db.execute(
                    "SELECT substr(ts, 1, 10) AS day, model, SUM(input_tokens) AS i, SUM(cached_input_tokens) AS r, "
                    "SUM(cache_write_tokens) AS w, SUM(cache_write_1h_tokens) AS h, SUM(output_tokens) AS o, "
                    "SUM(cost_pico) AS c FROM usage_events GROUP BY day, model"):
                ours[(row["day"], row["model"])] = dict(row)
                prices = names.catalog.prices_at(row["model"])
                assert prices is not None and prices.cache_write is not None and prices.cache_write_1h is not None
                extra = (prices.cache_write_1h.base - prices.cache_write.base) * row["h"] / Decimal(1_000_000)
                hour_extra[(row["day"], row["model"])] = extra
        token_mismatch = []
        worst_cost = Decimal(0)
        our_cost = their_cost = explained = Decimal(0)
        for key in sorted(set(ours) | set(theirs)):
            o, t = ours.get(key), theirs.get(key)
            if o is None or t is None:
                token_mismatch.append((key, o, t))
                continue
            mine = (o["i"] - o["r"] - o["w"], o["r"], o["w"], o["o"])
            its = (t["inputTokens"], t["cacheReadTokens"], t["cacheCreationTokens"], t["outputTokens"])
            if mine != its:
                token_mismatch.append((key, mine, its))
            c_ours, c_theirs = Decimal(o["c"]) / Decimal(10**12), Decimal(str(t["cost"]))
            our_cost, their_cost, explained = our_cost + c_ours, their_cost + c_theirs, explained + hour_extra[key]
            worst_cost = max(worst_cost, abs(c_ours - hour_extra[key] - c_theirs))
        summary = {
            "logs_gb": round(gb, 3), "files": first["files"], "requests": first["requests"],
            "sidechain_requests": first["sidechain"], "unpriced": first["unpriced"],
            "import_s": round(t_import, 2), "import_cpu_s": round(cpu_import, 2),
            "ccusage_s": round(t_ccusage, 2), "ccusage_cpu_s": round(cpu_ccusage, 2),
            "ccusage_over_import_wall": round(t_ccusage / t_import, 2),
            "ccusage_over_import_cpu": round(cpu_ccusage / cpu_import, 2),
            "reimport_s": round(t_reimport, 3), "reimport_cpu_s": round(cpu_reimport, 3),
            "reimport_in_process_s": second_run["seconds"],
            "reimport_s_per_gb": round(t_reimport / gb, 3), "reimport_in_process_s_per_gb":
                round(second_run["seconds"] / gb, 3), "reimport_stored": second["stored"],
            "day_model_groups": len(ours), "token_mismatches": len(token_mismatch),
            "our_cost_usd": str(our_cost.quantize(Decimal("0.000001"))),
            "ccusage_cost_usd": str(their_cost.quantize(Decimal("0.000001"))),
            "one_hour_write_extra_usd": str(explained.quantize(Decimal("0.000001"))),
            "unexplained_cost_usd_worst_group": str(worst_cost.quantize(Decimal("0.000001"))),
        }
        print(json.dumps(summary, indent=2))
        for m in token_mismatch[:10]:
            print("token mismatch:", m)
        if a.out:
            a.out.write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
