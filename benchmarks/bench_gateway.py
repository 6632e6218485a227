"""Gateway overhead benchmark: the same load direct to a fake upstream, through mcp_prism's gateway, through LiteLLM.

    python benchmarks/bench_gateway.py                                  # full run (~4-5 min, LiteLLM is most of it)
    python benchmarks/bench_gateway.py --requests-scale 0.2             # quick run
    python benchmarks/bench_gateway.py --only direct,prism --out /tmp/gw.json

Layout (2 cores): every gateway is pinned to core 0 (`taskset -c 0`); the fake upstream
(`benchmarks/fake_upstream.py`) and the load generator run on core 1. For each target (direct, prism,
litellm) x mode x concurrency (1, 32, 128): a warm-up, then N requests. Modes: `nonstream`/`stream` (Chat
Completions, streaming with `stream_options.include_usage`), `responses`/`responses-stream` (OpenAI's
Responses API, as Codex CLI speaks it) and `claude`/`claude-stream` (a Claude-Code-shaped `/v1/messages`
request: ~10 KB of `<system-reminder>` blocks before the person's words in the last user turn and a
`role: "system"` message mid-conversation, shaped after `tests/data/claude_code_2.1.197_request.json`).
Measured: req/s, latency p50/p95/p99 (full response, so a streamed body is read to the end), time to
first byte, CPU ms per request of the gateway process tree (utime+stime from /proc/<pid>/stat, summed
over the process and its descendants, plus reaped children) and its resident memory. For `direct`
the CPU and RSS columns are the fake upstream's.

Load generator: at concurrency 1 a built-in asyncio/httptools client (nanosecond timer; hey rounds to
0.1 ms), above that `hey` (Debian package) when installed, else the built-in client. `--loadgen` forces one.

LiteLLM runs from a separate venv (`--litellm-python`, default /tmp/litellm-venv/bin/python), offline
(`LITELLM_LOCAL_MODEL_COST_MAP=True`, telemetry off), one worker, no database, with a master key
(it refuses to start without one); it is skipped with a note when that interpreter is missing. The
prism target is skipped with a note while `python -m mcp_prism gateway` does not exist.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import httptools

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LITELLM_KEY = "sk-bench-" + "0123456789abcdef" * 2  # LiteLLM >= 1.108 refuses to start without a master key
MODES = ("nonstream", "stream", "responses", "responses-stream", "claude", "claude-stream")
CLAUDE_MODEL = "claude-opus-4-8"  # Claude Code 2.1.197's default model, as captured
PROMPT = "Classify this support ticket: the printer on floor 3 is jammed again."
# Requests per cell at scale 1.0: (c=1, c>1). LiteLLM does ~40-100 req/s, so it gets fewer.
COUNTS = {"direct": (2000, 5000), "prism": (2000, 5000), "litellm": (300, 1000)}
TARGETS = {  # thresholds the prism gateway is held to
    "added_p50_ms": 1.0, "cpu_ms_nonstream": 1.0, "cpu_ms_stream": 2.0, "throughput_ratio": 50.0,
    "cpu_ms_nonstream_key": 0.5,  # issue 16: with a virtual key and a team budget (--prism-key)
}


def is_stream(mode: str) -> bool:
    return mode.endswith("stream") and mode != "nonstream"


def path_of(mode: str) -> str:
    return "/v1/responses" if mode.startswith("responses") else "/v1/messages" if mode.startswith("claude") \
        else "/v1/chat/completions"


def _reminders(size: int = 10_000) -> str:
    """Claude Code's `<system-reminder>` blocks (context, CLAUDE.md, skills, todo nags) to about `size` chars."""
    parts = ["<system-reminder>\nAs you answer the user's questions, you can use the following context:\n"
             "# currentDate\nToday's date is 2026-12-03.\n\n      IMPORTANT: this context may or may not be "
             "relevant to your tasks. You should not respond to this context unless it is highly relevant to "
             "your task.\n</system-reminder>\n"]
    i = 0
    while sum(map(len, parts)) < size:
        i += 1
        parts.append(f"<system-reminder>\n# claudeMd (part {i})\nCodebase and user instructions are shown below. "
                     "Be sure to adhere to these instructions. IMPORTANT: These instructions OVERRIDE any default "
                     "behavior and you MUST follow them exactly as written.\n- Run the tests you touch with "
                     "`.venv/bin/python -m pytest -q tests/test_x.py -x`; keep `ruff check .` clean.\n- Money "
                     "is Decimal everywhere; errors are PrismError subclasses. Launch independent agents so they "
                     "run concurrently.\n- The following skills are available: review, security-review, init, "
                     "simplify, loop, schedule.\n</system-reminder>\n")
    return "".join(parts)


REMINDERS = _reminders()


def claude_body(stream: bool) -> dict:
    """A Claude-Code-shaped request (see tests/data/claude_code_2.1.197_request.json)."""
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.04a; cc_entrypoint=sdk-cli;"},
              {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
               "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "You are an interactive agent that helps users with software engineering "
               "tasks. " * 40, "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": n, "description": f"The {n} tool.", "input_schema": {"type": "object", "properties": {}}}
             for n in ("Agent", "Bash", "Edit", "Glob", "Grep", "Read", "TodoWrite", "WebFetch", "Write")]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look at billing/invoice.py"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It parses invoices from CSV rows."}]},
        {"role": "system", "content": "Available agent types for the Agent tool:\n- claude: Catch-all for any "
         "task that doesn't fit a more specific agent. (Tools: *)\n- Explore: Read-only search agent."},
        {"role": "user", "content": [{"type": "text", "text": REMINDERS},
                                     {"type": "text", "text": "write unit tests for the invoice parser",
                                      "cache_control": {"type": "ephemeral"}}]},
    ]
    b: dict = {"model": CLAUDE_MODEL, "max_tokens": 64000, "thinking": {"type": "adaptive"},
               "output_config": {"effort": "high"}, "system": system, "tools": tools, "messages": messages,
               "metadata": {"user_id": "user_bench_account__session_0000"}}
    return b | ({"stream": True} if stream else {})


def body(model: str, mode: str) -> bytes:
    stream = is_stream(mode)
    if mode.startswith("claude"):
        return json.dumps(claude_body(stream)).encode()
    if mode.startswith("responses"):
        r: dict = {"model": model, "input": [{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
                   "max_output_tokens": 64, "store": False}
        return json.dumps(r | ({"stream": True} if stream else {})).encode()
    b: dict = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    if stream:
        b |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(b).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------------------- /proc accounting

def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # comm may hold spaces and parentheses; fields from `state` on


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (f := _stat(int(entry.name))):
            children.setdefault(int(f[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_s(root: int) -> float:
    """utime+stime of every live process in the tree, plus what its reaped children used (cutime+cstime)."""
    ticks = 0
    for pid in process_tree(root):
        if f := _stat(pid):
            ticks += sum(int(x) for x in f[11:15])
    return ticks / CLK_TCK


def tree_rss_mib(root: int) -> float:
    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError):  # the process may exit between listing and reading
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return total * PAGE / 2**20


# ---------------------------------------------------------------------------------------- load generators

@dataclass
class LoadResult:
    ok: int = 0
    errors: int = 0
    wall_s: float = 0.0
    lat_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    error_sample: str = ""


class _ClientConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection; the response body is parsed (dechunked) and dropped."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.first_ns = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.first_ns:
            self.first_ns = time.perf_counter_ns()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(exc)

    def on_message_complete(self) -> None:
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())


async def _builtin(port: int, path: str, payload: bytes, headers: dict[str, str], n: int, c: int,
                   timeout: float) -> LoadResult:
    loop = asyncio.get_running_loop()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
               f"content-length: {len(payload)}\r\n{head}\r\n").encode() + payload
    res = LoadResult()
    left = n

    async def worker() -> None:
        nonlocal left
        conn: _ClientConn | None = None
        while left > 0:
            left -= 1
            t0 = time.perf_counter_ns()
            try:
                if conn is None or conn.transport is None or conn.transport.is_closing():
                    _, conn = await loop.create_connection(_ClientConn, "127.0.0.1", port)
                conn.first_ns = 0
                conn.waiter = loop.create_future()
                conn.transport.write(request)
                status = await asyncio.wait_for(conn.waiter, timeout)
            except Exception as e:  # any failure is one errored request, counted and sampled
                res.errors += 1
                res.error_sample = res.error_sample or f"{type(e).__name__}: {e}"
                if conn and conn.transport:
                    conn.transport.close()
                conn = None
                continue
            t1 = time.perf_counter_ns()
            if status == 200:
                res.ok += 1
                res.lat_ms.append((t1 - t0) / 1e6)
                res.ttfb_ms.append((conn.first_ns - t0) / 1e6)
            else:
                res.errors += 1
                res.error_sample = res.error_sample or f"HTTP {status}"
        if conn and conn.transport:
            conn.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(c, n))))
    res.wall_s = time.perf_counter() - started
    return res


def run_builtin(port: int, path: str, payload: bytes, headers: dict[str, str], n: int, c: int,
                timeout: float = 60.0) -> LoadResult:
    try:
        import uvloop

        return uvloop.run(_builtin(port, path, payload, headers, n, c, timeout))
    except ImportError:
        return asyncio.run(_builtin(port, path, payload, headers, n, c, timeout))


def run_hey(port: int, path: str, payload_file: Path, headers: dict[str, str], n: int, c: int) -> LoadResult:
    cmd = ["hey", "-n", str(n), "-c", str(min(c, n)), "-m", "POST", "-T", "application/json",
           "-D", str(payload_file), "-o", "csv", "-t", "60"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    res = LoadResult(wall_s=time.perf_counter() - started)
    # hey -o csv prints one row per request that got a response; transport errors are not in it
    end = 0.0
    for row in csv.DictReader(io.StringIO(out.stdout)):
        try:
            rt, read, status, offset = (float(row["response-time"]), float(row["Response-read"]),
                                        row["status-code"], float(row["offset"]))
        except (KeyError, ValueError):
            continue
        if status == "200":
            res.ok += 1
            res.lat_ms.append(rt * 1e3)
            res.ttfb_ms.append((rt - read) * 1e3)
        else:
            res.errors += 1
            res.error_sample = res.error_sample or f"HTTP {status}"
        end = max(end, offset + rt)
    missing = n - res.ok - res.errors
    if missing > 0:
        res.errors += missing
        res.error_sample = res.error_sample or (out.stderr.strip() or "transport errors (hey)")[:200]
    if end > 0:
        res.wall_s = end  # hey's own clock: excludes its process start
    return res


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]  # nearest rank


# ---------------------------------------------------------------------------------------- targets

@dataclass
class Target:
    name: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None  # the process whose tree is measured
    model: str = "gpt-5-nano"
    log: Path | None = None


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    # own session so that stopping it takes its workers too, and so a tool runner cannot reap it early
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def tail(log: Path | None, lines: int = 15) -> str:
    if not log or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def check_response(t: Target, mode: str) -> str | None:
    """One request with a plain client: returns None when the answer looks like that API's answer, else why not."""
    conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=30)
    conn.request("POST", path_of(mode), body(t.model, mode), {"content-type": "application/json", **t.headers})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        return f"HTTP {r.status}: {data[:300]!r}"
    stream = is_stream(mode)
    if mode.startswith(("responses", "claude")):
        text = data.decode(errors="replace")
        need = (["response.output_text.delta", "response.completed", '"usage"'] if mode == "responses-stream" else
                ["content_block_delta", "message_delta", "message_stop"] if mode == "claude-stream" else
                ['"output_text"', '"usage"'] if mode == "responses" else ['"type":"message"', '"usage"'])
        missing = [n for n in need if n not in text.replace('": "', '":"')]
        return f"answer lacks {missing}: {text[:300]!r}" if missing else None
    if stream:
        text = data.decode(errors="replace")
        if "data: [DONE]" not in text or '"content"' not in text:
            return f"streamed body lacks content deltas or [DONE]: {text[:300]!r}"
        if '"usage"' not in text:
            return "streamed body lacks a usage chunk (stream_options.include_usage was set)"
    else:
        try:
            msg = json.loads(data)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return f"not a chat.completion: {data[:300]!r}"
        if not msg:
            return "empty message content"
    return None


# --prism-key: a virtual key with a team budget (huge hard limit, soft limit, rpm) so that every request pays
# the key lookup, the reserve transaction and the settle transaction.
KEY_SETUP = """
import asyncio, sys
from mcp_prism.config import Settings
from mcp_prism.service import PrismService
from mcp_prism.team.budgets import BudgetService
from mcp_prism.team.keys import KeyService
async def main():
    svc = await PrismService.open(Settings.from_env({}, home=sys.argv[1]))
    c = await KeyService(svc.store).create("bench", user="bench", project="bench")
    await BudgetService(svc.store).set_budget("team", "bench", "month", soft_limit_usd="1000000",
                                              hard_limit_usd="1000000", rpm=10**9)
    await svc.close()
    print(c.secret)
asyncio.run(main())
"""


def start_prism(python: str, upstream: int, model: str, workdir: Path, core: int,
                extra_env: dict[str, str], key: bool = False) -> tuple[Target | None, str]:
    probe = subprocess.run([python, "-m", "mcp_prism", "gateway", "--help"], capture_output=True, text=True,
                           cwd=ROOT, check=False)
    if probe.returncode != 0:
        return None, "prism skipped: `python -m mcp_prism gateway` is not available yet " \
                     f"({(probe.stderr or probe.stdout).strip().splitlines()[-1:] or ['no output']})"
    home = workdir / "prism-home"
    home.mkdir()
    env = {**os.environ, "PRISM_HOME": str(home), "OPENAI_API_KEY": "fake-key", **extra_env}
    lines = ["[providers.openai]", f'base_url = "http://127.0.0.1:{upstream}/v1"', ""]
    # the Claude-Code-shaped modes go to Anthropic's format, passed through untranslated
    lines += ["[providers.anthropic]", f'base_url = "http://127.0.0.1:{upstream}/v1"', ""]
    env.setdefault("ANTHROPIC_API_KEY", "fake-key")
    if model == "auto":
        # routing may pick any provider: point them all at the fake (which only speaks OpenAI format, so a
        # non-OpenAI-format pick shows up as errors in the table) and give each a key
        shipped = tomllib.loads((ROOT / "mcp_prism" / "data" / "catalog.toml").read_text(encoding="utf-8"))
        for name, p in shipped.get("providers", {}).items():
            if name in ("openai", "anthropic"):
                continue
            lines += [f"[providers.{name}]", f'base_url = "http://127.0.0.1:{upstream}/v1"', ""]
            if p.get("api_key_env"):
                env.setdefault(p["api_key_env"], "fake-key")
    (home / "config.toml").write_text("\n".join(lines), encoding="utf-8")
    headers = {}
    if key:
        made = subprocess.run([python, "-c", KEY_SETUP, str(home)], capture_output=True, text=True, cwd=ROOT,
                              env=env, check=False)
        if made.returncode != 0:
            return None, f"prism skipped: could not create a virtual key: {made.stderr.strip()[-300:]}"
        headers = {"authorization": f"Bearer {made.stdout.strip()}"}
    port = free_port()
    log = workdir / "prism.log"
    # without a key the gateway runs in its explicit local no-auth mode (keys are required otherwise)
    proc = start(["taskset", "-c", str(core), python, "-m", "mcp_prism", "gateway", "--host", "127.0.0.1",
                  "--port", str(port), *([] if key else ["--no-auth"])], env, log, cwd=ROOT)
    if not wait_http(port, "/healthz", proc, 60):
        stop(proc)
        return None, f"prism skipped: gateway did not answer GET /healthz on port {port}\n{tail(log)}"
    return Target("prism", port, headers=headers, proc=proc, model=model, log=log), ""


def start_litellm(python: str, upstream: int, workdir: Path, core: int) -> tuple[Target | None, str]:
    if not Path(python).exists():
        return None, f"litellm skipped: {python} not found (python3 -m venv /tmp/litellm-venv && " \
                     "/tmp/litellm-venv/bin/pip install 'litellm[proxy]')"
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        "model_list:\n  - model_name: gpt-5-nano\n    litellm_params:\n      model: openai/gpt-5-nano\n"
        f"      api_base: http://127.0.0.1:{upstream}/v1\n      api_key: fake\n"
        f"  - model_name: {CLAUDE_MODEL}\n    litellm_params:\n      model: anthropic/{CLAUDE_MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream}\n      api_key: fake\n", encoding="utf-8")
    port = free_port()
    if not port_free(port):  # LiteLLM silently moves to another port when its port is taken
        return None, f"litellm skipped: port {port} is taken"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY_DISABLED": "true",
           "LITELLM_MASTER_KEY": LITELLM_KEY}
    log = workdir / "litellm.log"
    cli = [str(Path(python).parent / "litellm")]  # the venv's console script; keeps the venv's interpreter
    proc = start(["taskset", "-c", str(core), *cli, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                  "--num_workers", "1"], env, log, cwd=workdir)
    if not wait_http(port, "/health/liveliness", proc, 120):
        stop(proc)
        return None, f"litellm skipped: no answer on /health/liveliness at port {port}\n{tail(log)}"
    if f"127.0.0.1:{port}" not in log.read_text(errors="replace"):
        stop(proc)
        return None, f"litellm skipped: its log does not say it listens on port {port}\n{tail(log)}"
    return Target("litellm", port, headers={"authorization": f"Bearer {LITELLM_KEY}"}, proc=proc, log=log), ""


# ---------------------------------------------------------------------------------------- the run

def run_cell(t: Target, mode: str, c: int, n: int, loadgen: str, workdir: Path) -> dict:
    payload = body(t.model, mode)
    path = path_of(mode)
    use_hey = loadgen == "hey" or (loadgen == "auto" and c > 1 and shutil.which("hey"))
    tool = "hey" if use_hey else "builtin"
    pfile = workdir / f"body-{t.name}-{mode}.json"
    pfile.write_bytes(payload)

    def load(k: int) -> LoadResult:
        if use_hey:
            return run_hey(t.port, path, pfile, t.headers, k, c)
        return run_builtin(t.port, path, payload, t.headers, k, c)

    load(max(min(c, n), n // 10))  # warm-up at this concurrency: connections, caches, lazily built paths
    cpu0 = tree_cpu_s(t.proc.pid) if t.proc else 0.0
    r = load(n)
    cpu1 = tree_cpu_s(t.proc.pid) if t.proc else 0.0
    done = r.ok + r.errors
    row = {
        "target": t.name, "mode": mode, "concurrency": c, "requests": n, "ok": r.ok, "errors": r.errors,
        "loadgen": tool, "rps": r.ok / r.wall_s if r.wall_s else 0.0,
        "p50_ms": pct(r.lat_ms, 50), "p95_ms": pct(r.lat_ms, 95), "p99_ms": pct(r.lat_ms, 99),
        "ttfb_p50_ms": pct(r.ttfb_ms, 50),
        "cpu_ms_per_req": (cpu1 - cpu0) * 1e3 / done if done and t.proc else None,
        "rss_mib": tree_rss_mib(t.proc.pid) if t.proc else None,
    }
    if r.errors:
        row["error_sample"] = r.error_sample
    return row


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(rows: list[dict]) -> str:
    out = ["| target | mode | conc | n | errors | req/s | p50 ms | p95 ms | p99 ms | TTFB p50 ms | CPU ms/req | "
           "RSS MiB | loadgen |", "|" + "---|" * 13]
    for r in rows:
        out.append(f"| {r['target']} | {r['mode']} | {r['concurrency']} | {r['requests']} | {r['errors']} | "
                   f"{fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 3)} | {fmt(r['p95_ms'], 3)} | {fmt(r['p99_ms'], 3)} | "
                   f"{fmt(r['ttfb_p50_ms'], 3)} | {fmt(r['cpu_ms_per_req'], 3)} | {fmt(r['rss_mib'], 0)} | "
                   f"{r['loadgen']} |")
    return "\n".join(out)


def summarise(rows: list[dict], key: bool = False) -> tuple[dict, list[str]]:
    by = {(r["target"], r["mode"], r["concurrency"]): r for r in rows}
    summary: dict = {}
    lines = []
    for gw in ("prism", "litellm"):
        for mode in MODES:
            g, d = by.get((gw, mode, 1)), by.get(("direct", mode, 1))
            if g and d and g["p50_ms"] is not None and d["p50_ms"] is not None:
                added = g["p50_ms"] - d["p50_ms"]
                summary[f"{gw}.{mode}.added_p50_ms"] = added
                lines.append(f"- {gw} {mode}: added latency p50 (c=1) = {added:.3f} ms")
            cpus = [r["cpu_ms_per_req"] for (t, m, _), r in by.items() if t == gw and m == mode
                    and r["cpu_ms_per_req"] is not None]
            if cpus:
                summary[f"{gw}.{mode}.cpu_ms_per_req_max"] = max(cpus)
                lines.append(f"- {gw} {mode}: CPU per request {min(cpus):.3f}-{max(cpus):.3f} ms")
    for mode in MODES:
        for c in sorted({r["concurrency"] for r in rows}):
            p, q = by.get(("prism", mode, c)), by.get(("litellm", mode, c))
            if p and q and q["rps"]:
                summary[f"throughput_ratio.{mode}.c{c}"] = p["rps"] / q["rps"]
                lines.append(f"- throughput prism/litellm {mode} c={c}: {p['rps'] / q['rps']:.1f}x")
    checks = []
    for mode in MODES:
        if (v := summary.get(f"prism.{mode}.added_p50_ms")) is not None:
            checks.append((f"added p50 {mode} <= {TARGETS['added_p50_ms']} ms", v <= TARGETS["added_p50_ms"]))
        if (v := summary.get(f"prism.{mode}.cpu_ms_per_req_max")) is not None:
            limit = TARGETS["cpu_ms_stream" if is_stream(mode) else "cpu_ms_nonstream"]
            checks.append((f"CPU/request {mode} <= {limit} ms", v <= limit))
            if key and not is_stream(mode):
                limit = TARGETS["cpu_ms_nonstream_key"]
                checks.append((f"CPU/request {mode} with a key and a budget <= {limit} ms", v <= limit))
    ratios = [v for k, v in summary.items() if k.startswith("throughput_ratio.") and not k.endswith(".c1")]
    if ratios:
        checks.append((f"throughput >= {TARGETS['throughput_ratio']}x LiteLLM at c>1 (min {min(ratios):.1f}x)",
                       min(ratios) >= TARGETS["throughput_ratio"]))
    summary["checks"] = {name: ok for name, ok in checks}
    lines += [f"- [{'PASS' if ok else 'FAIL'}] prism: {name}" for name, ok in checks]
    return summary, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="direct,prism,litellm", help="comma list of direct, prism, litellm")
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of " + ", ".join(MODES))
    ap.add_argument("--concurrency", default="1,32,128", help="comma list of concurrency levels")
    ap.add_argument("--requests-scale", type=float, default=1.0, help="multiply every request count (0.2 = quick)")
    ap.add_argument("--loadgen", choices=("auto", "hey", "builtin"), default="auto")
    ap.add_argument("--prism-python", default=sys.executable, help="interpreter with mcp_prism installed")
    ap.add_argument("--prism-model", default="gpt-5-nano",
                    help='model sent to prism ("auto" also exercises classification routing)')
    ap.add_argument("--prism-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the prism gateway (repeatable)")
    ap.add_argument("--prism-key", action="store_true",
                    help="send a virtual key with a team budget (measures keys + budget reserve/settle)")
    ap.add_argument("--litellm-python", default="/tmp/litellm-venv/bin/python")
    ap.add_argument("--gateway-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1, help="core for the fake upstream and the load generator")
    ap.add_argument("--out", type=Path, help="write JSON results here")
    args = ap.parse_args()

    only = [t.strip() for t in args.only.split(",") if t.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    if unknown := set(only) - set(COUNTS) or set(modes) - set(MODES):
        ap.error(f"unknown target or mode: {sorted(unknown)}")
    if args.loadgen == "hey" and not shutil.which("hey"):
        ap.error("hey not found: apt-get install -y hey")
    prism_env = dict(kv.split("=", 1) for kv in args.prism_env)
    os.sched_setaffinity(0, {args.client_core})  # load generator, hey and the fake upstream inherit this core
    notes: list[str] = []
    if not shutil.which("hey"):
        notes.append("hey not installed: the built-in asyncio load generator ran every cell")

    load_before = os.getloadavg()  # other work on this machine skews latency; the load average shows it
    began = time.monotonic()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        workdir = Path(tmp)
        up_port = free_port()
        upstream = start([sys.executable, str(HERE / "fake_upstream.py"), "--port", str(up_port)], dict(os.environ),
                         workdir / "upstream.log")
        try:
            if not wait_http(up_port, "/healthz", upstream, 15):
                print(f"fake upstream did not start\n{tail(workdir / 'upstream.log')}", file=sys.stderr)
                return 1
            for name in only:
                if name == "direct":
                    target, note = Target("direct", up_port, proc=upstream), ""
                elif name == "prism":
                    target, note = start_prism(args.prism_python, up_port, args.prism_model, workdir,
                                               args.gateway_core, prism_env, args.prism_key)
                else:
                    target, note = start_litellm(args.litellm_python, up_port, workdir, args.gateway_core)
                if target is None:
                    notes.append(note)
                    print(note, file=sys.stderr, flush=True)
                    continue
                try:
                    good = []
                    for mode in modes:
                        for _ in range(20):  # first requests pay lazy imports (LiteLLM: ~1 s)
                            if why := check_response(target, mode):
                                break
                        if why:  # that mode is skipped for this target; the others still run
                            notes.append(f"{name} {mode}: response check failed, mode skipped: {why}\n"
                                         f"log tail:\n{tail(target.log, 8)}")
                            print(notes[-1], file=sys.stderr, flush=True)
                        else:
                            good.append(mode)
                    for mode in good:
                        for c in levels:
                            n1, nc = COUNTS[name]
                            # a multiple of c: hey sends n // c requests per worker and drops the rest
                            n = max(1, round((n1 if c == 1 else nc) * args.requests_scale / c)) * c
                            row = run_cell(target, mode, c, n, args.loadgen, workdir)
                            rows.append(row)
                            if row["errors"] and target.log:  # the temp dir goes away: keep why it failed
                                notes.append(f"{name} {mode} c={c}: {row['errors']} errors ({row['error_sample']});"
                                             f" log tail:\n{tail(target.log, 8)}")
                            for label, p in (("fake upstream", upstream), (name, target.proc)):
                                if p is not None and p.poll() is not None:  # a dead server makes every later cell bogus
                                    raise RuntimeError(f"{label} exited with code {p.returncode} during {name} {mode} "
                                                       f"c={c} (negative = killed by that signal)")
                            print(f"{name:8} {mode:9} c={c:<4} n={n:<5} {row['rps']:9,.0f} req/s  "
                                  f"p50 {fmt(row['p50_ms'], 3)} ms  p99 {fmt(row['p99_ms'], 3)} ms  "
                                  f"CPU {fmt(row['cpu_ms_per_req'], 3)} ms/req  errors {row['errors']}",
                                  file=sys.stderr, flush=True)
                except RuntimeError as e:
                    notes.append(f"run stopped: {e}")
                    print(notes[-1], file=sys.stderr, flush=True)
                    break
                finally:
                    if target.proc is not upstream:
                        stop(target.proc)
        finally:
            stop(upstream)

    summary, lines = summarise(rows, args.prism_key)
    print(f"\n## Gateway benchmark ({os.cpu_count()} cores; gateways on core {args.gateway_core}, "
          f"upstream + load on core {args.client_core})\n")
    print(table(rows))
    print("\n" + "\n".join(lines))
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in notes))
    load_after = os.getloadavg()
    print("\nCPU ms/req: gateway process tree (utime+stime, 10 ms ticks); for `direct`, the fake upstream's.")
    busy = " - other work competed for the cores: expect noisy latency" if load_before[0] > 0.5 else ""
    print(f"Run took {time.monotonic() - began:.0f} s. Load average (1 min) before it: {load_before[0]:.2f}{busy}.")
    if args.out:
        litellm_version = None
        if Path(args.litellm_python).exists():
            code = "import importlib.metadata as m; print(m.version('litellm'))"
            v = subprocess.run([args.litellm_python, "-c", code], capture_output=True, text=True, check=False)
            litellm_version = v.stdout.strip() or None
        meta = {"cores": os.cpu_count(), "gateway_core": args.gateway_core, "client_core": args.client_core,
                "requests_scale": args.requests_scale, "prism_model": args.prism_model, "loadgen": args.loadgen,
                "litellm_version": litellm_version, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "loadavg_before": load_before, "loadavg_after": load_after, "elapsed_s": time.monotonic() - began,
                "targets": TARGETS}
        args.out.write_text(json.dumps({"meta": meta, "results": rows, "summary": summary, "notes": notes},
                                       indent=2), encoding="utf-8")
        print(f"\nJSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
